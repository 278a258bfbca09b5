/**
 * Issue 12 with the real thing: Debian's docker-registry (Distribution 2.8.2) fills a directory through
 * skopeo and its own API (tags, a moved tag, a deleted manifest, a tag removed by hand, a layer deleted from
 * one repository, nested names, an empty link file, an upload left in progress); Berth, started on it with
 * only REGISTRY_* variables naming the directory, serves the same catalog, tag lists and image bytes; then
 * Berth pushes and deletes, and Distribution started again on the directory serves exactly what Berth did.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { CLI, startBerth, tempDir } from "../helpers/server.js";
import { headManifest, listTags } from "./clients/api.js";
import { ContainerTools } from "./clients/containers.js";
import {
  blobsOf,
  hex,
  type Image,
  type Index,
  layoutBlob,
  layoutRef,
  testImage,
  testMultiArch,
  topDigest,
  writeOciLayout,
} from "./clients/images.js";
import { startDistribution } from "./clients/registry.js";
import { cleanupAll, saveLogs } from "./clients/suite.js";

const exec = promisify(execFile);
const NO_TLS = ["--src-tls-verify=false", "--dest-tls-verify=false"];

interface Server {
  url: string;
  host: string;
  stop(): Promise<unknown>;
  cleanup(): Promise<void>;
  logs: string[];
}

let tools: ContainerTools;
let src: string;
let dataDir: string;
let storage: string;
const servers: Server[] = [];

const images: Record<string, Image | Index> = {
  one: testImage("adopt-one"),
  two: testImage("adopt-two"),
  three: testImage("adopt-three", { docker: true }),
  four: testImage("adopt-four", { docker: true }),
  multi: testMultiArch("adopt-multi"),
  nested: testImage("adopt-nested"),
  five: testImage("adopt-five"),
  six: testMultiArch("adopt-six"),
};

beforeAll(() => {
  tools = ContainerTools.create("berth-e2e-adopt-");
  src = tools.subdir("src");
  writeOciLayout(src, Object.fromEntries(Object.entries(images).filter(([, a]) => a.kind === "index")));
  for (const [name, a] of Object.entries(images))
    if (a.kind === "image") writeDirImage(path.join(src, "dirs", name), a);
  dataDir = tempDir("berth-e2e-adopt-data-");
  storage = path.join(dataDir, "storage");
});

afterAll(async () => {
  await cleanupAll(
    ...servers.map((s) => () => s.cleanup()),
    () => tools?.cleanup(),
    () => rmSync(dataDir, { recursive: true, force: true }),
  );
});

/** skopeo's dir: transport keeps a manifest's bytes whatever its format (Docker schema2 too). */
function writeDirImage(dir: string, image: Image): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "version"), "Directory Transport Version: 1.1\n");
  writeFileSync(path.join(dir, "manifest.json"), image.manifest.data);
  for (const b of [image.config, ...image.layers]) writeFileSync(path.join(dir, hex(b.digest)), b.data);
}

async function copyIn(server: Server, ref: string, repo: string, tag: string): Promise<void> {
  const artifact = images[ref]!;
  const from = artifact.kind === "index" ? `oci:${src}:${ref}` : `dir:${path.join(src, "dirs", ref)}`;
  await tools.skopeo([
    "copy",
    "--all",
    "--preserve-digests",
    ...NO_TLS,
    from,
    `docker://${server.host}/${repo}:${tag}`,
  ]);
}

