/**
 * buildah (vfs, temp root) against the registry: images built here from scratch with busybox and
 * generated files, one commit per layer; push, pull, `buildah from` a registry image; single-arch
 * images for two platforms joined into a manifest list with `buildah manifest` and pushed with --all.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { getManifest, headManifest, verifyTree } from "./clients/api.js";
import { ContainerTools } from "./clients/containers.js";
import { layoutBlob, layoutRef, MT, pseudoRandom, sha256 } from "./clients/images.js";
import { type Registry, startRegistry } from "./clients/registry.js";
import { cleanupAll, readDigestFile, saveLogs } from "./clients/suite.js";

let registry: Registry;
let tools: ContainerTools;
let ctx: string;

beforeAll(async () => {
  tools = ContainerTools.create("berth-e2e-buildah-");
  ctx = tools.subdir("context");
  registry = await startRegistry();
});

afterAll(async () => {
  saveLogs(registry, "buildah");
  await cleanupAll(
    () => registry?.cleanup(),
    () => tools?.cleanup(),
  );
});

const name = (repo: string, tagOrDigest: string) =>
  `${registry.host}/${repo}${tagOrDigest.startsWith("sha256:") ? "@" : ":"}${tagOrDigest}`;

async function buildah(args: string[]): Promise<string> {
  return (await tools.buildah(args)).stdout.trim();
}

/** Config digest (image ID) of a local image. */
async function imageId(ref: string): Promise<string> {
  return `sha256:${await buildah(["inspect", "--type", "image", "--format", "{{.FromImageID}}", ref])}`;
}

interface Platform {
  arch: string;
  variant?: string;
}

/**
 * Builds an image one committed layer at a time (each `buildah from` the previous commit, copy,
 * commit), so that it ends up with as many layers as `steps`.
 */
async function build(
  tag: string,
  platform: Platform,
  steps: { file: string; dest: string }[],
): Promise<string> {
  let from = "scratch";
  let id = "";
  for (const [i, step] of steps.entries()) {
    const container = await buildah(["from", "--signature-policy", tools.policy, from]);
    await buildah(["copy", container, step.file, step.dest]);
    await buildah([
      "config",
      "--arch",
      platform.arch,
      "--os",
      "linux",
      ...(platform.variant ? ["--variant", platform.variant] : []),
      "--entrypoint",
      '["/bin/busybox"]',
      "--cmd",
      "sh",
      "--label",
      `berth.e2e.layer=${i + 1}`,
      container,
    ]);
    const iid = path.join(tools.dir, `iid-${tag.replace(/\W/g, "_")}-${i}`);
    const target = i === steps.length - 1 ? tag : `${tag}-step${i + 1}`;
    await buildah([
      "commit",
      "--rm",
      "--signature-policy",
      tools.policy,
      "--iidfile",
      iid,
      container,
      target,
    ]);
    id = readDigestFile(iid);
    from = target;
  }
  return id;
}

function file(name: string, data: Buffer | string): string {
  const p = path.join(ctx, name);
  writeFileSync(p, data);
  return p;
}

async function push(local: string, repo: string, tag: string): Promise<string> {
  const digestFile = path.join(tools.dir, `digest-${repo.replace(/\W/g, "_")}-${tag}`);
  await buildah([
    "push",
    "--tls-verify=false",
    "--digestfile",
    digestFile,
    local,
    `docker://${name(repo, tag)}`,
  ]);
  return readDigestFile(digestFile);
}

