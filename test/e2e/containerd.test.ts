/**
 * containerd's `ctr` against the registry, through a containerd this file starts for itself (own
 * root, state, socket; CRI disabled; native snapshotter so that no mounts are needed). ctr pushes
 * content byte for byte, so every digest must survive each round trip exactly.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { headManifest, verifyTree } from "./clients/api.js";
import { type Containerd, type CtrImage, parseCtrImages, startContainerd } from "./clients/containerd.js";
import { ContainerTools } from "./clients/containers.js";
import {
  type Image,
  type Index,
  ociArchive,
  testImage,
  testMultiArch,
  writeOciLayout,
} from "./clients/images.js";
import { type Registry, startRegistry } from "./clients/registry.js";
import { cleanupAll, saveLogs } from "./clients/suite.js";

let registry: Registry;
let containerd: Containerd;
let tools: ContainerTools;
let src: string;
let image: Image;
let imported: Image;
let multi: Index;

beforeAll(async () => {
  tools = ContainerTools.create("berth-e2e-ctr-");
  image = testImage("ctr");
  imported = testImage("ctr-import");
  multi = testMultiArch("ctr-multi");
  src = tools.subdir("src");
  writeOciLayout(src, { five: image, multi });
  registry = await startRegistry();
  containerd = await startContainerd();
});

afterAll(async () => {
  saveLogs(registry, "containerd", { containerd: containerd?.logs ?? [] });
  await cleanupAll(
    () => containerd?.stop(),
    () => registry?.cleanup(),
    () => tools?.cleanup(),
  );
});

const name = (repo: string, tagOrDigest: string) =>
  `${registry.host}/${repo}${tagOrDigest.startsWith("sha256:") ? "@" : ":"}${tagOrDigest}`;

async function ctr(args: string[]): Promise<string> {
  return (await containerd.ctr(args)).stdout;
}

async function images(): Promise<CtrImage[]> {
  return parseCtrImages(await ctr(["images", "ls"]));
}

async function local(ref: string): Promise<CtrImage> {
  const found = (await images()).find((i) => i.ref === ref);
  if (!found) throw new Error(`ctr images ls has no ${ref}:\n${await ctr(["images", "ls"])}`);
  return found;
}

async function pull(ref: string, extra: string[] = []): Promise<void> {
  await ctr(["images", "pull", "--plain-http", "--snapshotter", "native", ...extra, ref]);
}

async function push(ref: string, extra: string[] = []): Promise<void> {
  await ctr(["images", "push", "--plain-http", ...extra, ref]);
}

/** Removes images; containerd's garbage collector then drops their content. */
async function remove(...refs: string[]): Promise<void> {
  await ctr(["images", "rm", "--sync", ...refs]);
}

async function contentDigests(): Promise<string[]> {
  return (await ctr(["content", "ls", "-q"])).split("\n").filter(Boolean);
}

async function skopeoPush(ref: string, repo: string, all = false): Promise<void> {
  await tools.skopeo([
    "copy",
    "--dest-tls-verify=false",
    "--preserve-digests",
    ...(all ? ["--all"] : []),
    `oci:${src}:${ref}`,
    `docker://${name(repo, "v1")}`,
  ]);
}

describe("ctr (containerd)", () => {
  test("pulls a five-layer image by tag and by digest", async () => {
    const repo = "e2e/ctr/known";
    await skopeoPush("five", repo);
    await pull(name(repo, "v1"));
    const byTag = await local(name(repo, "v1"));
    expect(byTag.digest).toBe(image.manifest.digest);
    expect(byTag.platforms).toEqual(["linux/amd64"]);
    const content = await contentDigests();
    for (const b of [image.manifest, image.config, ...image.layers]) expect(content).toContain(b.digest);
    // config and five layers
    expect(await ctr(["images", "check"])).toMatch(/complete \(6\/6\)/);

    await remove(name(repo, "v1"));
    expect(await contentDigests()).not.toContain(image.layers[2]!.digest);
    await pull(name(repo, image.manifest.digest));
    expect((await local(name(repo, image.manifest.digest))).digest).toBe(image.manifest.digest);
  });

  test("pushes into another repository with the digest unchanged", async () => {
    const target = name("e2e/ctr/copied", "v2");
    const source = name("e2e/ctr/known", image.manifest.digest);
    if (!(await images()).some((i) => i.ref === source)) await pull(source);
    await ctr(["images", "tag", source, target]);
    await push(target);
    expect((await headManifest(registry.url, "e2e/ctr/copied", "v2")).digest).toBe(image.manifest.digest);
    const tree = await verifyTree(registry.url, "e2e/ctr/copied", "v2");
    expect(tree.digests).toEqual([
      image.manifest.digest,
      image.config.digest,
      ...image.layers.map((l) => l.digest),
    ]);
  });

  test("imports an image only containerd has, pushes it, and pulls it back", async () => {
    const archive = path.join(containerd.dir, "import.tar");
    writeFileSync(archive, ociArchive({ v1: imported }));
    const repo = "e2e/ctr/imported";
    await ctr([
      "images",
      "import",
      "--snapshotter",
      "native",
      "--base-name",
      `${registry.host}/${repo}`,
      archive,
    ]);
    expect((await local(name(repo, "v1"))).digest).toBe(imported.manifest.digest);

    await push(name(repo, "v1"));
    expect((await headManifest(registry.url, repo, "v1")).digest).toBe(imported.manifest.digest);
    await verifyTree(registry.url, repo, "v1");

    await remove(name(repo, "v1"));
    expect(await contentDigests()).not.toContain(imported.layers[2]!.digest);
    await pull(name(repo, "v1"));
    expect((await local(name(repo, "v1"))).digest).toBe(imported.manifest.digest);
    expect(await contentDigests()).toContain(imported.layers[2]!.digest);
  });

  test("pulls a multi-arch index for all platforms and for one, and pushes it back", async () => {
    const repo = "e2e/ctr/multi";
    await skopeoPush("multi", repo, true);

    await pull(name(repo, "v1"), ["--all-platforms"]);
    const all = await local(name(repo, "v1"));
    expect(all.digest).toBe(multi.index.digest);
    expect(all.platforms.sort()).toEqual(["linux/amd64", "linux/arm64/v8"]);
    const content = await contentDigests();
    for (const img of multi.images) for (const l of img.layers) expect(content).toContain(l.digest);

    const copy = name("e2e/ctr/multi-copy", "v1");
    await ctr(["images", "tag", name(repo, "v1"), copy]);
    await push(copy);
    const tree = await verifyTree(registry.url, "e2e/ctr/multi-copy", "v1");
    expect(tree.digest).toBe(multi.index.digest);
    expect(tree.platforms).toEqual({
      "linux/amd64": multi.images[0]!.manifest.digest,
      "linux/arm64/v8": multi.images[1]!.manifest.digest,
    });

    await remove(name(repo, "v1"), copy);
    await pull(name(repo, "v1"), ["--platform", "linux/arm64/v8"]);
    expect((await local(name(repo, "v1"))).digest).toBe(multi.index.digest);
    const arm = await contentDigests();
    for (const l of multi.images[1]!.layers) expect(arm).toContain(l.digest);
    // Only the requested platform's own layer was fetched.
    expect(arm).not.toContain(multi.images[0]!.layers[2]!.digest);
  });
});
