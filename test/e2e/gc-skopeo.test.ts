/**
 * Garbage collection with a real client: skopeo pushes images A and B that share two layers, A is
 * deleted, `berth gc` collects, and exactly A's own blobs are gone from disk while skopeo still pulls
 * B byte for byte (every blob compared with the original). Then A can be pushed again.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, expect, test } from "vitest";
import { type Berth, CLI, startBerth } from "../helpers/server.js";

const run = promisify(execFile);

interface Blob {
  digest: string;
  data: Buffer;
  mediaType: string;
}

interface Layout {
  dir: string;
  manifest: Blob;
  config: Blob;
  layers: Blob[];
}

function sha256(data: Buffer): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** A one-file ustar archive. */
function tar(name: string, content: Buffer): Buffer {
  const header = Buffer.alloc(512);
  const field = (offset: number, length: number, value: string) =>
    header.write(value, offset, length, "ascii");
  field(0, 100, name);
  field(100, 8, "0000644\0");
  field(108, 8, "0000000\0");
  field(116, 8, "0000000\0");
  field(124, 12, `${content.length.toString(8).padStart(11, "0")}\0`);
  field(136, 12, "14000000000\0");
  field(148, 8, "        ");
  field(156, 1, "0");
  field(257, 6, "ustar\0");
  field(263, 2, "00");
  let sum = 0;
  for (const byte of header) sum += byte;
  field(148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
  const padding = Buffer.alloc((512 - (content.length % 512)) % 512);
  return Buffer.concat([header, content, padding, Buffer.alloc(1024)]);
}

function layer(seed: string, size: number): { blob: Blob; diffId: string } {
  const content = Buffer.alloc(size);
  let block = createHash("sha256").update(seed).digest();
  for (let i = 0; i < size; i += 32) {
    block.copy(content, i);
    block = createHash("sha256").update(block).digest();
  }
  const raw = tar(`${seed}.bin`, content);
  const data = gzipSync(raw);
  return {
    blob: { digest: sha256(data), data, mediaType: "application/vnd.oci.image.layer.v1.tar+gzip" },
    diffId: sha256(raw),
  };
}

/** Writes an OCI image layout holding one image tagged `ref`. */
function writeLayout(dir: string, ref: string, layers: { blob: Blob; diffId: string }[]): Layout {
  const configData = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: { Env: [`IMAGE=${ref}`] },
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
    }),
  );
  const config: Blob = {
    digest: sha256(configData),
    data: configData,
    mediaType: "application/vnd.oci.image.config.v1+json",
  };
  const manifestData = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: config.mediaType, digest: config.digest, size: config.data.length },
      layers: layers.map((l) => ({
        mediaType: l.blob.mediaType,
        digest: l.blob.digest,
        size: l.blob.data.length,
      })),
    }),
  );
  const manifest: Blob = {
    digest: sha256(manifestData),
    data: manifestData,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
  };
  mkdirSync(path.join(dir, "blobs", "sha256"), { recursive: true });
  for (const b of [config, manifest, ...layers.map((l) => l.blob)])
    writeFileSync(path.join(dir, "blobs", "sha256", b.digest.slice(7)), b.data);
  writeFileSync(path.join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  writeFileSync(
    path.join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: manifest.mediaType,
          digest: manifest.digest,
          size: manifest.data.length,
          annotations: { "org.opencontainers.image.ref.name": ref },
        },
      ],
    }),
  );
  return { dir, manifest, config, layers: layers.map((l) => l.blob) };
}

let server: Berth;
let work: string;
let policy: string;
let a: Layout;
let b: Layout;

const skopeo = (args: string[]) =>
  run("skopeo", ["--policy", policy, ...args], {
    env: { ...process.env, HOME: work },
    maxBuffer: 64 * 1024 * 1024,
  });
const berth = (args: string[]) => run(process.execPath, [CLI, ...args], { maxBuffer: 64 * 1024 * 1024 });
const onDisk = (digest: string) =>
  existsSync(
    path.join(
      server.dataDir,
      "docker",
      "registry",
      "v2",
      "blobs",
      "sha256",
      digest.slice(7, 9),
      digest.slice(7),
      "data",
    ),
  );

beforeAll(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), "berth-e2e-gc-"));
  policy = path.join(work, "policy.json");
  writeFileSync(policy, JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }));
  const shared = [layer("shared-base", 300_000), layer("shared-runtime", 200_000)];
  a = writeLayout(path.join(work, "a"), "a", [...shared, layer("only-in-a", 150_000)]);
  b = writeLayout(path.join(work, "b"), "b", [...shared, layer("only-in-b", 100_000)]);
  server = await startBerth({ workers: 1, env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
});

afterAll(async () => {
  await server?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

test("images sharing layers: delete A, collect, exactly A's own blobs go; B pulls byte for byte with skopeo", async () => {
  const ref = (tag: string) => `docker://${server.host}/e2e/gc:${tag}`;
  await skopeo(["copy", "--dest-tls-verify=false", "--preserve-digests", `oci:${a.dir}:a`, ref("a")]);
  await skopeo(["copy", "--dest-tls-verify=false", "--preserve-digests", `oci:${b.dir}:b`, ref("b")]);
  for (const x of [a, b])
    for (const blob of [x.manifest, x.config, ...x.layers]) expect(onDisk(blob.digest)).toBe(true);

  await skopeo(["delete", "--tls-verify=false", ref("a")]);
  await expect(skopeo(["inspect", "--tls-verify=false", ref("a")])).rejects.toThrow(
    /manifest unknown|not found/i,
  );

  const { stdout } = await berth(["gc", "--data-dir", server.dataDir, "--grace-period", "0s", "--json"]);
  const report = JSON.parse(stdout) as { blobs: { digest: string }[] };
  const ownA = [a.manifest, a.config, a.layers[2]!].map((x) => x.digest).sort();
  expect(report.blobs.map((x) => x.digest).sort()).toEqual(ownA);
  for (const d of ownA) expect(onDisk(d)).toBe(false);
  for (const blob of [b.manifest, b.config, ...b.layers]) expect(onDisk(blob.digest)).toBe(true);

  const out = path.join(work, "pulled-b");
  await skopeo(["copy", "--src-tls-verify=false", "--preserve-digests", ref("b"), `oci:${out}:b`]);
  const pulled = readdirSync(path.join(out, "blobs", "sha256")).sort();
  expect(pulled).toEqual([b.manifest, b.config, ...b.layers].map((x) => x.digest.slice(7)).sort());
  for (const blob of [b.manifest, b.config, ...b.layers]) {
    expect(readFileSync(path.join(out, "blobs", "sha256", blob.digest.slice(7))).equals(blob.data)).toBe(
      true,
    );
  }

  // A again: skopeo finds the shared layers and uploads what the collection took.
  await skopeo(["copy", "--dest-tls-verify=false", "--preserve-digests", `oci:${a.dir}:a`, ref("a")]);
  const again = path.join(work, "pulled-a");
  await skopeo(["copy", "--src-tls-verify=false", "--preserve-digests", ref("a"), `oci:${again}:a`]);
  for (const blob of [a.manifest, a.config, ...a.layers]) {
    expect(readFileSync(path.join(again, "blobs", "sha256", blob.digest.slice(7))).equals(blob.data)).toBe(
      true,
    );
  }
});
