/**
 * The docker CLI against the registry, through a dockerd this file starts for itself (vfs, no
 * iptables, no bridge, own data root, exec root, pid file and socket). Loopback registries are
 * insecure by default for docker, so plain HTTP on 127.0.0.1 needs no configuration.
 */
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { getManifest, headManifest, verifyTree } from "./clients/api.js";
import { ContainerTools } from "./clients/containers.js";
import { type Dockerd, startDockerd } from "./clients/dockerd.js";
import { type Image, type Index, MT, testImage, testMultiArch, writeOciLayout } from "./clients/images.js";
import { type Registry, startRegistry } from "./clients/registry.js";
import { cleanupAll, saveLogs } from "./clients/suite.js";

let registry: Registry;
let dockerd: Dockerd;
let tools: ContainerTools;
let src: string;
let image: Image;
let multi: Index;

beforeAll(async () => {
  tools = ContainerTools.create("berth-e2e-docker-");
  image = testImage("docker");
  multi = testMultiArch("docker-multi");
  src = tools.subdir("src");
  writeOciLayout(src, { five: image, multi });
  registry = await startRegistry();
  dockerd = await startDockerd();
});

afterAll(async () => {
  saveLogs(registry, "docker", { dockerd: dockerd?.logs ?? [] });
  await cleanupAll(
    () => dockerd?.stop(),
    () => registry?.cleanup(),
    () => tools?.cleanup(),
  );
});

const name = (repo: string, tagOrDigest: string) =>
  `${registry.host}/${repo}${tagOrDigest.startsWith("sha256:") ? "@" : ":"}${tagOrDigest}`;

async function docker(args: string[]): Promise<string> {
  return (await dockerd.docker(args)).stdout;
}

interface Inspected {
  Id: string;
  RepoTags: string[];
  RepoDigests: string[];
  Architecture: string;
  RootFS: { Layers: string[] };
}

async function inspect(ref: string): Promise<Inspected> {
  const out = JSON.parse(await docker(["image", "inspect", ref])) as Inspected[];
  expect(out).toHaveLength(1);
  return out[0]!;
}

/** `docker push`, returning the digest it reports ("TAG: digest: sha256:... size: N"). */
async function push(ref: string): Promise<string> {
  const out = await docker(["push", ref]);
  const m = /digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(out);
  if (!m) throw new Error(`docker push printed no digest:\n${out}`);
  return m[1]!;
}

/** `docker pull`, returning the digest it reports ("Digest: sha256:..."). */
async function pull(ref: string, extra: string[] = []): Promise<string> {
  const out = await docker(["pull", ...extra, ref]);
  const m = /Digest: (sha256:[0-9a-f]{64})/.exec(out);
  if (!m) throw new Error(`docker pull printed no digest:\n${out}`);
  return m[1]!;
}

async function removeAll(): Promise<void> {
  const ids = (await docker(["images", "-aq"])).split("\n").filter(Boolean);
  if (ids.length) await docker(["rmi", "--force", ...new Set(ids)]);
  expect((await docker(["images", "-aq"])).trim()).toBe("");
}