/** Pulls repo:tag with skopeo and checks every byte against the image it should be; null when it cannot be pulled. */
async function pull(server: Server, repo: string, tag: string): Promise<string | null> {
  const out = tools.subdir(`pull-${Math.random().toString(36).slice(2)}`);
  const head = await headManifest(server.url, repo, tag);
  if (head.status !== 200 || !head.digest) return null;
  const artifact = Object.values(images).find((a) => topDigest(a) === head.digest);
  expect(artifact, `${repo}:${tag} is an unknown image ${head.digest}`).toBeDefined();
  const index = artifact!.kind === "index";
  try {
    await tools.skopeo([
      "copy",
      "--all",
      "--preserve-digests",
      ...NO_TLS,
      `docker://${server.host}/${repo}:${tag}`,
      index ? `oci:${out}:x` : `dir:${out}`,
    ]);
  } catch {
    return null;
  }
  const read = (digest: string) =>
    index
      ? layoutBlob(out, digest)
      : readFileSync(path.join(out, digest === head.digest ? "manifest.json" : hex(digest)));
  if (index) expect(layoutRef(out, "x").digest).toBe(head.digest);
  for (const b of blobsOf(artifact!))
    expect(read(b.digest).equals(b.data), `${repo}:${tag} ${b.digest}`).toBe(true);
  rmSync(out, { recursive: true, force: true });
  return head.digest;
}

async function catalog(server: Server): Promise<string[]> {
  const res = await fetch(`${server.url}/v2/_catalog`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { repositories: string[] }).repositories;
}

/** Catalog, every tag list, and what each tag pulls as (digest, or null when it cannot be pulled). */
async function snapshot(server: Server): Promise<Record<string, Record<string, string | null>>> {
  const out: Record<string, Record<string, string | null>> = {};
  for (const repo of await catalog(server)) {
    out[repo] = {};
    for (const tag of await listTags(server.url, repo)) out[repo][tag] = await pull(server, repo, tag);
  }
  return out;
}

const repoDir = (repo: string) =>
  path.join(storage, "docker", "registry", "v2", "repositories", ...repo.split("/"));
const digestOf = (name: string) => topDigest(images[name]!);

