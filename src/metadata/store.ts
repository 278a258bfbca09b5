import { randomBytes } from "node:crypto";
import os from "node:os";
import { type CompiledQuery, type Kysely, sql, type Transaction } from "kysely";
import { bindQueries } from "./bound.js";
import type { MetadataDb } from "./db.js";
import { lockDigests } from "./dialect.js";
import { eventQueries, insertEvents, type NewEvent } from "./events-queries.js";
import type { EventStore, GcReads, GcWrites, LockStore, UiReads, UsageReads } from "./facets.js";
import { holderIsDead, PROCESS_PLACE } from "./gc-queries.js";
import { gcReads, gcWrites, lockQueries } from "./gc-store.js";
import { deleteManifestRows, type ManifestFields, manifestRow, unrelease } from "./manifest-rows.js";
import type { Database } from "./schema.js";
import { uiQueries } from "./ui-queries.js";
import { usageQueries } from "./usage-queries.js";

export type Tx = Transaction<Database>;
type Q = Kysely<Database> | Tx;

export interface ManifestRow {
  digest: string;
  media_type: string;
  size: number;
  content: Buffer;
  last_pulled_at: number | null;
}

/** A manifest to store: its row's fields and what it references. */
export interface NewManifest extends ManifestFields {
  blobs: string[];
  children: string[];
}

export interface ReferrerRow {
  digest: string;
  media_type: string;
  size: number;
  artifact_type: string | null;
  annotations: string | null;
}

export interface UploadRow {
  id: string;
  size: number;
  /**
   * SHA-256 of the first `size` bytes, as recorded by the last write; once a commit has begun, the digest
   * the upload is being committed as (which may be a sha512 one).
   */
  digest: string | null;
  created_at: number;
  /** Until when a request's lease on it runs (ms since the epoch), or null when nobody writes to it. */
  lease_until: number | null;
}

/**
 * A new holder token for one upload lease: host and pid, a random part that makes it this lease's alone,
 * and where the pid means something (PROCESS_PLACE). A lease ends when its time runs out, or at once when
 * a process in the same place (same kernel, same PID namespace) sees that its holder's pid is gone (a
 * replica or worker killed mid-request); a pid is never judged from another place (containers that share
 * a hostname but not a PID namespace would see each other's live processes as dead).
 */
function newLeaseHolder(): string {
  const nonce = randomBytes(6).toString("hex");
  return `${os.hostname()}:${process.pid}:${PROCESS_PLACE ? `${nonce}@${PROCESS_PLACE}` : nonce}`;
}

/**
 * The metadata store as the domain (src/registry) and src/http see it: every operation in domain terms.
 * No Kysely type, SQL, transaction object, compiled query or file path crosses it. Each writing operation
 * is one transaction inside the implementation; a step that is not the database's (renaming an upload into
 * place, writing a manifest's bytes, a stat) is a callback that runs inside that transaction, after the
 * write lock (SQLite) or the row locks (PostgreSQL) are held, as the collector's safety protocol needs.
 *
 * Declared here, beside its implementation, rather than in src/registry: the arrows point down
 * (registry -> metadata), the rows it returns (ManifestRow, UsageSummary, RepositoryGraph...) are
 * defined by the queries in this folder, and the interface changes together with its one implementation.
 * The domain imports it with `import type` only; SqlMetadataStore (SQLite and PostgreSQL) implements it.
 */
export interface MetadataStore {
  /** The web UI's read-only listings. */
  readonly ui: UiReads;
  /** Storage usage from the rows alone. */
  readonly usage: UsageReads;
  /** The notification outbox: events, endpoint cursors and leases, the delivery log. */
  readonly events: EventStore;
  /** Garbage collection, retention and upload purging: paged reads, and writes under a job lease. */
  readonly gc: GcReads & GcWrites;
  /** Job leases (rows of `locks`). */
  readonly locks: LockStore;

  /** Answers when the database does (readiness). */
  ping(): Promise<void>;

  // repositories, blobs, links
  repositoryId(name: string): Promise<number | null>;
  listRepositories(limit: number, last?: string): Promise<string[]>;
  /** The hot read: a prepared statement, no transaction. */
  linkedBlob(repository: string, digest: string): Promise<{ size: number; linkedAt: number } | null>;
  refreshLink(repository: string, digest: string, now?: number): Promise<boolean>;
  repositoriesLinking(digest: string, limit?: number): Promise<string[]>;
  blob(digest: string): Promise<{ size: number } | null>;

