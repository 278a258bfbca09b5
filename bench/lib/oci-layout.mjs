// Builds a multi-layer OCI image layout on disk (for the skopeo metric) without any external tool:
// each layer is a tar holding one file of pseudo-random (incompressible) bytes, gzipped at level 1.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { pseudoRandomBytes, sha256Digest } from "./blobdata.mjs";
import { OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, pushSmallBlob, putManifest } from "./registry.mjs";

const LAYOUT_VERSION = "oci-layout-v1";
export const REF_NAME = "bench";

function octal(value, width) {
  return `${value.toString(8).padStart(width - 1, "0")}\0`;
}

/** One ustar header block for a regular file. */
function tarHeader(name, size) {
  const h = Buffer.alloc(512, 0);
  h.write(name, 0, 100, "utf8");
  h.write(octal(0o644, 8), 100, "ascii");
  h.write(octal(0, 8), 108, "ascii");
  h.write(octal(0, 8), 116, "ascii");
  h.write(octal(size, 12), 124, "ascii");
  h.write(octal(1_700_000_000, 12), 136, "ascii");
  h.write("        ", 148, "ascii");
  h.write("0", 156, "ascii");
  h.write("ustar\0", 257, "ascii");
  h.write("00", 263, "ascii");
  h.write("root", 265, "ascii");
  h.write("root", 297, "ascii");
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  return h;
}

/** A tar archive holding one file. */
function tarOneFile(name, content) {
  const pad = (512 - (content.length % 512)) % 512;
  return Buffer.concat([tarHeader(name, content.length), content, Buffer.alloc(pad), Buffer.alloc(1024)]);
}

function writeBlob(dir, buffer) {
  const digest = sha256Digest(buffer);
  writeFileSync(path.join(dir, "blobs", "sha256", digest.slice("sha256:".length)), buffer);
  return digest;
}

/**
 * Makes (or reuses, when `dir` already holds a finished one) an OCI layout at `dir` with an image
 * tagged "bench" of `layers` layers of about `layerBytes` bytes each. `seed` makes the content unique.
 * Returns { dir, ref, manifestDigest, totalBytes }.
 */
export function buildOciLayout(dir, { seed, layers = 5, layerBytes = 20 * 1024 * 1024 }) {
  const doneFile = path.join(dir, "bench-image.json");
  const expect = `${LAYOUT_VERSION}:${seed}:${layers}:${layerBytes}`;
  if (existsSync(doneFile)) {
    const info = JSON.parse(readFileSync(doneFile, "utf8"));
    if (info.key === expect) return info;
  }
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(path.join(tmp, "blobs", "sha256"), { recursive: true });
  const layerDescriptors = [];
  const diffIds = [];
  let totalBytes = 0;
  for (let i = 0; i < layers; i++) {
    const content = pseudoRandomBytes(`${seed}:layer:${i}`, layerBytes);
    const tar = tarOneFile(`bench/${seed}/layer-${i}.bin`, content);
    diffIds.push(sha256Digest(tar));
    const gz = gzipSync(tar, { level: 1 });
    const digest = writeBlob(tmp, gz);
    layerDescriptors.push({ mediaType: OCI_LAYER_GZIP, digest, size: gz.length });
    totalBytes += gz.length;
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: { Env: [`BENCH_SEED=${seed}`] },
      rootfs: { type: "layers", diff_ids: diffIds },
      history: diffIds.map((_, i) => ({ created_by: `berth bench layer ${i}` })),
    }),
  );
  const configDigest = writeBlob(tmp, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length },
      layers: layerDescriptors,
    }),
  );
  const manifestDigest = writeBlob(tmp, manifest);
  totalBytes += config.length + manifest.length;
  writeFileSync(path.join(tmp, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  writeFileSync(
    path.join(tmp, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [
        {
          mediaType: OCI_MANIFEST,
          digest: manifestDigest,
          size: manifest.length,
          annotations: { "org.opencontainers.image.ref.name": REF_NAME },
        },
      ],
    }),
  );
  const info = {
    key: expect,
    dir,
    ref: REF_NAME,
    manifestDigest,
    totalBytes,
    layers: layerDescriptors.length,
  };
  writeFileSync(path.join(tmp, "bench-image.json"), JSON.stringify(info, null, 2));
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(path.dirname(dir), { recursive: true });
  renameSync(tmp, dir);
  return info;
}

/** Pushes an image from an OCI layout with the bench's own client (no skopeo): blobs, then manifest. */
export async function pushOciLayout(server, repo, tag, layoutDir) {
  const index = JSON.parse(readFileSync(path.join(layoutDir, "index.json"), "utf8"));
  const desc = index.manifests[0];
  const blobPath = (digest) => path.join(layoutDir, "blobs", "sha256", digest.slice("sha256:".length));
  const manifest = readFileSync(blobPath(desc.digest));
  const parsed = JSON.parse(manifest.toString("utf8"));
  for (const blob of [parsed.config, ...parsed.layers]) {
    await pushSmallBlob(server, repo, readFileSync(blobPath(blob.digest)), blob.digest);
  }
  return putManifest(server, repo, tag, manifest, desc.mediaType);
}