describe("a registry:2 directory, adopted by Berth and handed back", () => {
  let before: Record<string, Record<string, string | null>>;
  let afterBerth: Record<string, Record<string, string | null>>;
  let emptyLink: string;
  let upload: string;

  test("Distribution 2.8 fills the directory through real clients", async () => {
    const distribution = await startDistribution({ dataDir });
    servers.push(distribution);
    await copyIn(distribution, "one", "app/web", "v1");
    await copyIn(distribution, "one", "app/web", "latest");
    await copyIn(distribution, "two", "app/web", "v2");
    await copyIn(distribution, "two", "app/web", "latest"); // a tag moved to another image
    await copyIn(distribution, "four", "app/db", "old");
    await copyIn(distribution, "three", "app/db", "latest");
    await copyIn(distribution, "three", "app/db", "tmp");
    await copyIn(distribution, "multi", "app/multi", "latest");
    await copyIn(distribution, "multi", "app/multi", "1");
    await copyIn(distribution, "nested", "a/b/c", "1.0");
    await copyIn(distribution, "nested", "a/b/c", "stable");
    await copyIn(distribution, "one", "a/b", "base");
    // A deleted manifest (with its tag).
    await tools.skopeo(["delete", "--tls-verify=false", `docker://${distribution.host}/app/db:old`]);
    // A deleted tag: Distribution 2.8 has no API for it (DELETE by tag is refused), so by hand, as people do.
    rmSync(path.join(repoDir("app/db"), "_manifests", "tags", "tmp"), { recursive: true });
    // A layer deleted from one repository (it stays in app/web).
    const one = images.one as Image;
    const layer = one.layers[one.layers.length - 1]!.digest;
    expect((await fetch(`${distribution.url}/v2/a/b/blobs/${layer}`, { method: "DELETE" })).status).toBe(202);
    // An upload left in progress.
    const started = await fetch(`${distribution.url}/v2/app/web/blobs/uploads/`, { method: "POST" });
    expect(started.status).toBe(202);
    const patched = await fetch(new URL(started.headers.get("location")!, distribution.url), {
      method: "PATCH",
      body: Buffer.alloc(1000, 1),
      headers: { "content-type": "application/octet-stream" },
    });
    expect(patched.status).toBe(202);
    upload = path.join(repoDir("app/web"), "_uploads", started.headers.get("docker-upload-uuid")!);
    expect(existsSync(upload)).toBe(true);
    // An empty link file, as Distribution 2.8 leaves after a crash: the arm64 image's own layer in app/multi.
    const arm = (images.multi as Index).images[1]!;
    emptyLink = path.join(repoDir("app/multi"), "_layers", "sha256", hex(arm.layers[2]!.digest), "link");
    truncateSync(emptyLink, 0);

    before = await snapshot(distribution);
    expect(before).toEqual({
      "a/b": { base: null },
      "a/b/c": { "1.0": digestOf("nested"), stable: digestOf("nested") },
      "app/db": { latest: digestOf("three") },
      "app/multi": { "1": null, latest: null },
      "app/web": { latest: digestOf("two"), v1: digestOf("one"), v2: digestOf("two") },
    });
    await distribution.stop();
  });

  test("Berth started on it with only REGISTRY_* variables serves the same catalog, tags and bytes", async () => {
    const berth = await startBerth({
      dataDir: storage,
      dataDirViaEnv: true,
      captureLogs: true,
      env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" },
    });
    servers.push(berth);
    expect(await snapshot(berth)).toEqual(before);
    // The amd64 image of the index whose arm64 layer link is empty still pulls from both, by digest.
    const amd = (images.multi as Index).images[0]!;
    expect((await headManifest(berth.url, "app/multi", amd.manifest.digest)).status).toBe(200);
    const logs = berth.logs.join("\n");
    expect(logs).toContain(`empty-link: ${emptyLink}`);
    expect(logs).toContain(`upload: ${upload}`);
    expect(existsSync(upload)).toBe(false);

    // Berth pushes, moves a tag, deletes a tag, a manifest and a repository.
    await copyIn(berth, "five", "app/web", "v3");
    await copyIn(berth, "five", "app/web", "v1");
    await copyIn(berth, "six", "new/multi", "1");
    expect((await fetch(`${berth.url}/v2/app/web/manifests/latest`, { method: "DELETE" })).status).toBe(202);
    await tools.skopeo(["delete", "--tls-verify=false", `docker://${berth.host}/app/db:latest`]);
    await exec(process.execPath, [CLI, "repo", "rm", "a/b/c"], {
      env: {
        ...process.env,
        REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: storage,
        REGISTRY_STORAGE_DELETE_ENABLED: "true",
      },
    });
    // app/db has no manifest left: registry:2 would still list it while its blob links (_layers) exist, and
    // those go when the collector removes them (here at once: no grace period).
    await exec(process.execPath, [CLI, "gc", "--grace-period", "0s"], {
      env: { ...process.env, REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: storage },
    });
    expect(existsSync(path.join(repoDir("app/db"), "_layers"))).toBe(false);
    afterBerth = await snapshot(berth);
    expect(afterBerth).toEqual({
      "a/b": { base: null },
      "app/multi": { "1": null, latest: null },
      "app/web": { v1: digestOf("five"), v2: digestOf("two"), v3: digestOf("five") },
      "new/multi": { "1": digestOf("six") },
    });
    await berth.stop();
    saveLogs(Object.assign(berth, { target: "berth" as const }), "adopt-distribution");
  });

  test("Distribution started again serves every image Berth holds and none that Berth deleted", async () => {
    const distribution = await startDistribution({ dataDir });
    servers.push(distribution);
    expect(await snapshot(distribution)).toEqual(afterBerth);
    for (const [repo, ref] of [
      ["app/web", "latest"],
      ["app/db", digestOf("three")],
      ["app/db", digestOf("four")],
      ["a/b/c", digestOf("nested")],
    ] as const) {
      expect((await headManifest(distribution.url, repo, ref)).status, `${repo}:${ref}`).toBe(404);
    }
    await distribution.stop();
    expect(
      readFileSync(path.join(repoDir("app/web"), "_manifests", "tags", "v1", "current", "link"), "utf8"),
    ).toBe(digestOf("five"));
  });
});