  // uploads
  createUpload(name: string, id: string, now?: number): Promise<void>;
  upload(name: string, id: string): Promise<UploadRow | null>;
  leaseUpload(id: string, ttlMs: number, watched?: number): Promise<string | null>;
  renewUploadLease(id: string, holder: string, ttlMs: number): Promise<boolean>;
  /** False when `holder` no longer holds the lease (nothing is written then). */
  noteUploadWrite(id: string, holder: string, size: number, digest: string): Promise<boolean>;
  finishUploadWrite(id: string, holder: string, size: number, digest: string | null): Promise<void>;
  deleteUploadRow(id: string): Promise<void>;

  // manifests and tags
  /** The hot reads: prepared statements, no transaction. */
  manifestByTag(repository: string, tag: string): Promise<ManifestRow | null>;
  manifestByDigest(repository: string, digest: string): Promise<ManifestRow | null>;
  markPulled(repository: string, digest: string, now?: number): Promise<void>;
  markPulledMany(marks: { name: string; digest: string; at: number }[]): Promise<void>;
  listTags(repositoryId: number, limit: number | undefined, last?: string): Promise<string[]>;
  referrers(repository: string, subject: string, artifactType?: string): Promise<ReferrerRow[]>;

  // changes, each one transaction
  /**
   * With `holder`, the upload's lease must still be its own: false (and nothing changed) when it is not.
   */
  commitBlob(
    name: string,
    blob: { digest: string; size: number; uploadId: string | null; holder?: string; events: NewEvent[] },
    place: () => Promise<void>,
  ): Promise<boolean>;
  /** Whether the bytes were in place; null (nothing changed) when `holder` no longer holds the lease. */
  commitBlobInPlace(
    name: string,
    blob: { digest: string; size: number; uploadId: string; holder?: string; events: NewEvent[] },
    present: () => Promise<boolean>,
  ): Promise<boolean | null>;
  linkExistingBlob(
    name: string,
    digest: string,
    source: string | null,
    events?: (size: number) => NewEvent[],
  ): Promise<boolean>;
  unlinkBlobOf(name: string, repositoryId: number, digest: string, events: NewEvent[]): Promise<boolean>;
  commitManifest(
    name: string,
    m: { manifest: NewManifest; tags: string[]; events: NewEvent[] },
    place: () => Promise<void>,
    check: { blobs: string[]; manifests: string[] } | null,
  ): Promise<{ kind: "blob" | "manifest"; digest: string } | null>;
  deleteReference(
    name: string,
    repositoryId: number,
    ref: { tag: string } | { digest: string },
    events: NewEvent[],
  ): Promise<boolean>;
  removeRepository(name: string, repositoryId: number, events: NewEvent[]): Promise<string[]>;
}

/**
 * The metadata store on SQLite or PostgreSQL (through Kysely). Multi-row changes run in one transaction;
 * the first statement of each writing transaction is a write, so that SQLite takes its write lock before anything is read and
 * concurrent writers (other workers, the garbage collector) are serialized.
 */
export class SqlMetadataStore implements MetadataStore {
  readonly db: Kysely<Database>;
  /** The hot read queries, built once; their parameters are bound per call. */
  private readonly hot: {
    manifestByTag: CompiledQuery;
    manifestByDigest: CompiledQuery;
    linkedBlob: CompiledQuery;
  };

  /** The web UI's read-only listings (src/metadata/ui-queries.ts). */
  readonly ui: UiReads;
  /** Storage usage from the rows alone (src/metadata/usage-queries.ts). */
  readonly usage: UsageReads;
  /** The notification outbox: events, endpoint cursors and leases, the delivery log. */
  readonly events: EventStore;
  /** Garbage collection, retention and upload purging: paged reads, and writes under a job lease. */
  readonly gc: GcReads & GcWrites;
  /** Job leases (rows of `locks`). */
  readonly locks: LockStore;

  constructor(readonly metadata: MetadataDb) {
    this.db = metadata.db;
    this.ui = bindQueries(this.db, uiQueries);
    this.usage = bindQueries(this.db, usageQueries);
    this.events = bindQueries(this.db, eventQueries);
    this.gc = { ...bindQueries(this.db, gcReads), ...gcWrites((fn) => this.transaction(fn)) };
    this.locks = bindQueries(this.db, lockQueries);
    const manifestColumns = ["m.digest", "m.media_type", "m.size", "m.content", "m.last_pulled_at"] as const;
    this.hot = {
      manifestByTag: this.db
        .selectFrom("repositories as r")
        .innerJoin("tags as t", "t.repository_id", "r.id")
        .innerJoin("manifests as m", (join) =>
          join.onRef("m.repository_id", "=", "r.id").onRef("m.digest", "=", "t.digest"),
        )
        .select(manifestColumns)
        .where("r.name", "=", "?")
        .where("t.name", "=", "?")
        .compile(),
      manifestByDigest: this.db
        .selectFrom("repositories as r")
        .innerJoin("manifests as m", "m.repository_id", "r.id")
        .select(manifestColumns)
        .where("r.name", "=", "?")
        .where("m.digest", "=", "?")
        .compile(),
      linkedBlob: this.db
        .selectFrom("repositories as r")
        .innerJoin("repository_blobs as rb", "rb.repository_id", "r.id")
        .innerJoin("blobs as b", "b.digest", "rb.digest")
        .select(["b.size", "rb.created_at as linked_at"])
        .where("r.name", "=", "?")
        .where("rb.digest", "=", "?")
        .compile(),
    };
  }