describe("buildah", () => {
  let fiveId = "";
  let fiveDigest = "";
  const fiveRepo = "e2e/buildah/five";

  test("builds a five-layer image from scratch and pushes it", async () => {
    const lines = Array.from({ length: 5000 }, (_, i) => `buildah line ${i}`).join("\n");
    fiveId = await build("localhost/e2e/buildah-five:latest", { arch: "amd64" }, [
      { file: "/bin/busybox", dest: "/bin/busybox" },
      { file: file("release", "built by buildah\n"), dest: "/etc/berth-e2e/release" },
      { file: file("random.bin", pseudoRandom("buildah", 1024 * 1024)), dest: "/data/random.bin" },
      { file: file("text.txt", lines), dest: "/data/text.txt" },
      { file: file("random2.bin", pseudoRandom("buildah-2", 512 * 1024)), dest: "/data/random2.bin" },
    ]);
    fiveDigest = await push("localhost/e2e/buildah-five:latest", fiveRepo, "v1");
    expect((await headManifest(registry.url, fiveRepo, "v1")).digest).toBe(fiveDigest);
    const tree = await verifyTree(registry.url, fiveRepo, "v1");
    expect(tree.digest).toBe(fiveDigest);
    const m = await getManifest(registry.url, fiveRepo, "v1");
    expect(m.json.config?.digest).toBe(fiveId);
    expect(m.json.layers).toHaveLength(5);
  });

  test("pulls it back by tag and by digest, and builds from it", async () => {
    await buildah(["rmi", "--all", "--force"]);
    await buildah(["pull", "--tls-verify=false", "--signature-policy", tools.policy, name(fiveRepo, "v1")]);
    expect(await imageId(name(fiveRepo, "v1"))).toBe(fiveId);
    const digest = await buildah([
      "inspect",
      "--type",
      "image",
      "--format",
      "{{.FromImageDigest}}",
      name(fiveRepo, "v1"),
    ]);
    expect(digest).toBe(fiveDigest);

    await buildah(["rmi", "--all", "--force"]);
    await buildah([
      "pull",
      "--tls-verify=false",
      "--signature-policy",
      tools.policy,
      name(fiveRepo, fiveDigest),
    ]);
    expect(await imageId(name(fiveRepo, fiveDigest))).toBe(fiveId);

    // A sixth layer on top of the pulled image, pushed to another repository: the five shared
    // layers must be found (or mounted) there, and the new manifest must list all six.
    const container = await buildah([
      "from",
      "--tls-verify=false",
      "--signature-policy",
      tools.policy,
      name(fiveRepo, "v1"),
    ]);
    await buildah(["copy", container, file("extra", "one more layer\n"), "/etc/berth-e2e/extra"]);
    await buildah([
      "commit",
      "--rm",
      "--signature-policy",
      tools.policy,
      container,
      "localhost/e2e/buildah-six:latest",
    ]);
    const sixRepo = "e2e/buildah/six";
    const six = await push("localhost/e2e/buildah-six:latest", sixRepo, "v1");
    const m = await getManifest(registry.url, sixRepo, six);
    expect(m.json.layers).toHaveLength(6);
    const base = await getManifest(registry.url, fiveRepo, fiveDigest);
    expect(m.json.layers?.slice(0, 5).map((l) => l.digest)).toEqual(base.json.layers?.map((l) => l.digest));
    await verifyTree(registry.url, sixRepo, "v1");
  });

  test("joins two single-arch images into a manifest list and pushes it with --all", async () => {
    const platforms: (Platform & { key: string })[] = [
      { arch: "amd64", key: "linux/amd64" },
      { arch: "arm64", variant: "v8", key: "linux/arm64/v8" },
    ];
    const pushed: Record<string, { digest: string; id: string }> = {};
    for (const p of platforms) {
      const tag = `localhost/e2e/buildah-arch:${p.arch}`;
      const id = await build(tag, p, [
        { file: "/bin/busybox", dest: "/bin/busybox" },
        {
          file: file(`arch-${p.arch}`, `arch=${p.arch}\n${pseudoRandom(p.arch, 4096).toString("hex")}\n`),
          dest: "/etc/arch",
        },
      ]);
      pushed[p.key] = { id, digest: await push(tag, "e2e/buildah/arch", p.arch) };
    }

    const list = "localhost/e2e/buildah-list:v1";
    await buildah(["manifest", "create", list]);
    for (const p of platforms) {
      await buildah([
        "manifest",
        "add",
        "--tls-verify=false",
        list,
        `docker://${name("e2e/buildah/arch", p.arch)}`,
      ]);
    }
    const local = JSON.parse(await buildah(["manifest", "inspect", list])) as {
      manifests: { digest: string; platform: { architecture: string; variant?: string } }[];
    };
    expect(local.manifests.map((m) => m.digest)).toEqual(platforms.map((p) => pushed[p.key]!.digest));
    expect(local.manifests[1]!.platform).toMatchObject({ architecture: "arm64", variant: "v8" });

    const repo = "e2e/buildah/multi";
    const digestFile = path.join(tools.dir, "digest-multi");
    await buildah([
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
    expect(tree.platforms).toEqual(Object.fromEntries(platforms.map((p) => [p.key, pushed[p.key]!.digest])));

    // Each platform pulled back through the list is the image that was built for it.
    await buildah(["rmi", "--all", "--force"]);
    for (const p of platforms) {
      await buildah([
        "pull",
        "--tls-verify=false",
        "--signature-policy",
        tools.policy,
        "--arch",
        p.arch,
        ...(p.variant ? ["--variant", p.variant] : []),
        name(repo, "v1"),
      ]);
      expect(await imageId(name(repo, "v1"))).toBe(pushed[p.key]!.id);
    }

    // And skopeo copies the whole list back out unchanged.
    const out = tools.subdir("out-multi");
    await tools.skopeo([
      "copy",
      "--all",
      "--src-tls-verify=false",
      "--preserve-digests",
      `docker://${name(repo, "v1")}`,
      `oci:${out}:back`,
    ]);
    expect(layoutRef(out, "back").digest).toBe(digest);
    for (const p of platforms)
      expect(sha256(layoutBlob(out, pushed[p.key]!.digest))).toBe(pushed[p.key]!.digest);
  });

  test("pushes a manifest list whose instances are only in local storage", async () => {
    const list = "localhost/e2e/buildah-local-list:v1";
    const ids: Record<string, string> = {};
    await buildah(["manifest", "create", list]);
    for (const p of [{ arch: "amd64" }, { arch: "arm64", variant: "v8" }] as Platform[]) {
      const tag = `localhost/e2e/buildah-local:${p.arch}`;
      ids[p.arch] = await build(tag, p, [
        { file: "/bin/busybox", dest: "/bin/busybox" },
        { file: file(`local-${p.arch}`, `local ${p.arch}\n`), dest: "/etc/arch" },
      ]);
      await buildah(["manifest", "add", list, tag]);
    }
    const repo = "e2e/buildah/local-list";
    const digestFile = path.join(tools.dir, "digest-local-list");
    await buildah([
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
    expect(Object.keys(tree.platforms).sort()).toEqual(["linux/amd64", "linux/arm64/v8"]);
    for (const [key, arch] of [
      ["linux/amd64", "amd64"],
      ["linux/arm64/v8", "arm64"],
    ] as const) {
      const m = await getManifest(registry.url, repo, tree.platforms[key]!);
      expect(m.json.config?.digest).toBe(ids[arch]);
    }
  });
});
