/**
 * The metadata store's contract, run against every implementation (SQLite and PostgreSQL): every
 * operation the domain uses, its errors, two connections writing at once, migrations started by ten
 * processes at once, and the race between the collector deleting an unreferenced blob and a manifest
 * PUT that references it, which must end with the PUT refused or the blob kept.
 *
 * PostgreSQL runs on the `postgres` project's server when there is one, else on a server of this file.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { rmSync } from "node:fs";
import path from "node:path";
import { CompiledQuery, sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type MetadataDb, openPostgres, openSqlite } from "../../src/metadata/db.js";
import type { NewEvent } from "../../src/metadata/events-queries.js";
import {
  acquireLock,
  deleteBlobRows,
  LeaseLostError,
  releaseLock,
  stillGarbageBlobs,
} from "../../src/metadata/gc-queries.js";
import type { HeldLease } from "../../src/metadata/gc-store.js";
import { knownMigrations, SchemaTooNewError } from "../../src/metadata/migrations.js";
import { type NewManifest, SqlMetadataStore } from "../../src/metadata/store.js";
import { isRegistryError } from "../../src/registry/errors.js";
import { Registry } from "../../src/registry/registry.js";
import { FilesystemBlobStore } from "../../src/storage/filesystem.js";
import {
  ensureDatabase,
  type PostgresServer,
  sharedPostgresUrl,
  startPostgres,
} from "../helpers/postgres.js";
import { ROOT, tempDir } from "../helpers/server.js";

type Kind = "sqlite" | "postgres";

const digestOf = (text: string | Buffer) => `sha256:${createHash("sha256").update(text).digest("hex")}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let ownServer: PostgresServer | null = null;
let pgBase = "";
let dbCounter = 0;

beforeAll(async () => {
  const shared = sharedPostgresUrl();
  if (shared) pgBase = shared;
  else {
    ownServer = await startPostgres();
    pgBase = ownServer.url("postgres");
  }
});
afterAll(async () => {
  await ownServer?.stop();
});

/** A fresh, empty database of `kind`; `open()` gives a new connection (pool) on it each time. */
async function freshDatabase(kind: Kind): Promise<{ open: () => Promise<MetadataDb>; cleanup: () => void }> {
  if (kind === "sqlite") {
    const dir = tempDir("berth-contract-");
    return { open: () => openSqlite(dir), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
  }
  const url = await ensureDatabase(
    pgBase,
    `contract_${process.pid}_${++dbCounter}_${Date.now().toString(36)}`,
  );
  return { open: () => openPostgres({ connectionString: url, max: 6 }), cleanup: () => {} };
}

function manifest(seed: string, blobs: string[], extra: Partial<NewManifest> = {}): NewManifest {
  const content = Buffer.from(JSON.stringify({ schemaVersion: 2, seed, layers: blobs }));
  return {
    digest: digestOf(content),
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    content,
    artifactType: null,
    subject: null,
    annotations: null,
    configDigest: blobs[0] ?? null,
    blobs,
    children: [],
    ...extra,
  };
}

/** Runs node with `args` (the scripts import dist/, built by `npm run build`). */
function runNode(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      env: { ...process.env, ...env },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stderr }));
  });
}

/** Waits until some PostgreSQL backend waits on a lock (true), or gives up after `ms` (false). */
async function someoneWaitsOnALock(meta: MetadataDb, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const rows = await sql<{ n: number }>`
      select count(*) as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`.execute(meta.db);
    if (Number(rows.rows[0]?.n) > 0) return true;
    await sleep(20);
  }
  return false;
}