  /**
   * Called after every transaction that commits, before `transaction` resolves ([adoption, issue 12]:
   * registry:2 link files follow the rows, src/registry/distribution-sync.ts). Must not throw.
   */
  readonly afterCommit: (() => Promise<void>)[] = [];

  async transaction<T>(fn: (trx: Tx) => Promise<T>): Promise<T> {
    const result = await this.db.transaction().execute(fn);
    for (const hook of this.afterCommit) await hook();
    return result;
  }

  /** Answers when the database does (readiness). */
  async ping(): Promise<void> {
    await sql`select 1`.execute(this.db);
  }

  // ---------- repositories ----------

  async repositoryId(name: string, q: Q = this.db): Promise<number | null> {
    const row = await q.selectFrom("repositories").select("id").where("name", "=", name).executeTakeFirst();
    return row?.id ?? null;
  }

  /**
   * Creates the repository when missing and bumps its update time; takes the write lock (SQLite)
   * or the repository row's lock (PostgreSQL). An UPDATE first: on PostgreSQL every INSERT attempt
   * draws a value from the id sequence, even one that ends in ON CONFLICT, and this runs on every
   * push. Only a new repository gets to the upsert, which lets two processes create it at once.
   */
  async touchRepository(trx: Tx, name: string, now = Date.now()): Promise<number> {
    const updated = await trx
      .updateTable("repositories")
      .set({ updated_at: now })
      .where("name", "=", name)
      .returning("id")
      .executeTakeFirst();
    if (updated) return updated.id;
    const row = await trx
      .insertInto("repositories")
      .values({ name, created_at: now, updated_at: now })
      .onConflict((oc) => oc.column("name").doUpdateSet({ updated_at: now }))
      .returning("id")
      .executeTakeFirstOrThrow();
    return row.id;
  }

  /** Repositories that hold at least one manifest, in byte order, after `last`. */
  async listRepositories(limit: number, last?: string): Promise<string[]> {
    let query = this.db
      .selectFrom("repositories as r")
      .select("r.name")
      .where(({ exists, selectFrom }) =>
        exists(
          selectFrom("manifests as m").select(sql`1`.as("one")).whereRef("m.repository_id", "=", "r.id"),
        ),
      )
      .orderBy("r.name")
      .limit(limit);
    if (last !== undefined) query = query.where("r.name", ">", last);
    return (await query.execute()).map((r) => r.name);
  }

  // ---------- blobs ----------

  /** Size of a blob that `repository` may read, or null. */
  /** Size of a blob that `repository` may read and when its link was made or last refreshed, or null. */
  async linkedBlob(repository: string, digest: string): Promise<{ size: number; linkedAt: number } | null> {
    const row = await this.metadata.read<{ size: number; linked_at: number }>(this.hot.linkedBlob, [
      repository,
      digest,
    ]);
    return row ? { size: Number(row.size), linkedAt: Number(row.linked_at) } : null;
  }

  /**
   * Renews a repository's link to a blob, in one statement that takes the write lock (so it is ordered
   * against the garbage collector's deletions). False when the link is gone.
   */
  async refreshLink(repository: string, digest: string, now = Date.now()): Promise<boolean> {
    if (this.metadata.dialect === "postgres") {
      // PostgreSQL has no single write lock: the blob's row is share-locked first, which waits for a
      // collection batch that holds it FOR UPDATE (it may have judged the link stale already) and, once that
      // batch has committed, finds the row gone. A HEAD that renews a link therefore never answers for a
      // blob that a batch in progress deletes (issue 21).
      return this.db.transaction().execute(async (trx) => {
        if (!(await this.blob(digest, trx))) return false;
        return this.updateLink(trx, repository, digest, now);
      });
    }
    return this.updateLink(this.db, repository, digest, now);
  }