describe("docker", () => {
  const repo = "e2e/docker/five";
  let pushed = "";

  test("loads a five-layer image, pushes it, and pulls it back by tag and by digest", async () => {
    const archive = path.join(tools.dir, "five.tar");
    await tools.skopeo(["copy", `oci:${src}:five`, `docker-archive:${archive}:${name(repo, "v1")}`]);
    await docker(["load", "--input", archive]);
    const loaded = await inspect(name(repo, "v1"));
    expect(loaded.Id).toBe(image.config.digest);
    expect(loaded.RootFS.Layers).toEqual(image.diffIds);

    pushed = await push(name(repo, "v1"));
    expect((await headManifest(registry.url, repo, "v1")).digest).toBe(pushed);
    const tree = await verifyTree(registry.url, repo, "v1");
    expect(tree.digest).toBe(pushed);
    const m = await getManifest(registry.url, repo, pushed);
    expect(m.mediaType).toBe(MT.dockerManifest);
    expect(m.json.config?.digest).toBe(image.config.digest);
    expect(m.json.layers).toHaveLength(5);

    await removeAll();
    expect(await pull(name(repo, "v1"))).toBe(pushed);
    const byTag = await inspect(name(repo, "v1"));
    expect(byTag.Id).toBe(image.config.digest);
    expect(byTag.RepoDigests).toContain(name(repo, pushed));

    await removeAll();
    expect(await pull(name(repo, pushed))).toBe(pushed);
    expect((await inspect(name(repo, pushed))).Id).toBe(image.config.digest);
  });

  test("pushes the same image to a second repository with the same digest", async () => {
    const source = name(repo, "v1");
    if (!(await docker(["images", "-q", source])).trim()) await pull(source);
    const other = name("e2e/docker/other", "v1");
    await docker(["tag", source, other]);
    const digest = await push(other);
    expect(digest).toBe(pushed);
    const tree = await verifyTree(registry.url, "e2e/docker/other", "v1");
    expect(tree.digest).toBe(pushed);
  });

  test("pulls an OCI image pushed by another client with its exact digest", async () => {
    const known = "e2e/docker/known";
    await tools.skopeo([
      "copy",
      "--dest-tls-verify=false",
      "--preserve-digests",
      `oci:${src}:five`,
      `docker://${name(known, "v1")}`,
    ]);
    await removeAll();
    expect(await pull(name(known, "v1"))).toBe(image.manifest.digest);
    const local = await inspect(name(known, "v1"));
    expect(local.Id).toBe(image.config.digest);
    expect(local.RepoDigests).toContain(name(known, image.manifest.digest));
    expect(local.RootFS.Layers).toEqual(image.diffIds);
  });

  test("pulls each platform of a multi-arch index, and inspects a manifest list with docker manifest", async () => {
    const mrepo = "e2e/docker/multi";
    await tools.skopeo([
      "copy",
      "--all",
      "--dest-tls-verify=false",
      "--preserve-digests",
      `oci:${src}:multi`,
      `docker://${name(mrepo, "v1")}`,
    ]);
    await removeAll();
    expect(await pull(name(mrepo, "v1"))).toBe(multi.index.digest);
    const amd = await inspect(name(mrepo, "v1"));
    expect(amd.Id).toBe(multi.images[0]!.config.digest);
    expect(amd.Architecture).toBe("amd64");
    expect(amd.RepoDigests).toContain(name(mrepo, multi.index.digest));

    await removeAll();
    expect(await pull(name(mrepo, "v1"), ["--platform", "linux/arm64/v8"])).toBe(multi.index.digest);
    const arm = await inspect(name(mrepo, "v1"));
    expect(arm.Id).toBe(multi.images[1]!.config.digest);
    expect(arm.Architecture).toBe("arm64");

    // `docker manifest inspect` talks to the registry from the CLI itself. The 20.10 CLI asks for
    // Docker media types only, so it reads a Docker manifest list (skopeo converts the index).
    const v2s2 = "e2e/docker/multi-v2s2";
    await tools.skopeo([
      "copy",
      "--all",
      "--format",
      "v2s2",
      "--dest-tls-verify=false",
      `oci:${src}:multi`,
      `docker://${name(v2s2, "v1")}`,
    ]);
    const tree = await verifyTree(registry.url, v2s2, "v1");
    expect(tree.mediaType).toBe(MT.dockerList);
    const list = JSON.parse(await docker(["manifest", "inspect", "--insecure", name(v2s2, "v1")])) as {
      mediaType: string;
      manifests: { digest: string; platform: { architecture: string; os: string; variant?: string } }[];
    };
    expect(list.mediaType).toBe(MT.dockerList);
    expect(list.manifests.map((m) => m.digest)).toEqual([
      tree.platforms["linux/amd64"],
      tree.platforms["linux/arm64/v8"],
    ]);
    expect(list.manifests.map((m) => m.platform.architecture)).toEqual(["amd64", "arm64"]);
    const one = JSON.parse(
      await docker(["manifest", "inspect", "--insecure", name(v2s2, tree.platforms["linux/arm64/v8"]!)]),
    ) as { mediaType: string; config: { digest: string } };
    expect(one.mediaType).toBe(MT.dockerManifest);
    expect(one.config.digest).not.toBe("");

    // And docker pulls through the Docker list too.
    await removeAll();
    expect(await pull(name(v2s2, "v1"))).toBe(tree.digest);
    expect((await inspect(name(v2s2, "v1"))).Architecture).toBe("amd64");
  });
});