describe.each(["sqlite", "postgres"] as const)("MetadataStore on %s", (kind) => {
  let a: MetadataDb;
  let b: MetadataDb;
  let store: SqlMetadataStore;
  let other: SqlMetadataStore;
  let cleanup: () => void;
  let open: () => Promise<MetadataDb>;

  beforeAll(async () => {
    ({ open, cleanup } = await freshDatabase(kind));
    a = await open();
    b = await open();
    store = new SqlMetadataStore(a);
    other = new SqlMetadataStore(b);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    cleanup?.();
  });

  it("reports its dialect", () => {
    expect(a.dialect).toBe(kind);
  });

  it("creates repositories once and lists those with manifests in byte order", async () => {
    const id1 = await store.transaction((trx) => store.touchRepository(trx, "list/b"));
    for (let i = 0; i < 5; i++) await store.transaction((trx) => store.touchRepository(trx, "list/b"));
    const id2 = await store.transaction((trx) => store.touchRepository(trx, "list/b"));
    expect(id2).toBe(id1);
    // Touching an existing repository (every push does) uses up no ids.
    const next = await store.transaction((trx) => store.touchRepository(trx, "list/next"));
    expect(next).toBe(id1 + 1);
    expect(typeof id1).toBe("number");
    expect(await store.repositoryId("list/b")).toBe(id1);
    expect(await store.repositoryId("list/missing")).toBeNull();
    const names = ["list/b", "list/B", "list/a", "list/empty"];
    for (const name of names) {
      await store.transaction(async (trx) => {
        const id = await store.touchRepository(trx, name);
        if (name !== "list/empty") await store.insertManifest(trx, id, manifest(name, []));
      });
    }
    const all = (await store.listRepositories(100)).filter((n) => n.startsWith("list/"));
    expect(all).toEqual(["list/B", "list/a", "list/b"]);
    expect((await store.listRepositories(100, "list/B")).filter((n) => n.startsWith("list/"))).toEqual([
      "list/a",
      "list/b",
    ]);
  });

  it("records, links, reads, refreshes and unlinks blobs", async () => {
    const digest = digestOf("blob-1");
    const size = 5_000_000_000; // beyond 32 bits: bigint on PostgreSQL, a number here
    const id = await store.transaction(async (trx) => {
      const rid = await store.touchRepository(trx, "blobs/app");
      await store.upsertBlob(trx, digest, size, 1000);
      await store.linkBlob(trx, rid, digest, 1000);
      return rid;
    });
    expect(await store.blob(digest)).toEqual({ size });
    expect(await store.blob(digestOf("nope"))).toBeNull();
    expect(await store.linkedBlob("blobs/app", digest)).toEqual({ size, linkedAt: 1000 });
    expect(await other.linkedBlob("blobs/app", digest)).toEqual({ size, linkedAt: 1000 });
    expect(await store.linkedBlob("blobs/other", digest)).toBeNull();
    expect(await store.isLinked(a.db, id, digest)).toBe(true);
    expect(await store.repositoriesLinking(digest)).toEqual(["blobs/app"]);
    expect(await store.refreshLink("blobs/app", digest, 2000)).toBe(true);
    expect((await store.linkedBlob("blobs/app", digest))?.linkedAt).toBe(2000);
    expect(await store.refreshLink("blobs/none", digest)).toBe(false);
    expect(await store.transaction((trx) => store.unlinkBlob(trx, id, digest))).toBe(true);
    expect(await store.transaction((trx) => store.unlinkBlob(trx, id, digest))).toBe(false);
    expect(await store.linkedBlob("blobs/app", digest)).toBeNull();
    expect(await store.blob(digest)).toEqual({ size });
  });

  it("stores manifests and tags, moves tags, pages tags and finds referrers", async () => {
    const layer = digestOf("m-layer");
    const m1 = manifest("m1", [layer]);
    const m2 = manifest("m2", [layer]);
    const sig = manifest("sig", [], { subject: m1.digest, artifactType: "application/x-sig" });
    const sbom = manifest("sbom", [], { subject: m1.digest, artifactType: "application/x-sbom" });
    const id = await store.transaction(async (trx) => {
      const rid = await store.touchRepository(trx, "man/app");
      for (const m of [m1, m2, sig, sbom]) await store.insertManifest(trx, rid, m, 5000);
      // Inserting again keeps the first one.
      await store.insertManifest(trx, rid, m1, 9999);
      await store.setTag(trx, rid, "v1", m1.digest, 5000);
      await store.setTag(trx, rid, "latest", m1.digest, 5000);
      await store.setTag(trx, rid, "Z", m2.digest, 5000);
      return rid;
    });
    const byTag = await store.manifestByTag("man/app", "v1");
    expect(byTag?.digest).toBe(m1.digest);
    expect(Buffer.isBuffer(byTag?.content)).toBe(true);
    expect(byTag?.content.equals(m1.content)).toBe(true);
    expect(byTag?.size).toBe(m1.content.length);
    expect(byTag?.last_pulled_at).toBeNull();
    expect((await other.manifestByDigest("man/app", m2.digest))?.media_type).toBe(m2.mediaType);
    expect(await store.manifestByTag("man/app", "nope")).toBeNull();
    expect(await store.hasManifest(a.db, id, m1.digest)).toBe(true);
    await store.transaction((trx) => store.setTag(trx, id, "v1", m2.digest, 6000));
    expect((await store.manifestByTag("man/app", "v1"))?.digest).toBe(m2.digest);
    expect(await store.listTags(id, undefined)).toEqual(["Z", "latest", "v1"]);
    expect(await store.listTags(id, 1, "Z")).toEqual(["latest"]);
    const refs = await store.referrers("man/app", m1.digest);
    expect(refs.map((r) => r.digest).sort()).toEqual([sig.digest, sbom.digest].sort());
    expect(refs.every((r) => typeof r.size === "number")).toBe(true);
    expect((await store.referrers("man/app", m1.digest, "application/x-sbom")).map((r) => r.digest)).toEqual([
      sbom.digest,
    ]);
    await store.markPulled("man/app", m1.digest, 7000);
    await store.markPulledMany([{ name: "man/app", digest: m2.digest, at: 8000 }]);
    expect((await store.manifestByDigest("man/app", m1.digest))?.last_pulled_at).toBe(7000);
    expect((await store.manifestByDigest("man/app", m2.digest))?.last_pulled_at).toBe(8000);
    expect(await store.transaction((trx) => store.deleteTag(trx, id, "Z"))).toBe(true);
    expect(await store.transaction((trx) => store.deleteTag(trx, id, "Z"))).toBe(false);
    expect(await store.transaction((trx) => store.deleteManifest(trx, id, m2.digest))).toBe(true);
    expect(await store.transaction((trx) => store.deleteManifest(trx, id, m2.digest))).toBe(false);
    expect(await store.manifestByTag("man/app", "v1")).toBeNull();
    expect(await store.listTags(id, undefined)).toEqual(["latest"]);
  });

  it("answers many hot reads at once, each with its own row (PostgreSQL sends them as one query)", async () => {
    const layer = digestOf("hot-layer");
    const ms = Array.from({ length: 12 }, (_, i) => manifest(`hot-${i}`, [layer]));
    await store.transaction(async (trx) => {
      for (let r = 0; r < 3; r++) {
        const rid = await store.touchRepository(trx, `hot/r${r}`);
        for (let i = r; i < ms.length; i += 3) {
          await store.insertManifest(trx, rid, ms[i]!, 5000);
          await store.setTag(trx, rid, `t${i}`, ms[i]!.digest, 5000);
        }
      }
    });
    await store.transaction(async (trx) => {
      const rid = await store.touchRepository(trx, "hot/blobs");
      await store.upsertBlob(trx, layer, 321, 5000);
      await store.linkBlob(trx, rid, layer, 5000);
    });
    // Every manifest by its tag and by its digest, in its own repository and (absent) in the next one,
    // some asked several times, and a tag that does not exist: all in one turn of the event loop.
    const asks: Promise<void>[] = [];
    for (let round = 0; round < 3; round++) {
      ms.forEach((m, i) => {
        const repo = `hot/r${i % 3}`;
        const elsewhere = `hot/r${(i + 1) % 3}`;
        asks.push(
          store.manifestByTag(repo, `t${i}`).then((row) => {
            expect(row?.digest).toBe(m.digest);
            expect(row?.content.equals(m.content)).toBe(true);
          }),
          store.manifestByDigest(repo, m.digest).then((row) => expect(row?.size).toBe(m.content.length)),
          store.manifestByTag(elsewhere, `t${i}`).then((row) => expect(row).toBeNull()),
          store.manifestByDigest(elsewhere, m.digest).then((row) => expect(row).toBeNull()),
        );
      });
      asks.push(store.manifestByTag("hot/r0", "missing").then((row) => expect(row).toBeNull()));
    }
    await Promise.all(asks);
    expect(
      (await Promise.all([store.linkedBlob("hot/blobs", layer), store.linkedBlob("hot/r0", layer)])).map(
        (b) => b?.size ?? null,
      ),
    ).toEqual([321, null]);
    // A tag moved by another connection is seen by the very next read, batched or not.
    const rid = (await other.repositoryId("hot/r0"))!;
    await other.transaction(async (trx) => {
      await other.setTag(trx, rid, "t0", ms[3]!.digest, 6000);
    });
    const after = await Promise.all([
      store.manifestByTag("hot/r0", "t0"),
      store.manifestByTag("hot/r0", "t3"),
    ]);
    expect(after.map((r) => r?.digest)).toEqual([ms[3]!.digest, ms[3]!.digest]);
  });

  it("keeps upload sessions and leases them to one writer at a time, across connections", async () => {
    await store.createUpload("up/app", "upload-1", 1000);
    expect(await store.upload("up/app", "upload-1")).toEqual({
      id: "upload-1",
      size: 0,
      digest: null,
      created_at: 1000,
      lease_until: null,
    });
    expect(await store.upload("up/other", "upload-1")).toBeNull();
    const leases = await Promise.all([
      store.leaseUpload("upload-1", 60_000),
      other.leaseUpload("upload-1", 60_000),
      store.leaseUpload("upload-1", 60_000),
      other.leaseUpload("upload-1", 60_000),
    ]);
    const held = leases.filter((h): h is string => h !== null);
    expect(held).toHaveLength(1);
    const holder = held[0] as string;
    const leased = (await other.upload("up/app", "upload-1"))!.lease_until!;
    expect(leased).toBeGreaterThan(Date.now() + 50_000);
    expect(await store.renewUploadLease("upload-1", holder, 60_000)).toBe(true);
    expect(await other.renewUploadLease("upload-1", "someone-else", 60_000)).toBe(false);
    // Only the holder's write counts, and it ends the lease.
    await other.finishUploadWrite("upload-1", "someone-else", 99, null);
    expect(await store.upload("up/app", "upload-1")).toMatchObject({ size: 0, digest: null });
    await store.finishUploadWrite("upload-1", holder, 4096, digestOf("part"));
    expect(await other.upload("up/app", "upload-1")).toMatchObject({
      size: 4096,
      digest: digestOf("part"),
      lease_until: null,
    });
    const next = await other.leaseUpload("upload-1", 60_000);
    expect(next).not.toBeNull();
    await other.finishUploadWrite("upload-1", next as string, 4096, digestOf("part"));
    await store.deleteUploadRow("upload-1");
    expect(await store.upload("up/app", "upload-1")).toBeNull();
  });

  it("refuses a second upload with the same id, and a failed transaction leaves nothing behind", async () => {
    await store.createUpload("err/app", "dup", 1000);
    await expect(store.createUpload("err/app", "dup", 1000)).rejects.toThrow();
    await expect(
      store.transaction(async (trx) => {
        const id = await store.touchRepository(trx, "err/half");
        await store.setTag(trx, id, "t", digestOf("x"));
        throw new Error("boom");
      }),
    ).rejects.toThrow("boom");
    expect(await store.repositoryId("err/half")).toBeNull();
  });

  it("removes a whole repository and returns its upload ids", async () => {
    await store.createUpload("gone/app", "gone-upload", 1000);
    const id = (await store.repositoryId("gone/app"))!;
    const removed = await store.transaction((trx) => store.deleteRepository(trx, id));
    expect(removed).toEqual(["gone-upload"]);
    expect(await store.repositoryId("gone/app")).toBeNull();
  });

  it("two connections creating the same repositories and tags at once agree", async () => {
    const names = Array.from({ length: 5 }, (_, i) => `race/repo-${i}`);
    // PostgreSQL: all at once. SQLite admits one writer, and better-sqlite3 waits for the lock
    // synchronously, so two connections of one process can only take turns (several processes at
    // once are covered by the migration test below and test/integration/gc-stress.test.ts).
    const run = async <T>(jobs: (() => Promise<T>)[]): Promise<T[]> => {
      if (kind === "postgres") return Promise.all(jobs.map((job) => job()));
      const out: T[] = [];
      for (const job of jobs) out.push(await job());
      return out;
    };
    const ids = await run(
      names.flatMap((name) =>
        [store, other, store, other].map(
          (s) => () =>
            s.transaction(async (trx) => {
              const id = await s.touchRepository(trx, name);
              await s.insertManifest(trx, id, manifest(name, []));
              await s.setTag(trx, id, "latest", manifest(name, []).digest);
              return { name, id };
            }),
        ),
      ),
    );
    for (const name of names) {
      const mine = new Set(ids.filter((r) => r.name === name).map((r) => r.id));
      expect(mine.size).toBe(1);
      expect((await store.manifestByTag(name, "latest"))?.digest).toBe(manifest(name, []).digest);
    }
  });

  it("gives a job lease to exactly one of two connections", async () => {
    const results = await Promise.all([
      acquireLock(a.db, "contract-job", "host:1:aaaa", 60_000, false),
      acquireLock(b.db, "contract-job", "host:2:bbbb", 60_000, false),
      acquireLock(a.db, "contract-job", "host:3:cccc", 60_000, false),
      acquireLock(b.db, "contract-job", "host:4:dddd", 60_000, false),
    ]);
    expect(results.filter(Boolean)).toHaveLength(1);
    const winner = ["host:1:aaaa", "host:2:bbbb", "host:3:cccc", "host:4:dddd"][results.indexOf(true)]!;
    await releaseLock(a.db, "contract-job", winner, 0);
    expect(await acquireLock(b.db, "contract-job", "host:5:eeee", 60_000, false)).toBe(true);
  });

  it("lists the leases of one prefix and drops those that ran out long ago", async () => {
    // Neighbours of the prefix in byte order: none of them is listed or dropped.
    for (const [name, expires] of [
      ["serve", 1],
      ["serve:rw:h:1:aa", 1],
      ["serve:ro:h:2:bb", Date.now() + 60_000],
      ["serve;", 1],
      ["servex:1", 1],
    ] as const) {
      await a.db
        .insertInto("locks")
        .values({ name, holder: `idle:${name}`, expires_at: expires })
        .execute();
    }
    expect((await store.locks.locksNamed("serve:")).map((r) => r.name)).toEqual([
      "serve:ro:h:2:bb",
      "serve:rw:h:1:aa",
    ]);
    await store.locks.dropLocks("serve:", Date.now());
    expect((await store.locks.locksNamed("serve:")).map((r) => r.name)).toEqual(["serve:ro:h:2:bb"]);
    const left = await a.db.selectFrom("locks").select("name").where("name", "like", "serv%").execute();
    expect(left.map((r) => r.name).sort()).toEqual(["serve", "serve:ro:h:2:bb", "serve;", "servex:1"]);
  });

  it("migrates once when ten processes open a fresh database at the same moment", async () => {
    // Ten node processes load dist/metadata/db.js, then all open (and so migrate) the same fresh
    // database at one agreed instant.
    const dir = tempDir("berth-contract-migrate-");
    const url =
      kind === "postgres"
        ? await ensureDatabase(pgBase, `contract_migrate_${process.pid}_${Date.now().toString(36)}`)
        : "";
    const script = `
      const m = await import(${JSON.stringify(path.join(ROOT, "dist/metadata/db.js"))});
      const at = Number(process.env.AT);
      while (Date.now() < at) await new Promise((r) => setTimeout(r, 1));
      const db = process.env.URL ? await m.openPostgres({ connectionString: process.env.URL }) : await m.openSqlite(process.env.DIR);
      await db.close();`;
    try {
      const at = String(Date.now() + 3000);
      const runs = await Promise.all(
        Array.from({ length: 10 }, () =>
          runNode(["--input-type=module", "-e", script], { AT: at, URL: url, DIR: dir }),
        ),
      );
      for (const r of runs) expect(r.code, r.stderr).toBe(0);
      const opened =
        kind === "postgres" ? await openPostgres({ connectionString: url }) : await openSqlite(dir);
      const rows = await opened.db.executeQuery<{ name: string }>(
        CompiledQuery.raw("select name from kysely_migration order by name"),
      );
      expect(rows.rows.map((r) => r.name)).toEqual(knownMigrations());
      await opened.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses a database that a newer Berth has migrated", async () => {
    const fresh = await freshDatabase(kind);
    try {
      const first = await fresh.open();
      await first.db.executeQuery(
        CompiledQuery.raw(
          `insert into kysely_migration (name, timestamp) values ('9999_from_the_future', '${new Date().toISOString()}')`,
        ),
      );
      await first.close();
      await expect(fresh.open()).rejects.toThrow(SchemaTooNewError);
      await expect(fresh.open()).rejects.toThrow(
        /newer schema than this Berth understands.*9999_from_the_future/,
      );
    } finally {
      fresh.cleanup();
    }
  });

  // ---------------------------------------------------------------- the interface's domain operations

  /** A job lease of the store's own, for the collector's writes. */
  async function heldLease(name: string): Promise<HeldLease> {
    const holder = `contract:${process.pid}:${name.length.toString(16)}${Date.now().toString(16)}`;
    expect(await store.locks.acquireLock(name, holder, 60_000, true)).toBe(true);
    return { name, holder, ttlMs: 60_000 };
  }

  const outboxEvent = (id: string, repository: string): NewEvent => ({
    eventId: id,
    createdAt: Date.now(),
    action: "push",
    repository,
    body: JSON.stringify({ id }),
  });

  async function eventIds(): Promise<string[]> {
    return (await store.events.recentEvents(1000)).map((e) => e.event_id);
  }

  it("answers ping, and counts uploads and blobs", async () => {
    await store.ping();
    await other.ping();
    const before = await store.usage.uploadUsage();
    await store.createUpload("usage/app", "usage-upload", 1000);
    expect(await other.usage.uploadUsage()).toEqual({ count: before.count + 1, bytes: before.bytes });
    await store.deleteUploadRow("usage-upload");
    expect((await store.usage.totalUsage()).blobs).toBeGreaterThanOrEqual(0);
  });

  it("commitBlob records, links and drops the upload in one go, with the file step inside", async () => {
    const digest = digestOf("commit-blob");
    await store.createUpload("ops/blob", "ops-upload", 1000);
    const steps: string[] = [];
    await store.commitBlob(
      "ops/blob",
      { digest, size: 11, uploadId: "ops-upload", events: [outboxEvent("ev-commit", "ops/blob")] },
      async () => {
        steps.push("place");
        // Inside the transaction: not visible to another connection yet.
        if (kind === "postgres") expect(await other.linkedBlob("ops/blob", digest)).toBeNull();
      },
    );
    expect(steps).toEqual(["place"]);
    expect(await other.linkedBlob("ops/blob", digest)).toMatchObject({ size: 11 });
    expect(await store.upload("ops/blob", "ops-upload")).toBeNull();
    expect(await eventIds()).toContain("ev-commit");

    // The file step fails: nothing is recorded, the upload row stays, no event.
    const failed = digestOf("commit-blob-failed");
    await store.createUpload("ops/blob", "ops-upload-2", 1000);
    await expect(
      store.commitBlob(
        "ops/blob",
        { digest: failed, size: 3, uploadId: "ops-upload-2", events: [outboxEvent("ev-failed", "ops/blob")] },
        async () => {
          throw new Error("rename failed");
        },
      ),
    ).rejects.toThrow("rename failed");
    expect(await store.blob(failed)).toBeNull();
    expect(await store.upload("ops/blob", "ops-upload-2")).not.toBeNull();
    expect(await eventIds()).not.toContain("ev-failed");
  });

  it("commitBlobInPlace records the blob only when its bytes are there, and drops the upload row either way", async () => {
    const digest = digestOf("in-place");
    await store.createUpload("ops/inplace", "inplace-1", 1000);
    await store.createUpload("ops/inplace", "inplace-2", 1000);
    expect(
      await store.commitBlobInPlace(
        "ops/inplace",
        { digest, size: 8, uploadId: "inplace-1", events: [outboxEvent("ev-absent", "ops/inplace")] },
        async () => false,
      ),
    ).toBe(false);
    expect(await store.blob(digest)).toBeNull();
    expect(await store.upload("ops/inplace", "inplace-1")).toBeNull();
    expect(await eventIds()).not.toContain("ev-absent");
    expect(
      await store.commitBlobInPlace(
        "ops/inplace",
        { digest, size: 8, uploadId: "inplace-2", events: [outboxEvent("ev-present", "ops/inplace")] },
        async () => true,
      ),
    ).toBe(true);
    expect(await other.linkedBlob("ops/inplace", digest)).toMatchObject({ size: 8 });
    expect(await store.upload("ops/inplace", "inplace-2")).toBeNull();
    expect(await eventIds()).toContain("ev-present");
  });

  it("linkExistingBlob mounts only what the source links and what is stored; unlinkBlobOf removes a link once", async () => {
    const digest = digestOf("mount-me");
    await store.commitBlob("ops/source", { digest, size: 8, uploadId: null, events: [] }, async () => {});
    const sizes: number[] = [];
    const events = (size: number) => {
      sizes.push(size);
      return [outboxEvent(`ev-mount-${sizes.length}`, "ops/target")];
    };
    expect(await store.linkExistingBlob("ops/target", digest, "ops/nowhere", events)).toBe(false);
    expect(await store.linkExistingBlob("ops/target", digestOf("not stored"), null, events)).toBe(false);
    expect(sizes).toEqual([]);
    // A miss writes nothing: not even the repository it would have linked into (issue 21: the mirror).
    expect(await store.repositoryId("ops/target")).toBeNull();
    expect(await other.linkExistingBlob("ops/target", digest, "ops/source", events)).toBe(true);
    expect(sizes).toEqual([8]);
    expect(await store.linkedBlob("ops/target", digest)).toMatchObject({ size: 8 });
    expect(await store.linkExistingBlob("ops/cached", digest, null)).toBe(true);
    expect(await eventIds()).toContain("ev-mount-1");

    const id = (await store.repositoryId("ops/target"))!;
    expect(await store.unlinkBlobOf("ops/target", id, digest, [outboxEvent("ev-unlink", "ops/target")])).toBe(
      true,
    );
    expect(
      await store.unlinkBlobOf("ops/target", id, digest, [outboxEvent("ev-unlink-2", "ops/target")]),
    ).toBe(false);
    expect(await store.linkedBlob("ops/target", digest)).toBeNull();
    expect(await store.blob(digest)).toEqual({ size: 8 });
    const ids = await eventIds();
    expect(ids).toContain("ev-unlink");
    expect(ids).not.toContain("ev-unlink-2");
  });

  it("commitManifest checks references, writes everything or nothing, and reports what is missing", async () => {
    const layer = digestOf("manifest-layer");
    const m = manifest("ops-manifest", [layer]);
    const place = async () => {};
    // Nothing linked: refused, and the repository is not even created.
    expect(
      await store.commitManifest("ops/fresh", { manifest: m, tags: ["v1"], events: [] }, place, {
        blobs: [layer],
        manifests: [],
      }),
    ).toEqual({ kind: "blob", digest: layer });
    expect(await store.repositoryId("ops/fresh")).toBeNull();

    await store.commitBlob("ops/man", { digest: layer, size: 14, uploadId: null, events: [] }, place);
    const child = digestOf("absent-child");
    expect(
      await store.commitManifest("ops/man", { manifest: m, tags: ["v1"], events: [] }, place, {
        blobs: [layer],
        manifests: [child],
      }),
    ).toEqual({ kind: "manifest", digest: child });
    expect(await store.manifestByTag("ops/man", "v1")).toBeNull();

    // The bytes step fails: nothing recorded.
    await expect(
      store.commitManifest(
        "ops/man",
        { manifest: m, tags: ["v1"], events: [] },
        async () => {
          throw new Error("disk full");
        },
        { blobs: [layer], manifests: [] },
      ),
    ).rejects.toThrow("disk full");
    expect(await store.manifestByDigest("ops/man", m.digest)).toBeNull();

    const placed: string[] = [];
    expect(
      await store.commitManifest(
        "ops/man",
        { manifest: m, tags: ["v1", "latest"], events: [outboxEvent("ev-manifest", "ops/man")] },
        async () => {
          placed.push(m.digest);
        },
        { blobs: [layer], manifests: [] },
      ),
    ).toBeNull();
    expect(placed).toEqual([m.digest]);
    expect((await other.manifestByTag("ops/man", "v1"))?.digest).toBe(m.digest);
    expect((await other.manifestByTag("ops/man", "latest"))?.digest).toBe(m.digest);
    expect(await other.linkedBlob("ops/man", m.digest)).toMatchObject({ size: m.content.length });
    expect(await eventIds()).toContain("ev-manifest");
    // Without checks (the pull-through cache stores what its upstream verified).
    const unchecked = manifest("ops-unchecked", [digestOf("upstream-only")]);
    expect(
      await store.commitManifest("ops/cache", { manifest: unchecked, tags: [], events: [] }, place, null),
    ).toBeNull();
    expect((await store.manifestByDigest("ops/cache", unchecked.digest))?.digest).toBe(unchecked.digest);
  });

  it("two connections committing the same manifest and tags at once agree", async () => {
    const layer = digestOf("both-layer");
    await store.commitBlob(
      "ops/both",
      { digest: layer, size: 10, uploadId: null, events: [] },
      async () => {},
    );
    const m = manifest("ops-both", [layer]);
    const commit = (s: SqlMetadataStore) =>
      s.commitManifest("ops/both", { manifest: m, tags: ["latest"], events: [] }, async () => {}, {
        blobs: [layer],
        manifests: [],
      });
    const results =
      kind === "postgres"
        ? await Promise.all([commit(store), commit(other), commit(store), commit(other)])
        : [await commit(store), await commit(other), await commit(store), await commit(other)];
    expect(results).toEqual([null, null, null, null]);
    expect((await store.manifestByTag("ops/both", "latest"))?.digest).toBe(m.digest);
  });

  it("deleteReference removes a tag, or a manifest with its tags, once; removeRepository returns its uploads", async () => {
    const layer = digestOf("delete-layer");
    await store.commitBlob(
      "ops/del",
      { digest: layer, size: 12, uploadId: null, events: [] },
      async () => {},
    );
    const m = manifest("ops-del", [layer]);
    await store.commitManifest(
      "ops/del",
      { manifest: m, tags: ["a", "b"], events: [] },
      async () => {},
      null,
    );
    const id = (await store.repositoryId("ops/del"))!;
    expect(
      await store.deleteReference("ops/del", id, { tag: "a" }, [outboxEvent("ev-del-a", "ops/del")]),
    ).toBe(true);
    expect(
      await store.deleteReference("ops/del", id, { tag: "a" }, [outboxEvent("ev-del-a2", "ops/del")]),
    ).toBe(false);
    expect((await store.manifestByTag("ops/del", "b"))?.digest).toBe(m.digest);
    expect(await other.deleteReference("ops/del", id, { digest: m.digest }, [])).toBe(true);
    expect(await store.manifestByTag("ops/del", "b")).toBeNull();
    expect(await store.manifestByDigest("ops/del", m.digest)).toBeNull();
    expect(await store.deleteReference("ops/del", id, { digest: m.digest }, [])).toBe(false);
    const ids = await eventIds();
    expect(ids).toContain("ev-del-a");
    expect(ids).not.toContain("ev-del-a2");

    await store.createUpload("ops/del", "del-upload", 1000);
    expect(await store.removeRepository("ops/del", id, [outboxEvent("ev-repo", "ops/del")])).toEqual([
      "del-upload",
    ]);
    expect(await store.repositoryId("ops/del")).toBeNull();
    expect(await eventIds()).toContain("ev-repo");
  });

  it("the collector's writes run under its lease, and change nothing once the lease is lost", async () => {
    // An old, unreferenced blob linked long ago.
    const garbage = digestOf("gc-garbage");
    await store.transaction(async (trx) => {
      const rid = await store.touchRepository(trx, "ops/gc");
      await store.upsertBlob(trx, garbage, 7, 1000);
      await store.linkBlob(trx, rid, garbage, 1000);
    });
    const lease = await heldLease("contract-gc-ops");
    const lost = { ...lease, holder: "somebody-else" };
    await expect(
      store.gc.removeGarbageBlobs(lost, [garbage], Date.now(), async () => {}),
    ).rejects.toBeInstanceOf(LeaseLostError);
    expect(await store.blob(garbage)).toEqual({ size: 7 });
    // The files step fails: the rows stay.
    await expect(
      store.gc.removeGarbageBlobs(lease, [garbage], Date.now(), async () => {
        throw new Error("unlink failed");
      }),
    ).rejects.toThrow("unlink failed");
    expect(await store.blob(garbage)).toEqual({ size: 7 });
    const files: string[][] = [];
    const removed = await store.gc.removeGarbageBlobs(
      lease,
      [garbage, digestOf("no such blob")],
      Date.now(),
      async (gone) => {
        files.push(gone);
      },
    );
    expect([...removed]).toEqual([[garbage, 7]]);
    expect(files).toEqual([[garbage]]);
    expect(await store.blob(garbage)).toBeNull();

    // Orphans: digests with no row, as seen under the lease.
    const kept = digestOf("gc-kept");
    await store.commitBlob("ops/gc", { digest: kept, size: 5, uploadId: null, events: [] }, async () => {});
    expect(await store.gc.withOrphanBlobs(lease, [kept, garbage], async (orphans) => orphans)).toEqual([
      garbage,
    ]);
    await expect(store.gc.withOrphanBlobs(lost, [garbage], async (o) => o)).rejects.toBeInstanceOf(
      LeaseLostError,
    );

    // Upload sessions: stale ones go with their files step; files without a row are reported.
    await store.createUpload("ops/gc", "gc-stale", 1000);
    const before = Date.now() + 1000;
    const deletedFiles: string[] = [];
    expect(
      await store.gc.removeStaleUploads(lease, ["gc-stale", "gc-none"], before, Date.now(), async (gone) => {
        deletedFiles.push(...gone);
      }),
    ).toEqual(["gc-stale"]);
    expect(deletedFiles).toEqual(["gc-stale"]);
    await store.createUpload("ops/gc", "gc-live", 1000);
    expect(await store.gc.withOrphanUploads(lease, ["gc-live", "gc-file-only"], async (o) => o)).toEqual([
      "gc-file-only",
    ]);
    await store.deleteUploadRow("gc-live");

    // Stale links: a link older than the cutoff that no manifest needs.
    const rid = (await store.repositoryId("ops/gc"))!;
    await store.transaction((trx) => store.linkBlob(trx, rid, kept, 1000));
    expect(await store.gc.removeStaleLinks(lease, [{ repositoryId: rid, digest: kept }], Date.now())).toBe(1);
    expect(await store.linkedBlob("ops/gc", kept)).toBeNull();
    await expect(store.gc.removeStaleLinks(lost, [], Date.now())).rejects.toBeInstanceOf(LeaseLostError);
    await store.locks.releaseLock(lease.name, lease.holder, 0);
  });

  it("retention's and the manifest collector's writes: tags not moved meanwhile, manifests nothing holds", async () => {
    const lease = await heldLease("contract-retention-ops");
    const m1 = manifest("ret-1", []);
    const m2 = manifest("ret-2", []);
    await store.commitManifest(
      "ops/ret",
      { manifest: m1, tags: ["old", "moved"], events: [] },
      async () => {},
      null,
    );
    await store.commitManifest("ops/ret", { manifest: m2, tags: [], events: [] }, async () => {}, null);
    const rid = (await store.repositoryId("ops/ret"))!;
    const removed = await store.gc.removeTags(lease, rid, (tags) => {
      // Between the read and the delete, "moved" is pushed again elsewhere: it must stay.
      return tags.map((t) => (t.name === "moved" ? { ...t, updatedAt: t.updatedAt - 1 } : t));
    });
    expect(removed.map((t) => t.name)).toEqual(["old"]);
    expect((await store.manifestByTag("ops/ret", "moved"))?.digest).toBe(m1.digest);
    // m1 is tagged: kept; m2 is untagged and older than the cutoff: removed.
    const gone = await store.gc.removeManifests(lease, rid, [m1.digest, m2.digest], Date.now() + 1000);
    expect([...gone.keys()]).toEqual([m2.digest]);
    expect(await store.manifestByDigest("ops/ret", m2.digest)).toBeNull();
    await store.gc.forgetReleased(lease, rid, [m2.digest]);
    await expect(store.gc.removeTags({ ...lease, holder: "nobody" }, rid, () => [])).rejects.toBeInstanceOf(
      LeaseLostError,
    );
    await store.locks.releaseLock(lease.name, lease.holder, 0);
  });

  describe("the collector against a manifest PUT referencing the blob it deletes", () => {
    let dir: string;
    let registry: Registry;

    beforeAll(async () => {
      dir = tempDir("berth-contract-blobs-");
      const blobs = new FilesystemBlobStore(dir);
      await blobs.init();
      registry = new Registry(other, blobs, {
        deleteEnabled: true,
        readOnly: false,
        maxManifestBytes: 4 * 1024 * 1024,
        linkRefreshMs: 60_000,
      });
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    /** A blob stored long ago, linked long ago, referenced by nothing: garbage for the collector. */
    async function oldUnreferencedBlob(repo: string, seed: string): Promise<string> {
      const digest = digestOf(seed);
      await store.transaction(async (trx) => {
        const id = await store.touchRepository(trx, repo);
        await store.upsertBlob(trx, digest, seed.length, 1000);
        await store.linkBlob(trx, id, digest, 1000);
      });
      return digest;
    }

    function imageManifest(blob: string): Buffer {
      return Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: blob, size: 10 },
          layers: [],
        }),
      );
    }

    /** The collector's deleting transaction (src/registry/gc.ts, blob phase), paused at `gate`. */
    async function collect(digest: string, gate: Promise<void>, decided: () => void): Promise<string[]> {
      return store.transaction(async (trx) => {
        // The collector's first statement is a write (its lease), which takes SQLite's write lock.
        await acquireLock(trx as never, `gc-contract-${digest}`, "h:1:x", 60_000, true);
        const still = await stillGarbageBlobs(trx, [digest], Date.now());
        decided();
        await gate;
        await deleteBlobRows(trx, [...still.keys()]);
        return [...still.keys()];
      });
    }

    /** The invariant: no manifest references `blob` while its row is gone. */
    async function dangling(blob: string): Promise<number> {
      const rows = await a.db
        .selectFrom("manifest_blobs as mb")
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .where("mb.blob_digest", "=", blob)
        .where(({ not, exists, selectFrom }) =>
          not(
            exists(selectFrom("blobs as b").select("b.digest").whereRef("b.digest", "=", "mb.blob_digest")),
          ),
        )
        .executeTakeFirst();
      return Number(rows?.n);
    }

    it("collector first: a HEAD that renews an old link waits for the batch, then answers BLOB_UNKNOWN", async () => {
      // The batch has judged the blob garbage (its link is old) and holds it; the HEAD needs to renew that
      // link. Answering 200 here would make the client skip an upload whose manifest PUT then fails.
      const blob = await oldUnreferencedBlob("racing/head", "collector-head");
      let open!: () => void;
      const gate = new Promise<void>((r) => {
        open = r;
      });
      let decided!: () => void;
      const hasDecided = new Promise<void>((r) => {
        decided = r;
      });
      const collecting = collect(blob, kind === "postgres" ? gate : Promise.resolve(), decided);
      await hasDecided;
      // SQLite admits one writer: the renewal can only come after the collector's commit.
      if (kind === "sqlite") expect(await collecting).toEqual([blob]);
      const head = registry.statBlob("racing/head", blob).then(
        () => "found",
        (err: unknown) => (isRegistryError(err) ? err.code : String(err)),
      );
      if (kind === "postgres") {
        expect(await someoneWaitsOnALock(a)).toBe(true);
        open();
      }
      expect(await collecting).toEqual([blob]);
      expect(await head).toBe("BLOB_UNKNOWN");
    });

    it("collector first: the PUT waits for it, then is refused (MANIFEST_BLOB_UNKNOWN)", async () => {
      const blob = await oldUnreferencedBlob("racing/first", "collector-first");
      let open!: () => void;
      const gate = new Promise<void>((r) => {
        open = r;
      });
      let decided!: () => void;
      const hasDecided = new Promise<void>((r) => {
        decided = r;
      });
      const collecting = collect(blob, kind === "postgres" ? gate : Promise.resolve(), decided);
      await hasDecided;
      if (kind === "sqlite") {
        // SQLite admits one writer: the PUT can only come after the collector's commit.
        expect(await collecting).toEqual([blob]);
      }
      const put = registry.putManifest("racing/first", "latest", imageManifest(blob), undefined).then(
        () => "stored",
        (err: unknown) => (isRegistryError(err) ? err.code : String(err)),
      );
      if (kind === "postgres") {
        // The PUT blocks on the blob row the collector holds; without that lock it would commit now.
        await someoneWaitsOnALock(a);
        open();
        expect(await collecting).toEqual([blob]);
      }
      expect(await put).toBe("MANIFEST_BLOB_UNKNOWN");
      expect(await store.blob(blob)).toBeNull();
      expect(await dangling(blob)).toBe(0);
    });

    it("PUT first: the collector waits for it, then keeps the blob", async () => {
      const blob = await oldUnreferencedBlob("racing/second", "put-first");
      const m = manifest("put-first", [blob]);
      let open!: () => void;
      const gate = new Promise<void>((r) => {
        open = r;
      });
      let locked!: () => void;
      const hasLocked = new Promise<void>((r) => {
        locked = r;
      });
      // The PUT's transaction as src/registry/registry.ts runs it, paused before its commit.
      const putting = other.transaction(async (trx) => {
        const id = await other.touchRepository(trx, "racing/second");
        await other.lockLinkedBlobs(trx, id, [blob]);
        expect(await other.isLinked(trx, id, blob)).toBe(true);
        await other.insertManifest(trx, id, m);
        await other.setTag(trx, id, "latest", m.digest);
        locked();
        await gate;
      });
      await hasLocked;
      let collecting: Promise<string[]>;
      if (kind === "postgres") {
        collecting = collect(blob, Promise.resolve(), () => {});
        await someoneWaitsOnALock(a);
        open();
        await putting;
      } else {
        open();
        await putting;
        collecting = collect(blob, Promise.resolve(), () => {});
      }
      expect(await collecting).toEqual([]);
      expect(await store.blob(blob)).not.toBeNull();
      expect((await store.manifestByTag("racing/second", "latest"))?.digest).toBe(m.digest);
      expect(await dangling(blob)).toBe(0);
    });
    it("through the interface, collector first: commitManifest waits for it, then reports the blob missing", async () => {
      const blob = await oldUnreferencedBlob("racing/ops-first", "ops-collector-first");
      const lease = await heldLease("contract-race-ops-first");
      let open!: () => void;
      const gate = new Promise<void>((r) => {
        open = r;
      });
      let decided!: () => void;
      const hasDecided = new Promise<void>((r) => {
        decided = r;
      });
      // The collector's blob phase, paused in its files step: the rows are deleted, not committed yet.
      const collecting = store.gc.removeGarbageBlobs(lease, [blob], Date.now(), async () => {
        decided();
        if (kind === "postgres") await gate;
      });
      await hasDecided;
      // SQLite admits one writer: the PUT can only come after the collector's commit.
      if (kind === "sqlite") expect([...(await collecting).keys()]).toEqual([blob]);
      const m = manifest("ops-collector-first", [blob]);
      const put = other.commitManifest(
        "racing/ops-first",
        { manifest: m, tags: ["latest"], events: [] },
        async () => {},
        { blobs: [blob], manifests: [] },
      );
      if (kind === "postgres") {
        expect(await someoneWaitsOnALock(a)).toBe(true);
        open();
        expect([...(await collecting).keys()]).toEqual([blob]);
      }
      expect(await put).toEqual({ kind: "blob", digest: blob });
      expect(await store.blob(blob)).toBeNull();
      expect(await store.manifestByTag("racing/ops-first", "latest")).toBeNull();
      expect(await dangling(blob)).toBe(0);
      await store.locks.releaseLock(lease.name, lease.holder, 0);
    });

    it("through the interface, PUT first: the collector waits for commitManifest, then keeps the blob", async () => {
      const blob = await oldUnreferencedBlob("racing/ops-second", "ops-put-first");
      const lease = await heldLease("contract-race-ops-second");
      const m = manifest("ops-put-first", [blob]);
      let open!: () => void;
      const gate = new Promise<void>((r) => {
        open = r;
      });
      let locked!: () => void;
      const hasLocked = new Promise<void>((r) => {
        locked = r;
      });
      // Paused in its bytes step: its references are checked and locked, its rows not written yet.
      const putting = other.commitManifest(
        "racing/ops-second",
        { manifest: m, tags: ["latest"], events: [] },
        async () => {
          locked();
          await gate;
        },
        { blobs: [blob], manifests: [] },
      );
      await hasLocked;
      const files: string[][] = [];
      const collect = () =>
        store.gc.removeGarbageBlobs(lease, [blob], Date.now(), async (gone) => {
          files.push(gone);
        });
      let collecting: Promise<Map<string, number>>;
      if (kind === "postgres") {
        collecting = collect();
        expect(await someoneWaitsOnALock(a)).toBe(true);
        open();
        expect(await putting).toBeNull();
      } else {
        open();
        expect(await putting).toBeNull();
        collecting = collect();
      }
      expect([...(await collecting).keys()]).toEqual([]);
      expect(files).toEqual([[]]);
      expect(await store.blob(blob)).not.toBeNull();
      expect((await store.manifestByTag("racing/ops-second", "latest"))?.digest).toBe(m.digest);
      expect(await dangling(blob)).toBe(0);
      await store.locks.releaseLock(lease.name, lease.holder, 0);
    });
  });
});