  private async updateLink(q: Q, repository: string, digest: string, now: number): Promise<boolean> {
    const result = await q
      .updateTable("repository_blobs")
      .set({ created_at: now })
      .where("digest", "=", digest)
      .where("repository_id", "=", (eb) =>
        eb.selectFrom("repositories").select("id").where("name", "=", repository),
      )
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /** Repositories that link `digest` (for a mount whose source was not named). */
  async repositoriesLinking(digest: string, limit = 50): Promise<string[]> {
    const rows = await this.db
      .selectFrom("repository_blobs as rb")
      .innerJoin("repositories as r", "r.id", "rb.repository_id")
      .select("r.name")
      .where("rb.digest", "=", digest)
      .limit(limit)
      .execute();
    return rows.map((r) => r.name);
  }

  /**
   * A stored blob's size, or null. Inside a transaction on PostgreSQL the row is share-locked until
   * the commit, so that the collector cannot delete the blob that this transaction goes on to use.
   */
  async blob(digest: string, q: Q = this.db): Promise<{ size: number } | null> {
    let query = q.selectFrom("blobs").select("size").where("digest", "=", digest);
    if (q !== this.db && this.metadata.dialect === "postgres") query = query.forShare();
    const row = await query.executeTakeFirst();
    return row ? { size: Number(row.size) } : null;
  }

  /**
   * PostgreSQL only (SQLite's write lock already serializes): share-locks the repository's links to
   * `digests` and their blob rows, in digest order, before a manifest that references them is
   * checked and stored. The collector takes the same rows FOR UPDATE before it re-checks and deletes,
   * so either it waits for this transaction (and then sees the manifest), or this one waits for it
   * (and then finds the blob gone, and refuses the manifest).
   */
  async lockLinkedBlobs(trx: Tx, repositoryId: number, digests: string[]): Promise<void> {
    if (this.metadata.dialect !== "postgres" || digests.length === 0) return;
    const sorted = [...new Set(digests)].sort();
    // Blob rows first, then links: the collector deletes in that order too (no lock cycle).
    for (let i = 0; i < sorted.length; i += 500) {
      const part = sorted.slice(i, i + 500);
      await trx
        .selectFrom("blobs")
        .select("digest")
        .where("digest", "in", part)
        .orderBy("digest")
        .forShare()
        .execute();
      await trx
        .selectFrom("repository_blobs")
        .select("digest")
        .where("repository_id", "=", repositoryId)
        .where("digest", "in", part)
        .orderBy("digest")
        .forShare()
        .execute();
    }
  }

  /** PostgreSQL only: share-locks manifests (an index's children) of a repository, as above. */
  async lockManifests(trx: Tx, repositoryId: number, digests: string[]): Promise<void> {
    if (this.metadata.dialect !== "postgres" || digests.length === 0) return;
    await trx
      .selectFrom("manifests")
      .select("digest")
      .where("repository_id", "=", repositoryId)
      .where("digest", "in", [...new Set(digests)].sort())
      .orderBy("digest")
      .forShare()
      .execute();
  }

  /** Records a stored blob (or refreshes it) inside a transaction that holds the write lock. */
  async upsertBlob(trx: Tx, digest: string, size: number, now = Date.now()): Promise<void> {
    // On PostgreSQL, ordered against the collector's orphan-file sweep of the same digest.
    await lockDigests(trx, [digest]);
    await trx
      .insertInto("blobs")
      .values({ digest, size, created_at: now })
      .onConflict((oc) => oc.column("digest").doUpdateSet({ created_at: now }))
      .execute();
  }

  async linkBlob(trx: Tx, repositoryId: number, digest: string, now = Date.now()): Promise<void> {
    await trx
      .insertInto("repository_blobs")
      .values({ repository_id: repositoryId, digest, created_at: now })
      .onConflict((oc) => oc.columns(["repository_id", "digest"]).doUpdateSet({ created_at: now }))
      .execute();
  }

  async unlinkBlob(trx: Tx, repositoryId: number, digest: string): Promise<boolean> {
    const result = await trx
      .deleteFrom("repository_blobs")
      .where("repository_id", "=", repositoryId)
      .where("digest", "=", digest)
      .executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  async isLinked(trx: Q, repositoryId: number, digest: string): Promise<boolean> {
    const row = await trx
      .selectFrom("repository_blobs")
      .select("digest")
      .where("repository_id", "=", repositoryId)
      .where("digest", "=", digest)
      .executeTakeFirst();
    return row !== undefined;
  }

  // ---------- uploads ----------

  async createUpload(name: string, id: string, now = Date.now()): Promise<void> {
    await this.transaction(async (trx) => {
      const repositoryId = await this.touchRepository(trx, name, now);
      await trx
        .insertInto("uploads")
        .values({
          id,
          repository_id: repositoryId,
          size: 0,
          digest: null,
          created_at: now,
          updated_at: now,
          lease_until: null,
          lease_holder: null,
        })
        .execute();
    });
  }

  async upload(name: string, id: string): Promise<UploadRow | null> {
    const row = await this.db
      .selectFrom("uploads as u")
      .innerJoin("repositories as r", "r.id", "u.repository_id")
      .select(["u.id", "u.size", "u.digest", "u.created_at", "u.lease_until"])
      .where("u.id", "=", id)
      .where("r.name", "=", name)
      .executeTakeFirst();
    return row
      ? {
          id: row.id,
          size: Number(row.size),
          digest: row.digest,
          created_at: Number(row.created_at),
          lease_until: row.lease_until === null ? null : Number(row.lease_until),
        }
      : null;
  }

  /**
   * Takes the upload's lease so that no other request or process appends at the same time, when nobody
   * holds it, its holder let it run out, or its holder is a process that is gone (holderIsDead, judged
   * only where its pid means something; see newLeaseHolder). With `watched`, only the lease that ran
   * until then is taken over (the one a waiting request watched), never one released or renewed since.
   * Returns the holder token that renews and releases it, or null when someone else holds it.
   */
  async leaseUpload(id: string, ttlMs: number, watched?: number): Promise<string | null> {
    const now = Date.now();
    const holder = newLeaseHolder();
    const result = await this.db
      .updateTable("uploads")
      .set({ lease_until: now + ttlMs, lease_holder: holder })
      .where("id", "=", id)
      .where((eb) =>
        watched === undefined
          ? eb.or([eb("lease_until", "is", null), eb("lease_until", "<", now)])
          : eb.and([eb("lease_until", "=", watched), eb("lease_until", "<", now)]),
      )
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) > 0) return holder;
    const current = await this.db
      .selectFrom("uploads")
      .select(["lease_holder", "lease_until"])
      .where("id", "=", id)
      .executeTakeFirst();
    const dead = current?.lease_holder;
    if (!dead || !holderIsDead(dead, undefined, true)) return null;
    if (watched !== undefined && Number(current.lease_until) !== watched) return null;
    const stolen = await this.db
      .updateTable("uploads")
      .set({ lease_until: now + ttlMs, lease_holder: holder })
      .where("id", "=", id)
      .where("lease_holder", "=", dead)
      .executeTakeFirst();
    return Number(stolen.numUpdatedRows) > 0 ? holder : null;
  }

