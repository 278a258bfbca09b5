/**
 * Adoption of a registry:2 data directory (issue 12), on trees written file by file the way Distribution
 * lays them out (bench/lib/distribution-tree.mjs): what is adopted, what is reported, --dry-run, adopting
 * twice, a kill -9 in the middle, and the link files Berth keeps in step afterwards.
 * The same with Distribution itself filling the directory is test/e2e/adopt-distribution.test.ts.
 * Run by both projects: the rows go to SQLite or to PostgreSQL (test/helpers/metadata-db.ts).
 */
import { execFile, spawn } from "node:child_process";
import { cpSync, existsSync, readFileSync, rmSync, truncateSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import SQLite from "better-sqlite3";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
// @ts-expect-error: a plain ES module shared with the benchmark
import { DistributionTree, sha256, writeSyntheticTree } from "../../bench/lib/distribution-tree.mjs";
import { openTestDb } from "../helpers/metadata-db.js";
import { RegistryClient } from "../helpers/registry.js";
import { CLI, databaseEnv, freePort, startBerth, TEST_DB, tempDir } from "../helpers/server.js";

const run = promisify(execFile);
const cleanups: (() => void | Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

function dir(): string {
  const d = tempDir("berth-adopt-");
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

interface Fixture {
  root: string;
  tree: DistributionTree;
  digests: Record<string, string>;
  paths: Record<string, string>;
}

/** Repositories with tags, an index, nested names, and each thing Distribution can leave behind. */
async function fixture(): Promise<Fixture> {
  const root = dir();
  const tree = new DistributionTree(root);
  const layer = (seed: string) => {
    const data = Buffer.from(`layer ${seed} `.repeat(50));
    return { data, digest: sha256(data), size: data.length };
  };
  const l1 = layer("one");
  const l2 = layer("two");
  for (const l of [l1, l2]) await tree.blob(l.data);
  const d: Record<string, string> = {};
  d.a = await tree.image("library/alpine", "a", [l1], ["latest", "3.19"]);
  d.b = await tree.image("library/alpine", "b", [l1, l2], ["old"]);
  d.c = await tree.image("library/alpine", "c", [l2]);
  d.abc = await tree.image("a/b/c", "abc", [l1], ["v1"]);
  d.ab = await tree.image("a/b", "ab", [l2], ["x"]);
  // A multi-arch image: an index of two manifests.
  const amd = await tree.image("multi", "amd", [l1]);
  const arm = await tree.image("multi", "arm", [l2]);
  const manifestBytes = (digest: string) => readFileSync(tree.blobPath(digest));
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.docker.distribution.manifest.list.v2+json",
      manifests: [
        {
          mediaType: "application/vnd.docker.distribution.manifest.v2+json",
          digest: amd,
          size: manifestBytes(amd).length,
          platform: { architecture: "amd64", os: "linux" },
        },
        {
          mediaType: "application/vnd.docker.distribution.manifest.v2+json",
          digest: arm,
          size: manifestBytes(arm).length,
          platform: { architecture: "arm64", os: "linux" },
        },
      ],
    }),
  );
  d.index = await tree.blob(index);
  await tree.link("multi", "revision", d.index);
  await tree.tag("multi", "latest", d.index);
  // Folders starting with "_" are not repositories, however deep.
  await tree.image("_private/hidden", "hidden", [l1], ["latest"]);

  const p: Record<string, string> = {};
  // An empty link (Distribution 2.8 crashed while writing it).
  const extra = await tree.blob(Buffer.from("extra blob"));
  await tree.link("library/alpine", "layer", extra);
  p.empty = tree.linkPath("library/alpine", "layer", extra);
  truncateSync(p.empty, 0);
  // A link to a blob that is not there.
  d.missing = sha256("never stored");
  await tree.link("library/alpine", "layer", d.missing);
  p.missing = tree.linkPath("library/alpine", "layer", d.missing);
  // A manifest that does not parse, one that does not hash to its name, a schema1 manifest.
  d.notJson = await tree.blob(Buffer.from("this is not json"));
  await tree.link("broken", "revision", d.notJson);
  p.notJson = tree.linkPath("broken", "revision", d.notJson);
  d.mismatch = sha256("what the name says");
  await tree.blob(readFileSync(tree.blobPath(d.a)), d.mismatch);
  await tree.link("broken", "revision", d.mismatch);
  p.mismatch = tree.linkPath("broken", "revision", d.mismatch);
  d.schema1 = await tree.blob(
    Buffer.from(
      JSON.stringify({ schemaVersion: 1, name: "broken", tag: "old", architecture: "amd64", fsLayers: [] }),
    ),
  );
  await tree.link("broken", "revision", d.schema1);
  p.schema1 = tree.linkPath("broken", "revision", d.schema1);
  // A tag on a manifest that cannot be adopted.
  await tree.tag("broken", "gone", d.notJson);
  p.dangling = tree.tagLinkPath("broken", "gone");
  // An upload in progress.
  p.upload = path.join(tree.repoDir("library/alpine"), "_uploads", "0b7e5a3c-1d2e-4f50-9a6b-7c8d9e0f1a2b");
  await tree.file(path.join(p.upload, "data"), Buffer.from("half a layer"));
  await tree.file(path.join(p.upload, "startedat"), "2024-01-01T00:00:00Z");
  return { root, tree, digests: d, paths: p };
}

