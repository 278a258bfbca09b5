/**
 * skopeo against the registry: copy in and out (OCI layout, dir), inspect, list-tags, delete, a
 * multi-arch index, Docker schema 2 conversion and zstd layers. Images are built in memory by
 * images.ts, so every digest the registry and skopeo report is checked against a known value.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { getManifest, headManifest, listTags, verifyTree } from "./clients/api.js";
import { ContainerTools } from "./clients/containers.js";
import {
  type Image,
  type Index,
  layoutBlob,
  layoutRef,
  MT,
  sha256,
  testImage,
  testMultiArch,
  writeOciLayout,
} from "./clients/images.js";
import { type Registry, startRegistry } from "./clients/registry.js";
import { cleanupAll, readDigestFile, saveLogs } from "./clients/suite.js";

let registry: Registry;
let tools: ContainerTools;
let src: string;
let image: Image;
let multi: Index;
let zstdSource: Image;

const NO_TLS = ["--src-tls-verify=false", "--dest-tls-verify=false"];

beforeAll(async () => {
  tools = ContainerTools.create("berth-e2e-skopeo-");
  image = testImage("skopeo");
  multi = testMultiArch("skopeo-multi");
  src = tools.subdir("src");
  zstdSource = testImage("skopeo-zstd");
  writeOciLayout(src, { five: image, multi, zstd: zstdSource });
  registry = await startRegistry();
});

afterAll(async () => {
  saveLogs(registry, "skopeo");
  await cleanupAll(
    () => registry?.cleanup(),
    () => tools?.cleanup(),
  );
});

const ref = (repo: string, tag: string) => `docker://${registry.host}/${repo}:${tag}`;

async function copy(from: string, to: string, extra: string[] = []): Promise<string> {
  const digestFile = path.join(tools.dir, `digest-${Math.random().toString(36).slice(2)}`);
  await tools.skopeo(["copy", ...NO_TLS, "--digestfile", digestFile, ...extra, from, to]);
  return readDigestFile(digestFile);
}

async function inspect(target: string, extra: string[] = [], global: string[] = []): Promise<string> {
  return (await tools.skopeo([...global, "inspect", "--tls-verify=false", ...extra, target])).stdout;
}

describe("skopeo", () => {
  const repo = "e2e/skopeo/five";

  test("copies a five-layer OCI image in with its digest unchanged", async () => {
    const digest = await copy(`oci:${src}:five`, ref(repo, "v1"), ["--preserve-digests"]);
    expect(digest).toBe(image.manifest.digest);

    const head = await headManifest(registry.url, repo, "v1");
    expect(head.status).toBe(200);
    expect(head.digest).toBe(image.manifest.digest);
    expect(head.mediaType).toBe(MT.ociManifest);
    expect(head.length).toBe(image.manifest.size);

    const tree = await verifyTree(registry.url, repo, "v1");
    expect(tree.digests).toEqual([
      image.manifest.digest,
      image.config.digest,
      ...image.layers.map((l) => l.digest),
    ]);
    const byDigest = await getManifest(registry.url, repo, image.manifest.digest);
    expect(byDigest.bytes.equals(image.manifest.data)).toBe(true);
  });

  test("inspect reports the digest, layers, platform and the exact manifest and config bytes", async () => {
    const info = JSON.parse(await inspect(ref(repo, "v1"))) as {
      Digest: string;
      Layers: string[];
      Architecture: string;
      Os: string;
      Labels: Record<string, string>;
    };
    expect(info.Digest).toBe(image.manifest.digest);
    expect(info.Layers).toEqual(image.layers.map((l) => l.digest));
    expect(info.Architecture).toBe("amd64");
    expect(info.Os).toBe("linux");
    expect(info.Labels["berth.e2e.seed"]).toBe("skopeo");

    const raw = await inspect(ref(repo, "v1"), ["--raw"]);
    expect(sha256(raw)).toBe(image.manifest.digest);
    const config = await inspect(ref(repo, "v1"), ["--config", "--raw"]);
    expect(sha256(config)).toBe(image.config.digest);
  });

  test("copies back out to an OCI layout and a dir, byte for byte", async () => {
    const out = tools.subdir("out-oci");
    const digest = await copy(ref(repo, "v1"), `oci:${out}:back`, ["--preserve-digests"]);
    expect(digest).toBe(image.manifest.digest);
    const back = layoutRef(out, "back");
    expect(back.digest).toBe(image.manifest.digest);
    expect(layoutBlob(out, back.digest).equals(image.manifest.data)).toBe(true);
    for (const b of [image.config, ...image.layers]) expect(sha256(layoutBlob(out, b.digest))).toBe(b.digest);

    const dir = tools.subdir("out-dir");
    await copy(ref(repo, "v1"), `dir:${dir}`);
    expect(readFileSync(path.join(dir, "manifest.json")).equals(image.manifest.data)).toBe(true);
    for (const b of image.layers) {
      const file = path.join(dir, b.digest.slice("sha256:".length));
      expect(existsSync(file)).toBe(true);
      expect(sha256(readFileSync(file))).toBe(b.digest);
    }
  });

  test("copies a multi-arch index with --all and keeps every digest", async () => {
    const multiRepo = "e2e/skopeo/multi";
    const digest = await copy(`oci:${src}:multi`, ref(multiRepo, "v1"), ["--all", "--preserve-digests"]);
    expect(digest).toBe(multi.index.digest);

    const tree = await verifyTree(registry.url, multiRepo, "v1");
    expect(tree.digest).toBe(multi.index.digest);
    expect(tree.mediaType).toBe(MT.ociIndex);
    expect(tree.platforms).toEqual({
      "linux/amd64": multi.images[0]!.manifest.digest,
      "linux/arm64/v8": multi.images[1]!.manifest.digest,
    });

    expect(sha256(await inspect(ref(multiRepo, "v1"), ["--raw"]))).toBe(multi.index.digest);
    // Without --raw, inspect resolves the index to one platform's image (Digest stays the index's).
    for (const img of multi.images) {
      const { architecture, variant } = img.platform;
      const info = JSON.parse(
        await inspect(
          ref(multiRepo, "v1"),
          [],
          ["--override-arch", architecture, ...(variant ? ["--override-variant", variant] : [])],
        ),
      ) as { Digest: string; Architecture: string; Layers: string[]; Labels: Record<string, string> };
      expect(info.Digest).toBe(multi.index.digest);
      expect(info.Architecture).toBe(architecture);
      expect(info.Layers).toEqual(img.layers.map((l) => l.digest));
      expect(info.Labels["berth.e2e.arch"]).toBe(architecture);
    }

    const out = tools.subdir("out-multi");
    expect(await copy(ref(multiRepo, "v1"), `oci:${out}:back`, ["--all", "--preserve-digests"])).toBe(
      multi.index.digest,
    );
    expect(layoutRef(out, "back").digest).toBe(multi.index.digest);
    for (const img of multi.images) {
      expect(layoutBlob(out, img.manifest.digest).equals(img.manifest.data)).toBe(true);
    }
  });

  test("copies registry to registry: more tags in one repository, and into another repository", async () => {
    for (const tag of ["v2", "v3"]) {
      expect(await copy(ref(repo, "v1"), ref(repo, tag), ["--preserve-digests"])).toBe(image.manifest.digest);
    }
    expect(await copy(ref(repo, "v1"), ref("e2e/skopeo/copied", "latest"), ["--preserve-digests"])).toBe(
      image.manifest.digest,
    );
    const tree = await verifyTree(registry.url, "e2e/skopeo/copied", "latest");
    expect(tree.digest).toBe(image.manifest.digest);
  });

  test("converts to Docker schema 2 on the way in", async () => {
    const digest = await copy(`oci:${src}:five`, ref(repo, "docker"), ["--format", "v2s2"]);
    expect(digest).not.toBe(image.manifest.digest);
    const m = await getManifest(registry.url, repo, "docker", MT.dockerManifest);
    expect(m.mediaType).toBe(MT.dockerManifest);
    expect(m.digest).toBe(digest);
    expect(m.headerDigest).toBe(digest);
    expect(m.json.layers?.map((l) => l.digest)).toEqual(image.layers.map((l) => l.digest));
    expect(m.json.layers?.every((l) => l.mediaType === MT.dockerLayer)).toBe(true);
    await verifyTree(registry.url, repo, "docker");
    const info = JSON.parse(await inspect(ref(repo, "docker"))) as { Digest: string };
    expect(info.Digest).toBe(digest);
  });

  test("list-tags lists every tag", async () => {
    const out = JSON.parse(
      (await tools.skopeo(["list-tags", "--tls-verify=false", `docker://${registry.host}/${repo}`])).stdout,
    ) as {
      Repository: string;
      Tags: string[];
    };
    expect(out.Repository).toBe(`${registry.host}/${repo}`);
    expect([...out.Tags].sort()).toEqual(["docker", "v1", "v2", "v3"]);
    expect(await listTags(registry.url, repo)).toEqual(["docker", "v1", "v2", "v3"]);
  });

  test("delete removes the manifest a tag points to, and nothing else", async () => {
    const schema2 = (await headManifest(registry.url, repo, "docker")).digest;
    expect(schema2).toMatch(/^sha256:/);
    await tools.skopeo(["delete", "--tls-verify=false", ref(repo, "docker")]);

    expect((await headManifest(registry.url, repo, "docker")).status).toBe(404);
    expect((await headManifest(registry.url, repo, schema2!)).status).toBe(404);
    const gone = await tools.skopeo(["inspect", "--tls-verify=false", ref(repo, "docker")], {
      allowFailure: true,
    });
    expect(gone.code).not.toBe(0);
    expect(gone.stderr).toMatch(/manifest unknown|not found/i);

    // The OCI image under the other tags is untouched.
    expect((await headManifest(registry.url, repo, "v1")).digest).toBe(image.manifest.digest);
    await verifyTree(registry.url, repo, "v2");
    expect(await listTags(registry.url, repo)).toEqual(["v1", "v2", "v3"]);
  });

  test("pushes zstd-compressed layers and reads them back", async () => {
    const zrepo = "e2e/skopeo/zstd";
    // Its own layers (but the shared busybox one), so that skopeo cannot reuse gzip blobs the registry has.
    const digest = await copy(`oci:${src}:zstd`, ref(zrepo, "v1"), [
      "--dest-compress-format",
      "zstd",
      "--format",
      "oci",
    ]);
    const m = await getManifest(registry.url, zrepo, "v1");
    expect(m.digest).toBe(digest);
    expect(m.json.layers).toHaveLength(zstdSource.layers.length);
    // c/image may reuse the busybox layer the registry already holds (gzip); all others are recompressed.
    const shared = zstdSource.layers[0]!.digest;
    expect(m.json.layers?.filter((l) => l.mediaType === MT.ociLayerZstd).length).toBeGreaterThanOrEqual(4);
    for (const l of m.json.layers ?? []) if (l.mediaType !== MT.ociLayerZstd) expect(l.digest).toBe(shared);
    // Same uncompressed content, so the same config (diff_ids) as the gzip image.
    expect(m.json.config?.digest).toBe(zstdSource.config.digest);
    await verifyTree(registry.url, zrepo, "v1");

    const out = tools.subdir("out-zstd");
    expect(await copy(ref(zrepo, "v1"), `oci:${out}:back`, ["--preserve-digests"])).toBe(digest);
  });
});