  /** Extends a lease still held by `holder`; false when it is not (it ran out and was taken over). */
  async renewUploadLease(id: string, holder: string, ttlMs: number): Promise<boolean> {
    const result = await this.db
      .updateTable("uploads")
      .set({ lease_until: Date.now() + ttlMs })
      .where("id", "=", id)
      .where("lease_holder", "=", holder)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /**
   * Records what an upload holds while its lease is kept: before a commit moves the bytes into place, so
   * that a crash between that move and the commit's transaction leaves a row that names where they went.
   */
  async noteUploadWrite(id: string, holder: string, size: number, digest: string): Promise<boolean> {
    const result = await this.db
      .updateTable("uploads")
      .set({ size, digest, updated_at: Date.now() })
      .where("id", "=", id)
      .where("lease_holder", "=", holder)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /** Records the new size (and the digest of those bytes) and releases the lease, if `holder` still has it. */
  async finishUploadWrite(id: string, holder: string, size: number, digest: string | null): Promise<void> {
    await this.db
      .updateTable("uploads")
      .set({ size, digest, updated_at: Date.now(), lease_until: null, lease_holder: null })
      .where("id", "=", id)
      .where("lease_holder", "=", holder)
      .execute();
  }

  /**
   * Inside a commit's transaction, before anything moves: the upload's lease is still `holder`'s. A write,
   * so that on PostgreSQL the row stays locked until the commit ends (a takeover waits, then finds no row);
   * SQLite's write lock is held already. Throws LeaseNotHeld when it is not.
   */
  private async assertUploadHeld(trx: Q, id: string, holder: string): Promise<void> {
    const result = await trx
      .updateTable("uploads")
      .set({ updated_at: Date.now() })
      .where("id", "=", id)
      .where("lease_holder", "=", holder)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) === 0) throw new LeaseNotHeld(`upload ${id}: lease not held`);
  }

  async deleteUploadRow(id: string, q: Q = this.db): Promise<void> {
    await q.deleteFrom("uploads").where("id", "=", id).execute();
  }

  // ---------- manifests and tags ----------

  async manifestByTag(repository: string, tag: string): Promise<ManifestRow | null> {
    const row = await this.metadata.read<ManifestRow>(this.hot.manifestByTag, [repository, tag]);
    return row ? { ...row, size: Number(row.size) } : null;
  }