/** Runs the CLI on the database of the data directory `root` (SQLite inside it, or its PostgreSQL database). */
async function cli(root: string, ...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [CLI, ...args], {
    maxBuffer: 64 * 1024 * 1024,
    // `berth repo rm` below deletes: deletes are off unless enabled.
    env: { ...process.env, ...(await databaseEnv(root)), REGISTRY_STORAGE_DELETE_ENABLED: "true" },
  });
  return stdout;
}

// biome-ignore lint/suspicious/noExplicitAny: registry JSON bodies of several shapes
async function json(client: RegistryClient, url: string): Promise<any> {
  const res = await client.fetch(url);
  expect(res.status, url).toBe(200);
  return res.json();
}

/** Everything adoption writes, without times or ids, for comparing two databases. */
async function dump(root: string): Promise<Record<string, string[]>> {
  const db = await openTestDb(root);
  try {
    const rows = async (q: string) =>
      (await db.all<Record<string, unknown>>(q))
        .map((r) =>
          JSON.stringify(
            Object.values(r).map((v) =>
              v instanceof Uint8Array
                ? Buffer.from(v).toString("hex")
                : typeof v === "bigint"
                  ? Number(v)
                  : v,
            ),
          ),
        )
        .sort();
    return {
      repositories: await rows("select name from repositories"),
      blobs: await rows("select digest, size from blobs"),
      links: await rows(
        "select r.name, x.digest from repository_blobs x join repositories r on r.id = x.repository_id",
      ),
      manifests: await rows(
        "select r.name, m.digest, m.media_type, m.size, m.content, m.subject, m.config_digest, m.artifact_type from manifests m join repositories r on r.id = m.repository_id",
      ),
      manifestBlobs: await rows(
        "select r.name, x.manifest_digest, x.blob_digest from manifest_blobs x join repositories r on r.id = x.repository_id",
      ),
      children: await rows(
        "select r.name, x.parent_digest, x.child_digest from manifest_children x join repositories r on r.id = x.repository_id",
      ),
      tags: await rows(
        "select r.name, t.name, t.digest from tags t join repositories r on r.id = t.repository_id",
      ),
      state: await rows("select adoption, links from distribution_state"),
    };
  } finally {
    await db.close();
  }
}

/** Manifests committed so far by a running adoption (0 while the database or its tables do not exist). */
async function manifestCount(root: string): Promise<number> {
  if (TEST_DB === "postgres") {
    const client = new pg.Client({ connectionString: (await databaseEnv(root)).REGISTRY_DATABASE_URL });
    try {
      await client.connect();
      return Number((await client.query("select count(*) as n from manifests")).rows[0].n);
    } catch {
      return 0;
    } finally {
      await client.end().catch(() => {});
    }
  }
  const dbFile = path.join(root, "berth", "berth.db");
  if (!existsSync(dbFile)) return 0;
  try {
    const db = new SQLite(dbFile, { readonly: true, timeout: 1000 });
    try {
      return (db.prepare("select count(*) as n from manifests").get() as { n: number }).n;
    } finally {
      db.close();
    }
  } catch {
    return 0;
  }
}

