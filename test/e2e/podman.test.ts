/**
 * podman (vfs storage under a temp root, cgroupfs) against the registry: push and pull a five-layer
 * image by tag and by digest, OCI and Docker schema 2, a multi-arch index per platform, and a
 * manifest list podman assembles from registry images.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { getManifest, headManifest, verifyTree } from "./clients/api.js";
import { ContainerTools } from "./clients/containers.js";
import {
  hex,
  type Image,
  type Index,
  MT,
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

beforeAll(async () => {
  tools = ContainerTools.create("berth-e2e-podman-");
  image = testImage("podman");
  multi = testMultiArch("podman-multi");
  src = tools.subdir("src");
  writeOciLayout(src, { five: image, multi });
  registry = await startRegistry();
  tools.allowInsecure(registry.host);
});

afterAll(async () => {
  saveLogs(registry, "podman");
  await cleanupAll(
    () => registry?.cleanup(),
    () => tools?.cleanup(),
  );
});

const name = (repo: string, tagOrDigest: string) =>
  `${registry.host}/${repo}${tagOrDigest.startsWith("sha256:") ? "@" : ":"}${tagOrDigest}`;

interface Inspected {
  Id: string;
  Digest: string;
  RepoDigests: string[];
  Architecture: string;
  Os: string;
  RootFS: { Layers: string[] };
}

async function inspectLocal(ref: string): Promise<Inspected> {
  const out = JSON.parse((await tools.podman(["image", "inspect", ref])).stdout) as Inspected[];
  expect(out).toHaveLength(1);
  return out[0]!;
}

async function push(local: string, repo: string, tag: string, extra: string[] = []): Promise<string> {
  const digestFile = path.join(tools.dir, `digest-${repo.replace(/\W/g, "_")}-${tag}`);
  await tools.podman([
    "push",
    "--tls-verify=false",
    "--digestfile",
    digestFile,
    ...extra,
    local,
    `docker://${name(repo, tag)}`,
  ]);
  return readDigestFile(digestFile);
}

async function pull(ref: string, extra: string[] = []): Promise<void> {
  await tools.podman(["pull", "--tls-verify=false", ...extra, ref]);
}

async function removeAll(): Promise<void> {
  await tools.podman(["rmi", "--all", "--force"]);
  expect((await tools.podman(["images", "-q"])).stdout.trim()).toBe("");
}

describe("podman", () => {
  test("pushes a five-layer image and pulls it back by tag and by digest", async () => {
    await tools.podman(["pull", `oci:${src}:five`]);
    const local = await inspectLocal(hex(image.config.digest));
    expect(local.Id).toBe(hex(image.config.digest));
    expect(local.RootFS.Layers).toEqual(image.diffIds);

    const repo = "e2e/podman/five";
    const digest = await push(local.Id, repo, "v1");
    expect((await headManifest(registry.url, repo, "v1")).digest).toBe(digest);
    const tree = await verifyTree(registry.url, repo, "v1");
    expect(tree.digest).toBe(digest);
    const m = await getManifest(registry.url, repo, digest);
    // podman recompresses layers from its store, but the config (and with it the image ID) is the same.
    expect(m.json.config?.digest).toBe(image.config.digest);
    expect(m.json.layers).toHaveLength(5);

    await removeAll();
    await pull(name(repo, "v1"));
    const byTag = await inspectLocal(name(repo, "v1"));
    expect(byTag.Id).toBe(hex(image.config.digest));
    expect(byTag.Digest).toBe(digest);
    expect(byTag.RepoDigests).toContain(name(repo, digest));

    await removeAll();
    await pull(name(repo, digest));
    const byDigest = await inspectLocal(name(repo, digest));
    expect(byDigest.Id).toBe(hex(image.config.digest));
    expect(byDigest.Digest).toBe(digest);
  });

  test("pulls an image pushed by another client with its exact digest", async () => {
    const repo = "e2e/podman/known";
    await tools.skopeo([
      "copy",
      "--dest-tls-verify=false",
      "--preserve-digests",
      `oci:${src}:five`,
      `docker://${name(repo, "v1")}`,
    ]);
    await removeAll();
    await pull(name(repo, "v1"));
    const local = await inspectLocal(name(repo, "v1"));
    expect(local.Digest).toBe(image.manifest.digest);
    expect(local.Id).toBe(hex(image.config.digest));
    expect(local.RepoDigests).toContain(name(repo, image.manifest.digest));
    expect(local.RootFS.Layers).toEqual(image.diffIds);
  });

  test("pushes Docker schema 2 with --format v2s2", async () => {
    const repo = "e2e/podman/schema2";
    const digest = await push(name("e2e/podman/known", "v1"), repo, "v1", ["--format", "v2s2"]);
    const m = await getManifest(registry.url, repo, "v1", MT.dockerManifest);
    expect(m.mediaType).toBe(MT.dockerManifest);
    expect(m.headerDigest).toBe(digest);
    expect(m.digest).toBe(digest);
    expect(m.json.config?.mediaType).toBe(MT.dockerConfig);
    await verifyTree(registry.url, repo, "v1");

    await removeAll();
    await pull(name(repo, digest));
    expect((await inspectLocal(name(repo, digest))).Digest).toBe(digest);
  });

  test("pulls each platform of a multi-arch index", async () => {
    const repo = "e2e/podman/multi";
    await tools.skopeo([
      "copy",
      "--all",
      "--dest-tls-verify=false",
      "--preserve-digests",
      `oci:${src}:multi`,
      `docker://${name(repo, "v1")}`,
    ]);
    await removeAll();
    for (const img of multi.images) {
      const { architecture, variant } = img.platform;
      await pull(name(repo, "v1"), ["--arch", architecture, ...(variant ? ["--variant", variant] : [])]);
      const local = await inspectLocal(name(repo, "v1"));
      expect(local.Id).toBe(hex(img.config.digest));
      expect(local.Architecture).toBe(architecture);
      expect(local.Digest).toBe(multi.index.digest);
      expect(local.RepoDigests).toContain(name(repo, img.manifest.digest));
      expect(local.RootFS.Layers).toEqual(img.diffIds);
    }

    // manifest inspect of a remote index (plain HTTP through registries.conf).
    const remote = JSON.parse((await tools.podman(["manifest", "inspect", name(repo, "v1")])).stdout) as {
      manifests: { digest: string; platform: { architecture: string } }[];
    };
    expect(remote.manifests.map((m) => m.digest)).toEqual(multi.images.map((i) => i.manifest.digest));
  });

  test("assembles a manifest list from registry images and pushes it with --all", async () => {
    const list = "localhost/e2e/podman-list:v1";
    await tools.podman(["manifest", "create", list]);
    await tools.podman([
      "manifest",
      "add",
      "--tls-verify=false",
      "--all",
      list,
      `docker://${name("e2e/podman/multi", "v1")}`,
    ]);
    const digestFile = path.join(tools.dir, "digest-list");
    const repo = "e2e/podman/list";
    await tools.podman([
      "manifest",
      "push",
      "--all",
      "--tls-verify=false",
      "--digestfile",
      digestFile,
      list,
      `docker://${name(repo, "v1")}`,
    ]);
    const digest = readDigestFile(digestFile);
    const tree = await verifyTree(registry.url, repo, "v1");
    expect(tree.digest).toBe(digest);
    expect([MT.ociIndex, MT.dockerList]).toContain(tree.mediaType.split(";")[0]);
    // The instances were copied registry to registry, so their digests are unchanged.
    expect(tree.platforms).toEqual({
      "linux/amd64": multi.images[0]!.manifest.digest,
      "linux/arm64/v8": multi.images[1]!.manifest.digest,
    });
  });
});
