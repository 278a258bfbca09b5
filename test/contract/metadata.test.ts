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
import {
  acquireLock,
  deleteBlobRows,
  releaseLock,
  stillGarbageBlobs,
} from "../../src/metadata/gc-queries.js";
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

  it("keeps upload sessions and leases them to one writer at a time, across connections", async () => {
    await store.createUpload("up/app", "upload-1", 1000);
    expect(await store.upload("up/app", "upload-1")).toEqual({
      id: "upload-1",
      size: 0,
      digest: null,
      created_at: 1000,
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
    expect(await store.renewUploadLease("upload-1", holder, 60_000)).toBe(true);
    expect(await other.renewUploadLease("upload-1", "someone-else", 60_000)).toBe(false);
    // Only the holder's write counts, and it ends the lease.
    await other.finishUploadWrite("upload-1", "someone-else", 99, null);
    expect(await store.upload("up/app", "upload-1")).toMatchObject({ size: 0, digest: null });
    await store.finishUploadWrite("upload-1", holder, 4096, digestOf("part"));
    expect(await other.upload("up/app", "upload-1")).toMatchObject({ size: 4096, digest: digestOf("part") });
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
  });
});