describe("adopting a registry:2 directory", () => {
  it("--dry-run reports what would be adopted and what is wrong, and writes nothing", async () => {
    const f = await fixture();
    const report = JSON.parse(await cli(f.root, "import", f.root, "--dry-run", "--json"));
    expect(report.dryRun).toBe(true);
    expect(report.repositories).toBe(5); // library/alpine, a/b, a/b/c, multi, broken
    expect(report.manifests).toBe(8);
    expect(report.tags).toBe(6);
    const problems = Object.fromEntries(
      report.problems.map((p: { kind: string; path: string }) => [p.path, p.kind]),
    );
    expect(problems).toEqual({
      [f.paths.empty]: "empty-link",
      [f.paths.missing]: "missing-blob",
      [f.paths.notJson]: "invalid-manifest",
      [f.paths.mismatch]: "digest-mismatch",
      [f.paths.schema1]: "schema1",
      [f.paths.dangling]: "dangling-tag",
      [f.paths.upload]: "upload",
    });
    expect(existsSync(path.join(f.root, "berth"))).toBe(false);
    expect(existsSync(f.paths.upload)).toBe(true);
    const text = await cli(f.root, "import", f.root, "--dry-run");
    expect(text).toContain("would adopt 5 repositories, 8 manifests, 6 tags");
    expect(text).toContain(`empty-link: ${f.paths.empty}`);
  });

  it("berth serve adopts at start-up and serves every image; a second start adopts nothing", async () => {
    const f = await fixture();
    const berth = await startBerth({ dataDir: f.root, captureLogs: true });
    cleanups.push(() => berth.cleanup());
    const client = new RegistryClient(berth.url);
    const catalog = await json(client, "/v2/_catalog");
    expect(catalog.repositories).toEqual(["a/b", "a/b/c", "library/alpine", "multi"]);
    expect((await json(client, "/v2/library/alpine/tags/list")).tags).toEqual(["3.19", "latest", "old"]);
    expect((await json(client, "/v2/a/b/c/tags/list")).tags).toEqual(["v1"]);
    expect((await json(client, "/v2/multi/tags/list")).tags).toEqual(["latest"]);
    // Byte for byte, by tag and by digest, with the media type Distribution stored.
    for (const [repo, ref, digest] of [
      ["library/alpine", "latest", f.digests.a],
      ["library/alpine", "old", f.digests.b],
      ["library/alpine", f.digests.c, f.digests.c],
      ["multi", "latest", f.digests.index],
    ] as const) {
      const res = await client.fetch(`/v2/${repo}/manifests/${ref}`);
      expect(res.status).toBe(200);
      expect(res.headers.get("docker-content-digest")).toBe(digest);
      expect(Buffer.from(await res.arrayBuffer()).equals(readFileSync(f.tree.blobPath(digest)))).toBe(true);
    }
    const manifest = JSON.parse(readFileSync(f.tree.blobPath(f.digests.b), "utf8"));
    for (const d of [manifest.config.digest, ...manifest.layers.map((l: { digest: string }) => l.digest)]) {
      const res = await client.fetch(`/v2/library/alpine/blobs/${d}`);
      expect(res.status).toBe(200);
      expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(d);
    }
    // Links that were broken stay unknown, as with Distribution.
    expect((await client.fetch(`/v2/library/alpine/blobs/${f.digests.missing}`)).status).toBe(404);
    expect((await client.fetch("/v2/broken/manifests/gone")).status).toBe(404);
    // The log names each problem with its path; the upload is gone.
    const logs = berth.logs.join("\n");
    expect(logs).toContain("adopted 5 repositories, 8 manifests, 6 tags");
    for (const p of Object.values(f.paths)) expect(logs).toContain(p);
    expect(existsSync(f.paths.upload)).toBe(false);

    const before = await dump(f.root);
    expect(before.state).toEqual([JSON.stringify(["done", "on"])]);
    await berth.stop();
    const again = await startBerth({ dataDir: f.root, captureLogs: true });
    cleanups.push(() => again.cleanup());
    expect(again.logs.join("\n")).not.toContain("adopting");
    expect((await json(new RegistryClient(again.url), "/v2/_catalog")).repositories).toEqual(
      catalog.repositories,
    );
    await again.stop();
    expect(await dump(f.root)).toEqual(before);
    expect(await cli(f.root, "import", f.root)).toContain("was adopted already");
    expect(await dump(f.root)).toEqual(before);
  });

  it("berth import adopts from the command line, with the same result as berth serve", async () => {
    const f = await fixture();
    const copy = dir();
    cpSync(f.root, copy, { recursive: true });
    const text = await cli(f.root, "import", f.root);
    expect(text).toContain("adopted 5 repositories, 8 manifests, 6 tags");
    expect(text).toContain(`upload: ${f.paths.upload}`);
    const berth = await startBerth({ dataDir: copy });
    await berth.stop();
    expect(await dump(f.root)).toEqual(await dump(copy));
  });

  it("a kill -9 during adoption: the next start finishes it with the same rows as an uninterrupted run", async () => {
    const root = dir();
    await writeSyntheticTree(root, { repositories: 300, manifestsPerRepository: 4 });
    const reference = dir();
    cpSync(root, reference, { recursive: true });
    const env = { BERTH_ADOPT_BATCH_ROWS: "200" };
    // Started by hand: it does not listen before adoption is done, and is killed before that.
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [CLI, "serve", "--addr", `127.0.0.1:${port}`, "--data-dir", root, "--workers", "1"],
      { env: { ...process.env, ...(await databaseEnv(root)), ...env }, stdio: "ignore", detached: true },
    );
    const exited = new Promise((resolve) => child.on("exit", resolve));
    // Wait until some batches are committed, then kill it in the middle.
    const deadline = Date.now() + 60_000;
    let partial = 0;
    while (Date.now() < deadline && child.exitCode === null) {
      partial = await manifestCount(root);
      if (partial > 0) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    process.kill(-child.pid!, "SIGKILL");
    await exited;
    expect(partial).toBeGreaterThan(0);
    expect(partial).toBeLessThan(1200);
    expect((await dump(root)).state).toEqual([JSON.stringify(["running", "off"])]);

    const resumed = await startBerth({ dataDir: root, env, captureLogs: true });
    cleanups.push(() => resumed.cleanup());
    expect(resumed.logs.join("\n")).toContain("the last adoption was interrupted");
    await resumed.stop();
    const uninterrupted = await startBerth({ dataDir: reference, env });
    await uninterrupted.stop();
    const a = await dump(root);
    const b = await dump(reference);
    expect(a.manifests.length).toBe(1200);
    expect(a).toEqual(b);
  });
});

