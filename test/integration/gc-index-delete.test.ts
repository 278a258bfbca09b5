/**
 * Deleting a multi-platform image by its index digest (what `skopeo delete` sends) frees its platform
 * images' layers at the next collection, with the default configuration (gc.untagged off): children
 * that nothing else holds go; a child that is tagged, or listed by another index, stays.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, startBerth } from "../helpers/server.js";
import {
  type Blob,
  berthJson,
  blob,
  bytes,
  deleteManifest,
  getManifest,
  type Image,
  image,
  OCI_INDEX,
  pushImage,
  putManifest,
  sha256,
} from "./gc-helpers.js";

let server: Berth;
beforeAll(async () => {
  server = await startBerth({ env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
});
afterAll(async () => {
  await server?.cleanup();
});

function blobFile(digest: string): string {
  const hex = digest.slice("sha256:".length);
  return path.join(server.dataDir, "docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data");
}

function platformImage(seed: string): Image {
  return image(seed, [blob(bytes(`${seed}-layer-1`, 4096)), blob(bytes(`${seed}-layer-2`, 2048))]);
}

function index(children: { img: Image; arch: string }[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: children.map(({ img, arch }) => ({
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        digest: img.digest,
        size: img.manifest.length,
        platform: { os: "linux", architecture: arch },
      })),
    }),
  );
}

async function pushIndex(
  repo: string,
  tag: string,
  children: { img: Image; arch: string }[],
): Promise<string> {
  for (const { img } of children) await pushImage(server.url, repo, img.digest, img);
  const body = index(children);
  const digest = await putManifest(server.url, repo, tag, body, OCI_INDEX);
  expect(digest).toBe(sha256(body));
  return digest;
}

const filesOf = (img: Image): Blob[] => [img.config, ...img.layers];

async function gc(): Promise<{
  manifests: { digest: string; reason: string }[];
  blobs: { digest: string }[];
}> {
  return berthJson(["gc", "--data-dir", server.dataDir, "--grace-period", "0s"]);
}

describe("deleting a multi-platform image", () => {
  it("frees the layers of its platform images that nothing else holds", async () => {
    const amd64 = platformImage("free-amd64");
    const arm64 = platformImage("free-arm64");
    const digest = await pushIndex("multi/free", "v1", [
      { img: amd64, arch: "amd64" },
      { img: arm64, arch: "arm64" },
    ]);
    for (const b of [...filesOf(amd64), ...filesOf(arm64)]) expect(existsSync(blobFile(b.digest))).toBe(true);

    expect(await deleteManifest(server.url, "multi/free", digest)).toBe(202);
    // A dry run lists the platform images and the blobs that would go with them, and removes nothing.
    const dry = await berthJson<{
      manifests: { digest: string; reason: string }[];
      blobs: { digest: string }[];
    }>(["gc", "--data-dir", server.dataDir, "--grace-period", "0s", "--dry-run"]);
    expect(dry.manifests.map((m) => m.reason)).toEqual([
      "child of a deleted index",
      "child of a deleted index",
    ]);
    const dryBlobs = dry.blobs.map((b) => b.digest);
    for (const b of [...filesOf(amd64), ...filesOf(arm64)]) expect(dryBlobs).toContain(b.digest);
    for (const b of [...filesOf(amd64), ...filesOf(arm64)]) expect(existsSync(blobFile(b.digest))).toBe(true);
    const report = await gc();
    expect(report.manifests.map((m) => m.digest).sort()).toEqual([amd64.digest, arm64.digest].sort());
    for (const b of [...filesOf(amd64), ...filesOf(arm64)])
      expect(existsSync(blobFile(b.digest))).toBe(false);
    expect((await getManifest(server.url, "multi/free", amd64.digest)).status).toBe(404);
  });

  it("keeps a child that is tagged or listed by another index, and frees only the rest", async () => {
    const tagged = platformImage("keep-tagged");
    const shared = platformImage("keep-shared");
    const alone = platformImage("keep-alone");
    const digest = await pushIndex("multi/keep", "v1", [
      { img: tagged, arch: "amd64" },
      { img: shared, arch: "arm64" },
      { img: alone, arch: "s390x" },
    ]);
    await putManifest(server.url, "multi/keep", "amd64-only", tagged.manifest);
    const other = await pushIndex("multi/keep", "v2", [{ img: shared, arch: "arm64" }]);

    expect(await deleteManifest(server.url, "multi/keep", digest)).toBe(202);
    const report = await gc();
    expect(report.manifests.map((m) => m.digest)).toEqual([alone.digest]);
    for (const b of filesOf(alone)) expect(existsSync(blobFile(b.digest))).toBe(false);
    for (const b of [...filesOf(tagged), ...filesOf(shared)])
      expect(existsSync(blobFile(b.digest))).toBe(true);
    expect((await getManifest(server.url, "multi/keep", "amd64-only")).status).toBe(200);
    expect((await getManifest(server.url, "multi/keep", other)).status).toBe(200);

    // Once the other index goes too, the child it shared goes with the next collection.
    expect(await deleteManifest(server.url, "multi/keep", other)).toBe(202);
    const again = await gc();
    expect(again.manifests.map((m) => m.digest)).toEqual([shared.digest]);
    for (const b of filesOf(shared)) expect(existsSync(blobFile(b.digest))).toBe(false);
    for (const b of filesOf(tagged)) expect(existsSync(blobFile(b.digest))).toBe(true);
  });

  it("leaves a manifest pushed on its own by digest alone (gc.untagged is off)", async () => {
    const single = platformImage("own-digest");
    await pushImage(server.url, "multi/own", single.digest, single);
    const report = await gc();
    expect(report.manifests.map((m) => m.digest)).not.toContain(single.digest);
    expect((await getManifest(server.url, "multi/own", single.digest)).status).toBe(200);
  });
});