  async manifestByDigest(repository: string, digest: string): Promise<ManifestRow | null> {
    const row = await this.metadata.read<ManifestRow>(this.hot.manifestByDigest, [repository, digest]);
    return row ? { ...row, size: Number(row.size) } : null;
  }

  /** Records pull times of several manifests in one transaction. */
  async markPulledMany(marks: { name: string; digest: string; at: number }[]): Promise<void> {
    await this.transaction(async (trx) => {
      for (const { name, digest, at } of marks) {
        await trx
          .updateTable("manifests")
          .set({ last_pulled_at: at })
          .where("digest", "=", digest)
          .where("repository_id", "=", (eb) =>
            eb.selectFrom("repositories").select("id").where("name", "=", name),
          )
          .execute();
      }
    });
  }

  async markPulled(repository: string, digest: string, now = Date.now()): Promise<void> {
    const repositoryId = await this.repositoryId(repository);
    if (repositoryId === null) return;
    await this.db
      .updateTable("manifests")
      .set({ last_pulled_at: now })
      .where("repository_id", "=", repositoryId)
      .where("digest", "=", digest)
      .execute();
  }

  async hasManifest(q: Q, repositoryId: number, digest: string): Promise<boolean> {
    const row = await q
      .selectFrom("manifests")
      .select("digest")
      .where("repository_id", "=", repositoryId)
      .where("digest", "=", digest)
      .executeTakeFirst();
    return row !== undefined;
  }

  /**
   * Inserts (or keeps) a manifest with its references; the caller holds the write lock (SQLite).
   * On PostgreSQL a manifest that exists is share-locked instead, so that the collector cannot
   * delete it under a tag this transaction is about to set; one deleted meanwhile is inserted again.
   */
  async insertManifest(trx: Tx, repositoryId: number, m: NewManifest, now = Date.now()): Promise<void> {
    // Pushed again: whoever pushed it wants it, whatever index it once belonged to.
    await unrelease(trx, repositoryId, m.digest);
    for (let attempt = 0; ; attempt++) {
      const inserted = await trx
        .insertInto("manifests")
        .values(manifestRow(repositoryId, m, now))
        .onConflict((oc) => oc.columns(["repository_id", "digest"]).doNothing())
        .returning("digest")
        .executeTakeFirst();
      if (inserted) break;
      if (this.metadata.dialect !== "postgres") return;
      const kept = await trx
        .selectFrom("manifests")
        .select("digest")
        .where("repository_id", "=", repositoryId)
        .where("digest", "=", m.digest)
        .forShare()
        .executeTakeFirst();
      if (kept) return;
      if (attempt >= 3) throw new Error(`manifest ${m.digest} keeps disappearing while being stored`);
    }
    const blobs = [...new Set(m.blobs)];
    for (let i = 0; i < blobs.length; i += 200) {
      await trx
        .insertInto("manifest_blobs")
        .values(
          blobs
            .slice(i, i + 200)
            .map((b) => ({ repository_id: repositoryId, manifest_digest: m.digest, blob_digest: b })),
        )
        .onConflict((oc) => oc.doNothing())
        .execute();
    }
    const children = [...new Set(m.children)];
    for (let i = 0; i < children.length; i += 200) {
      await trx
        .insertInto("manifest_children")
        .values(
          children
            .slice(i, i + 200)
            .map((c) => ({ repository_id: repositoryId, parent_digest: m.digest, child_digest: c })),
        )
        .onConflict((oc) => oc.doNothing())
        .execute();
    }
  }

  async setTag(trx: Tx, repositoryId: number, tag: string, digest: string, now = Date.now()): Promise<void> {
    await trx
      .insertInto("tags")
      .values({ repository_id: repositoryId, name: tag, digest, created_at: now, updated_at: now })
      .onConflict((oc) => oc.columns(["repository_id", "name"]).doUpdateSet({ digest, updated_at: now }))
      .execute();
  }

