/**
 * `berth db migrate-to postgres://...`: a registry run on SQLite moves to PostgreSQL with everything
 * it holds (images, tags, referrers, an upload in progress), and keeps working there. Runs in the
 * `sqlite` project (the source is SQLite whatever BERTH_TEST_DB says).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import SQLite from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
// @ts-expect-error: a plain ES module shared with the benchmark
import { DistributionTree, sha256 } from "../../bench/lib/distribution-tree.mjs";
import {
  ensureDatabase,
  type PostgresServer,
  sharedPostgresUrl,
  startPostgres,
} from "../helpers/postgres.js";
import { RegistryClient, randomBlob } from "../helpers/registry.js";
import { CLI, startBerth, TEST_DB, tempDir } from "../helpers/server.js";

function berthCli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 120_000 });
}

describe.skipIf(TEST_DB === "postgres")("berth db migrate-to", () => {
  let own: PostgresServer | null = null;
  let base: string;
  let dir: string;

  beforeAll(async () => {
    const shared = sharedPostgresUrl();
    if (shared) base = shared;
    else {
      own = await startPostgres();
      base = own.url("postgres");
    }
    dir = tempDir("berth-db-migrate-");
  });
  afterAll(async () => {
    await own?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("copies every table, verifies counts, prints the configuration, and Berth runs on the copy", async () => {
    // 1. A registry on SQLite with content.
    const sqliteBerth = await startBerth({ dataDir: dir, env: { REGISTRY_DATABASE_URL: "" } });
    let client = new RegistryClient(sqliteBerth.url);
    const images = [];
    for (let i = 0; i < 5; i++) images.push(await client.pushImage(`migrate/app-${i % 2}`, `v${i}`));
    const partial = randomBlob(50_000);
    const start = await client.fetch("/v2/migrate/app-0/blobs/uploads/", { method: "POST" });
    const at = new URL(start.headers.get("location")!, sqliteBerth.url);
    const location = at.pathname + at.search; // the next server listens on another port
    const patch = await client.fetch(location, {
      method: "PATCH",
      body: partial.data.subarray(0, 20_000),
      headers: { "content-range": "0-19999" },
    });
    expect(patch.status).toBe(202);
    await sqliteBerth.stop();

    // 2. Copy.
    const url = await ensureDatabase(base, `migrate_${process.pid}_${Date.now().toString(36)}`);
    const bad = berthCli(["db", "migrate-to", "mysql://nope/db", "--data-dir", dir]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/not a PostgreSQL URL/);
    const done = berthCli(["db", "migrate-to", url, "--data-dir", dir]);
    expect(done.stderr).toBe("");
    expect(done.status).toBe(0);
    expect(done.stdout).toMatch(/repositories\s+2 rows \(counts match\)/);
    expect(done.stdout).toMatch(/tags\s+5 rows/);
    expect(done.stdout).toMatch(/uploads\s+1 rows/);
    expect(done.stdout).toContain(`url: ${url}`);
    expect(done.stdout).toContain("REGISTRY_DATABASE_URL=");

    // A second run refuses: the target is no longer empty.
    const again = berthCli(["db", "migrate-to", url, "--data-dir", dir]);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/not empty/);

    // 3. Berth on PostgreSQL with the same blobs: everything pulls, the upload continues, pushes work.
    const pgBerth = await startBerth({ dataDir: dir, env: { REGISTRY_DATABASE_URL: url } });
    try {
      client = new RegistryClient(pgBerth.url);
      for (let i = 0; i < 5; i++) {
        const res = await client.fetch(`/v2/migrate/app-${i % 2}/manifests/v${i}`, {
          headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
        });
        expect(res.status).toBe(200);
        expect(res.headers.get("docker-content-digest")).toBe(images[i]!.digest);
        const layer = images[i]!.layers[0]!;
        const blob = await client.fetch(`/v2/migrate/app-${i % 2}/blobs/${layer.digest}`);
        expect(Buffer.from(await blob.arrayBuffer()).equals(layer.data)).toBe(true);
      }
      const status = await client.fetch(location);
      expect(status.status).toBe(204);
      expect(status.headers.get("range")).toBe("0-19999");
      const finish = await client.fetch(
        `${location}${location.includes("?") ? "&" : "?"}digest=${partial.digest}`,
        {
          method: "PUT",
          body: partial.data.subarray(20_000),
          headers: { "content-range": `20000-${partial.size - 1}` },
        },
      );
      expect(finish.status).toBe(201);
      // A new repository gets an id after the copied ones (the sequence was moved on).
      await client.pushImage("migrate/new", "v1");
      const catalog = (await (await client.fetch("/v2/_catalog")).json()) as { repositories: string[] };
      expect(catalog.repositories).toEqual(["migrate/app-0", "migrate/app-1", "migrate/new"]);
    } finally {
      await pgBerth.stop();
    }
  });
  it("an adopted registry:2 directory stays adopted, and keeps its link files, on PostgreSQL", async () => {
    // 1. A registry:2 directory adopted on SQLite (link files on), with a journal row a crash left behind.
    const root = tempDir("berth-db-migrate-adopted-");
    try {
      const tree = new DistributionTree(root);
      const data = Buffer.from("a layer registry:2 stored ".repeat(40));
      await tree.blob(data);
      const legacy = await tree.image(
        "legacy/app",
        "old",
        [{ data, digest: sha256(data), size: data.length }],
        ["v1", "v2"],
      );
      const sqliteBerth = await startBerth({ dataDir: root, env: { REGISTRY_DATABASE_URL: "" } });
      const pushed = await new RegistryClient(sqliteBerth.url).pushImage("legacy/app", "sqlite");
      await sqliteBerth.stop();
      expect(readFileSync(tree.tagLinkPath("legacy/app", "sqlite"), "utf8")).toBe(pushed.digest);
      const file = new SQLite(path.join(root, "berth", "berth.db"));
      file
        .prepare(
          "insert into distribution_journal (repository, kind, key) values ('legacy/app', 'tag', 'gone')",
        )
        .run();
      file.close();
      await tree.tag("legacy/app", "gone", legacy); // the journal row says: this link must go

      // 2. Copy: the adoption state and the journal go too.
      const url = await ensureDatabase(base, `migrate_adopted_${process.pid}_${Date.now().toString(36)}`);
      const done = berthCli(["db", "migrate-to", url, "--data-dir", root]);
      expect(done.stderr).toBe("");
      expect(done.status).toBe(0);
      expect(done.stdout).toMatch(/distribution_state\s+1 rows/);
      expect(done.stdout).toMatch(/distribution_journal\s+1 rows/);

      // 3. On PostgreSQL: not adopted again; the left-over row applied; pushes and deletes keep the links.
      const pgBerth = await startBerth({
        dataDir: root,
        env: { REGISTRY_DATABASE_URL: url, REGISTRY_STORAGE_DELETE_ENABLED: "true" },
        captureLogs: true,
      });
      try {
        expect(pgBerth.logs.join("\n")).not.toContain("adopting");
        expect(existsSync(tree.tagLinkPath("legacy/app", "gone"))).toBe(false);
        const client = new RegistryClient(pgBerth.url);
        const again = await client.pushImage("legacy/app", "postgres");
        expect(readFileSync(tree.tagLinkPath("legacy/app", "postgres"), "utf8")).toBe(again.digest);
        expect(readFileSync(tree.linkPath("legacy/app", "revision", again.digest), "utf8")).toBe(
          again.digest,
        );
        expect((await client.fetch("/v2/legacy/app/manifests/v2", { method: "DELETE" })).status).toBe(202);
        expect(existsSync(tree.tagLinkPath("legacy/app", "v2"))).toBe(false);
        expect(readFileSync(tree.tagLinkPath("legacy/app", "v1"), "utf8")).toBe(legacy);
      } finally {
        await pgBerth.stop();
      }
      const check = new pg.Client({ connectionString: url });
      await check.connect();
      try {
        const state = await check.query("select adoption, links from distribution_state");
        expect(state.rows).toEqual([{ adoption: "done", links: "on" }]);
        const journal = await check.query("select count(*)::int as n from distribution_journal");
        expect(journal.rows[0].n).toBe(0);
      } finally {
        await check.end();
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("refuses while berth serve takes pushes on the source database, naming it; copies once it has stopped, or runs read-only", async () => {
    const root = tempDir("berth-db-migrate-busy-");
    try {
      const server = await startBerth({ dataDir: root, env: { REGISTRY_DATABASE_URL: "" }, workers: 2 });
      try {
        await new RegistryClient(server.url).pushImage("busy/app", "v1");
        const pids = execFileSync("pgrep", ["-P", String(server.process.pid)], { encoding: "utf8" })
          .trim()
          .split("\n")
          .map(Number);
        const url = await ensureDatabase(base, `migrate_busy_${process.pid}_${Date.now().toString(36)}`);
        const refused = berthCli(["db", "migrate-to", url, "--data-dir", root]);
        expect(refused.status).toBe(1);
        expect(refused.stderr).toContain("berth serve is writing");
        expect(refused.stderr).toContain("stop every berth serve on this data directory");
        // Both workers are named.
        for (const pid of pids) expect(refused.stderr).toContain(`pid ${pid} on `);
        expect(refused.stdout).toBe("");
        // Nothing was copied: the same database takes the copy once the server has stopped.
        await server.stop();
        const done = berthCli(["db", "migrate-to", url, "--data-dir", root]);
        expect(done.stderr).toBe("");
        expect(done.status).toBe(0);
        expect(done.stdout).toMatch(/repositories\s+1 rows \(counts match\)/);
      } finally {
        await server.stop();
      }

      // A server that died (kill -9) holds nothing: its process is gone, which this host can tell at once.
      const crashed = await startBerth({ dataDir: root, env: { REGISTRY_DATABASE_URL: "" } });
      await crashed.kill();
      const url2 = await ensureDatabase(base, `migrate_crash_${process.pid}_${Date.now().toString(36)}`);
      const after = berthCli(["db", "migrate-to", url2, "--data-dir", root]);
      expect(after.stderr).toBe("");
      expect(after.status).toBe(0);

      // A server in read-only mode takes no pushes: it may keep serving pulls during the copy.
      const readOnly = await startBerth({
        dataDir: root,
        env: { REGISTRY_DATABASE_URL: "" },
        args: ["--read-only"],
      });
      try {
        const url3 = await ensureDatabase(base, `migrate_ro_${process.pid}_${Date.now().toString(36)}`);
        const copied = berthCli(["db", "migrate-to", url3, "--data-dir", root]);
        expect(copied.stderr).toBe("");
        expect(copied.status).toBe(0);
        expect((await new RegistryClient(readOnly.url).fetch("/v2/busy/app/manifests/v1")).status).toBe(200);
      } finally {
        await readOnly.stop();
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