describe("going back: Berth keeps registry:2's link files in step", () => {
  it("writes and removes links as it pushes, tags and deletes, and applies what a crash left behind", async () => {
    const f = await fixture();
    const berth = await startBerth({ dataDir: f.root, env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
    cleanups.push(() => berth.cleanup());
    const client = new RegistryClient(berth.url);
    const repo = "library/alpine";
    const pushed = await client.pushImage(repo, "new");
    const link = (file: string) => (existsSync(file) ? readFileSync(file, "utf8") : null);
    expect(link(f.tree.tagLinkPath(repo, "new"))).toBe(pushed.digest);
    expect(link(f.tree.linkPath(repo, "revision", pushed.digest))).toBe(pushed.digest);
    for (const b of [pushed.config, ...pushed.layers])
      expect(link(f.tree.linkPath(repo, "layer", b.digest))).toBe(b.digest);
    // A tag moved to another image.
    expect((await client.putManifest(repo, "latest", pushed.manifest)).status).toBe(201);
    expect(link(f.tree.tagLinkPath(repo, "latest"))).toBe(pushed.digest);
    // A tag deleted, a manifest deleted (with its tag), a blob link deleted.
    expect((await client.fetch(`/v2/${repo}/manifests/3.19`, { method: "DELETE" })).status).toBe(202);
    expect(existsSync(path.dirname(path.dirname(f.tree.tagLinkPath(repo, "3.19"))))).toBe(false);
    expect((await client.fetch(`/v2/${repo}/manifests/${f.digests.b}`, { method: "DELETE" })).status).toBe(
      202,
    );
    expect(link(f.tree.linkPath(repo, "revision", f.digests.b))).toBeNull();
    expect(existsSync(path.dirname(path.dirname(f.tree.tagLinkPath(repo, "old"))))).toBe(false);
    const layer = pushed.layers[0]!.digest;
    expect((await client.fetch(`/v2/${repo}/blobs/${layer}`, { method: "DELETE" })).status).toBe(202);
    expect(link(f.tree.linkPath(repo, "layer", layer))).toBeNull();
    // A new nested repository, then a deleted repository (its nested neighbour stays).
    const nested = await client.pushImage("a/b/c/d", "one");
    expect(link(f.tree.tagLinkPath("a/b/c/d", "one"))).toBe(nested.digest);
    await berth.stop();
    expect(await cli(f.root, "repo", "rm", "a/b", "--data-dir", f.root)).toContain("removed repository a/b");

    // A change committed but not written to the links (as after a crash between the two): applied at start.
    const db = await openTestDb(f.root);
    await db.run("delete from tags where name = 'x'");
    await db.run(
      "delete from tags where name = 'v1' and repository_id = (select id from repositories where name = 'a/b/c')",
    );
    await db.close();
    const restarted = await startBerth({ dataDir: f.root });
    cleanups.push(() => restarted.cleanup());
    expect(existsSync(path.join(f.tree.repoDir("a/b"), "_manifests"))).toBe(false);
    expect(existsSync(path.join(f.tree.repoDir("a/b/c"), "_manifests", "revisions"))).toBe(true);
    expect(existsSync(path.dirname(path.dirname(f.tree.tagLinkPath("a/b/c", "v1"))))).toBe(false);
    await restarted.stop();
    const state = await openTestDb(f.root);
    expect(
      Number((await state.get<{ n: number }>("select count(*) as n from distribution_journal"))?.n),
    ).toBe(0);
    await state.close();
  });

  it("a new directory writes no link files unless storage.filesystem.distributionlinks is on", async () => {
    const plain = await startBerth();
    cleanups.push(() => plain.cleanup());
    await new RegistryClient(plain.url).pushImage("x/y", "t");
    expect(existsSync(path.join(plain.dataDir, "docker", "registry", "v2", "repositories"))).toBe(false);
    await plain.stop();

    const root = dir();
    const on = await startBerth({
      dataDir: root,
      env: { REGISTRY_STORAGE_FILESYSTEM_DISTRIBUTIONLINKS: "true" },
    });
    cleanups.push(() => on.cleanup());
    const pushed = await new RegistryClient(on.url).pushImage("x/y", "t");
    const tree = new DistributionTree(root);
    expect(readFileSync(tree.tagLinkPath("x/y", "t"), "utf8")).toBe(pushed.digest);
    await on.stop();
    // Its own links are never adopted as registry:2 data on the next start.
    const again = await startBerth({
      dataDir: root,
      env: { REGISTRY_STORAGE_FILESYSTEM_DISTRIBUTIONLINKS: "true" },
      captureLogs: true,
    });
    cleanups.push(() => again.cleanup());
    expect(again.logs.join("\n")).not.toContain("adopting");
    await again.stop();
    // Switched off, a tag deleted and another pushed; switched on again: the links say what the rows say.
    const off = await startBerth({
      dataDir: root,
      env: {
        REGISTRY_STORAGE_FILESYSTEM_DISTRIBUTIONLINKS: "false",
        REGISTRY_STORAGE_DELETE_ENABLED: "true",
      },
    });
    cleanups.push(() => off.cleanup());
    const offClient = new RegistryClient(off.url);
    expect((await offClient.fetch(`/v2/x/y/manifests/${pushed.digest}`, { method: "DELETE" })).status).toBe(
      202,
    );
    const later = await offClient.pushImage("x/y", "later");
    await off.stop();
    expect(readFileSync(tree.tagLinkPath("x/y", "t"), "utf8")).toBe(pushed.digest);
    expect(existsSync(tree.tagLinkPath("x/y", "later"))).toBe(false);
    const on2 = await startBerth({
      dataDir: root,
      env: { REGISTRY_STORAGE_FILESYSTEM_DISTRIBUTIONLINKS: "true" },
    });
    cleanups.push(() => on2.cleanup());
    await on2.stop();
    expect(existsSync(tree.tagLinkPath("x/y", "t"))).toBe(false);
    expect(existsSync(tree.linkPath("x/y", "revision", pushed.digest))).toBe(false);
    expect(readFileSync(tree.tagLinkPath("x/y", "later"), "utf8")).toBe(later.digest);
  });
});