  async deleteTag(trx: Tx, repositoryId: number, tag: string): Promise<boolean> {
    const result = await trx
      .deleteFrom("tags")
      .where("repository_id", "=", repositoryId)
      .where("name", "=", tag)
      .executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  /** Removes a manifest, the tags that point at it and its reference rows. */
  async deleteManifest(trx: Tx, repositoryId: number, digest: string): Promise<boolean> {
    return deleteManifestRows(trx, repositoryId, digest);
  }

  /** Removes every row of a repository; returns the ids of its uploads so their files can go too. */
  async deleteRepository(trx: Tx, repositoryId: number): Promise<string[]> {
    const uploads = await trx
      .selectFrom("uploads")
      .select("id")
      .where("repository_id", "=", repositoryId)
      .execute();
    for (const table of [
      "tags",
      "manifest_blobs",
      "manifest_children",
      "manifests",
      "repository_blobs",
      "uploads",
      "released_manifests",
    ] as const) {
      await trx.deleteFrom(table).where("repository_id", "=", repositoryId).execute();
    }
    await trx.deleteFrom("repositories").where("id", "=", repositoryId).execute();
    return uploads.map((u) => u.id);
  }

  async listTags(repositoryId: number, limit: number | undefined, last?: string): Promise<string[]> {
    let query = this.db
      .selectFrom("tags")
      .select("name")
      .where("repository_id", "=", repositoryId)
      .orderBy("name");
    if (last !== undefined) query = query.where("name", ">", last);
    if (limit !== undefined) query = query.limit(limit);
    return (await query.execute()).map((r) => r.name);
  }

  async referrers(repository: string, subject: string, artifactType?: string): Promise<ReferrerRow[]> {
    let query = this.db
      .selectFrom("repositories as r")
      .innerJoin("manifests as m", "m.repository_id", "r.id")
      .select(["m.digest", "m.media_type", "m.size", "m.artifact_type", "m.annotations"])
      .where("r.name", "=", repository)
      .where("m.subject", "=", subject)
      .orderBy("m.created_at")
      .orderBy("m.digest");
    if (artifactType !== undefined) query = query.where("m.artifact_type", "=", artifactType);
    return (await query.execute()).map((r) => ({ ...r, size: Number(r.size) }));
  }

  // ---------- domain operations: each one transaction, none hands out a Tx ----------

  /**
   * Records a blob whose bytes `place` moves into place (an upload's rename), links it to `name`, drops
   * the upload row `uploadId` (when given) and appends `events`: in one transaction that holds the write
   * lock before `place` runs, so that the collector can never delete bytes being made visible.
   */
  async commitBlob(
    name: string,
    blob: { digest: string; size: number; uploadId: string | null; holder?: string; events: NewEvent[] },
    place: () => Promise<void>,
  ): Promise<boolean> {
    try {
      await this.commitBlobIn(name, blob, place);
      return true;
    } catch (err) {
      if (err instanceof LeaseNotHeld) return false;
      throw err;
    }
  }

  private async commitBlobIn(
    name: string,
    blob: { digest: string; size: number; uploadId: string | null; holder?: string; events: NewEvent[] },
    place: () => Promise<void>,
  ): Promise<void> {
    await this.transaction(async (trx) => {
      const repositoryId = await this.touchRepository(trx, name);
      if (blob.uploadId !== null && blob.holder !== undefined) {
        await this.assertUploadHeld(trx, blob.uploadId, blob.holder);
      }
      await this.upsertBlob(trx, blob.digest, blob.size);
      await place();
      await this.linkBlob(trx, repositoryId, blob.digest);
      if (blob.uploadId !== null) await this.deleteUploadRow(blob.uploadId, trx);
      await insertEvents(trx, blob.events);
    });
  }

  /**
   * Finishes a commit that stopped after its rename: under the write lock, `present` says whether the
   * bytes are in place (then the blob is recorded and linked, and `events` appended); the upload row goes
   * either way. Returns what `present` said.
   */
  async commitBlobInPlace(
    name: string,
    blob: { digest: string; size: number; uploadId: string; holder?: string; events: NewEvent[] },
    present: () => Promise<boolean>,
  ): Promise<boolean | null> {
    try {
      return await this.commitBlobInPlaceIn(name, blob, present);
    } catch (err) {
      if (err instanceof LeaseNotHeld) return null;
      throw err;
    }
  }

  private async commitBlobInPlaceIn(
    name: string,
    blob: { digest: string; size: number; uploadId: string; holder?: string; events: NewEvent[] },
    present: () => Promise<boolean>,
  ): Promise<boolean> {
    return this.transaction(async (trx) => {
      const repositoryId = await this.touchRepository(trx, name);
      if (blob.holder !== undefined) await this.assertUploadHeld(trx, blob.uploadId, blob.holder);
      const ok = await present();
      if (ok) {
        await this.upsertBlob(trx, blob.digest, blob.size);
        await this.linkBlob(trx, repositoryId, blob.digest);
        await insertEvents(trx, blob.events);
      }
      await this.deleteUploadRow(blob.uploadId, trx);
      return ok;
    });
  }

  /**
   * Links into `name` a blob that `source` links and that is still stored (a mount, or with `source`
   * null a blob stored by the pull-through cache). `events` gets the blob's size. False when not; then
   * nothing is written (the repository row that the transaction began with is rolled back too).
   */
  async linkExistingBlob(
    name: string,
    digest: string,
    source: string | null,
    events: (size: number) => NewEvent[] = () => [],
  ): Promise<boolean> {
    try {
      return await this.transaction(async (trx) => {
        const repositoryId = await this.touchRepository(trx, name);
        if (source !== null) {
          const sourceId = await this.repositoryId(source, trx);
          if (sourceId === null || !(await this.isLinked(trx, sourceId, digest))) throw new NotLinked();
        }
        const blob = await this.blob(digest, trx);
        if (!blob) throw new NotLinked();
        await this.linkBlob(trx, repositoryId, digest);
        await insertEvents(trx, events(blob.size));
        return true;
      });
    } catch (err) {
      if (err instanceof NotLinked) return false;
      throw err;
    }
  }

  /** Removes the link of `name` (whose id is `repositoryId`) to a blob, appending `events` when it existed. */
  async unlinkBlobOf(
    name: string,
    repositoryId: number,
    digest: string,
    events: NewEvent[],
  ): Promise<boolean> {
    return this.transaction(async (trx) => {
      await this.touchRepository(trx, name);
      const unlinked = await this.unlinkBlob(trx, repositoryId, digest);
      if (unlinked) await insertEvents(trx, events);
      return unlinked;
    });
  }

  /**
   * Commits a manifest with its tags and references, in one transaction: checks (with the locks that
   * PostgreSQL needs, see lockLinkedBlobs) that `name` links every blob of `check.blobs` and holds every
   * manifest of `check.manifests`; then `place` writes its bytes, and the blob, its link, the manifest
   * rows, the tags and `events` are recorded. Returns what is missing (and changes nothing) or null.
   */
  async commitManifest(
    name: string,
    m: { manifest: NewManifest; tags: string[]; events: NewEvent[] },
    place: () => Promise<void>,
    check: { blobs: string[]; manifests: string[] } | null,
  ): Promise<{ kind: "blob" | "manifest"; digest: string } | null> {
    try {
      await this.transaction(async (trx) => {
        const repositoryId = await this.touchRepository(trx, name);
        if (check) {
          await this.lockLinkedBlobs(trx, repositoryId, check.blobs);
          await this.lockManifests(trx, repositoryId, check.manifests);
          for (const blob of check.blobs) {
            if (!(await this.isLinked(trx, repositoryId, blob))) throw new Missing("blob", blob);
          }
          for (const child of check.manifests) {
            if (!(await this.hasManifest(trx, repositoryId, child))) throw new Missing("manifest", child);
          }
        }
        await place();
        await this.upsertBlob(trx, m.manifest.digest, m.manifest.content.length);
        await this.linkBlob(trx, repositoryId, m.manifest.digest);
        await this.insertManifest(trx, repositoryId, m.manifest);
        for (const tag of m.tags) await this.setTag(trx, repositoryId, tag, m.manifest.digest);
        await insertEvents(trx, m.events);
      });
      return null;
    } catch (err) {
      if (err instanceof Missing) return { kind: err.kind, digest: err.digest };
      throw err;
    }
  }

  /**
   * DELETE of a tag (that tag only) or of a manifest by digest (with every tag on it and its references),
   * appending `events` when something went. False when there was nothing to delete.
   */
  async deleteReference(
    name: string,
    repositoryId: number,
    ref: { tag: string } | { digest: string },
    events: NewEvent[],
  ): Promise<boolean> {
    return this.transaction(async (trx) => {
      await this.touchRepository(trx, name);
      const deleted =
        "tag" in ref
          ? await this.deleteTag(trx, repositoryId, ref.tag)
          : await this.deleteManifest(trx, repositoryId, ref.digest);
      if (deleted) await insertEvents(trx, events);
      return deleted;
    });
  }

  /** Removes every row of repository `name`, appending `events`; returns the ids of its uploads. */
  async removeRepository(name: string, repositoryId: number, events: NewEvent[]): Promise<string[]> {
    return this.transaction(async (trx) => {
      await this.touchRepository(trx, name);
      const uploads = await this.deleteRepository(trx, repositoryId);
      await insertEvents(trx, events);
      return uploads;
    });
  }
}

/** Nothing to link: ends linkExistingBlob's transaction, so that a miss writes nothing. */
class NotLinked extends Error {}

/** A reference a manifest needs and the repository lacks: ends commitManifest's transaction. */
/** A commit found that the upload's lease is no longer its writer's: the transaction is rolled back. */
class LeaseNotHeld extends Error {}

class Missing extends Error {
  constructor(
    readonly kind: "blob" | "manifest",
    readonly digest: string,
  ) {
    super(`missing ${kind} ${digest}`);
  }
}
