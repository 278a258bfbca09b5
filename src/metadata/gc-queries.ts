import { randomBytes } from "node:crypto";
import { readFileSync, readlinkSync } from "node:fs";
import os from "node:os";
import { type Kysely, sql, type Transaction } from "kysely";
import { isPostgres, lockDigests } from "./dialect.js";
import type { Database } from "./schema.js";

/**
 * The queries of garbage collection, retention and upload purging (issue 6), and the job leases in
 * `locks`. Everything here is plain SQL through Kysely, so that SQLite and PostgreSQL share it.
 *
 * Reading queries page through their tables in key order with a bounded page size, so that no
 * single statement scans a whole table (on SQLite a statement blocks its process's event loop).
 */

type Q = Kysely<Database> | Transaction<Database>;

const n = (value: unknown): number => Number(value ?? 0);

// ------------------------------------------------------------------------------------------------
// Leases

/** A job lease row as stored: `holder` is `run:<host>:<pid>:<nonce>` while a job runs, `idle:...` between runs. */
export interface LockRow {
  name: string;
  holder: string;
  expires_at: number;
}

export class LeaseLostError extends Error {
  constructor(name: string) {
    super(`the ${name} lease was lost (another process took it over); stopping`);
    this.name = "LeaseLostError";
  }
}

/** A fresh holder identity for one job run: unique even for two runs in one process. */
export function newHolder(): string {
  return `${os.hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`;
}

export async function readLock(db: Q, name: string): Promise<LockRow | null> {
  const row = await db.selectFrom("locks").selectAll().where("name", "=", name).executeTakeFirst();
  return row ? { ...row, expires_at: n(row.expires_at) } : null;
}

/**
 * Takes the lease `name` for `holder` until now + ttl, when it is free: missing, expired, held by a
 * process on this host that is gone, or (with `takeIdle`) merely resting between scheduled runs.
 * One conditional UPDATE or INSERT: atomic in SQLite and PostgreSQL alike.
 */
export async function acquireLock(
  db: Kysely<Database>,
  name: string,
  holder: string,
  ttlMs: number,
  takeIdle: boolean,
): Promise<boolean> {
  const now = Date.now();
  const run = `run:${holder}`;
  const updated = await db
    .updateTable("locks")
    .set({ holder: run, expires_at: now + ttlMs })
    .where("name", "=", name)
    .where((eb) =>
      takeIdle
        ? eb.or([eb("expires_at", "<", now), eb("holder", "like", "idle:%")])
        : eb("expires_at", "<", now),
    )
    .executeTakeFirst();
  if (n(updated.numUpdatedRows) > 0) return true;
  const inserted = await db
    .insertInto("locks")
    .values({ name, holder: run, expires_at: now + ttlMs })
    .onConflict((oc) => oc.column("name").doNothing())
    .executeTakeFirst();
  if (n(inserted.numInsertedOrUpdatedRows) > 0) return true;
  // A run lease whose process on this host has died is taken over at once (no need to wait for expiry).
  const current = await readLock(db, name);
  if (current?.holder.startsWith("run:") && holderIsDead(current.holder.slice(4))) {
    const stolen = await db
      .updateTable("locks")
      .set({ holder: run, expires_at: now + ttlMs })
      .where("name", "=", name)
      .where("holder", "=", current.holder)
      .executeTakeFirst();
    return n(stolen.numUpdatedRows) > 0;
  }
  return false;
}

/**
 * Extends a held lease. Inside a transaction this is the first statement, a write: SQLite takes its
 * write lock before anything is read, so the checks that follow see the latest commits and nothing
 * can commit until this transaction ends. Returns false when the lease is no longer ours.
 */
export async function renewLock(q: Q, name: string, holder: string, ttlMs: number): Promise<boolean> {
  const result = await q
    .updateTable("locks")
    .set({ expires_at: Date.now() + ttlMs })
    .where("name", "=", name)
    .where("holder", "=", `run:${holder}`)
    .executeTakeFirst();
  return n(result.numUpdatedRows) > 0;
}

/** Ends a run: the row rests as `idle:` until `idleUntil` (the next scheduled run), or is free at once. */
export async function releaseLock(db: Q, name: string, holder: string, idleUntil: number): Promise<void> {
  await db
    .updateTable("locks")
    .set({ holder: `idle:${holder}`, expires_at: idleUntil })
    .where("name", "=", name)
    .where("holder", "=", `run:${holder}`)
    .execute();
}

/** Every lease row whose name starts with `prefix` (such as `serve:`, one row per serving process). */
export async function locksNamed(db: Q, prefix: string): Promise<LockRow[]> {
  const rows = await db
    .selectFrom("locks")
    .selectAll()
    .where("name", ">=", prefix)
    .where("name", "<", prefixEnd(prefix))
    .orderBy("name")
    .execute();
  return rows.map((row) => ({ ...row, expires_at: n(row.expires_at) }));
}

/** Removes the rows named `prefix...` that ran out before `before`: those of processes long gone. */
export async function dropLocks(db: Q, prefix: string, before: number): Promise<void> {
  await db
    .deleteFrom("locks")
    .where("name", ">=", prefix)
    .where("name", "<", prefixEnd(prefix))
    .where("expires_at", "<", before)
    .execute();
}

/** The first string after every string that starts with `prefix` (a range instead of LIKE and its escapes). */
function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

/**
 * Where this process runs, as far as its pids go: the kernel's boot id and the inode of its PID namespace
 * (Linux). Two processes in the same place see the same pids, so a pid that names no process in one names
 * none in the other; a hostname alone does not tell that (containers with the host's network share its
 * hostname, not its pids). Null where it cannot be told.
 */
export const PROCESS_PLACE: string | null = (() => {
  try {
    const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim().replaceAll("-", "");
    const namespace = /\[(\d+)\]/.exec(readlinkSync("/proc/self/ns/pid"))?.[1];
    return /^[0-9a-f]{32}$/.test(boot) && namespace ? `${boot}.${namespace}` : null;
  } catch {
    return null;
  }
})();

/**
 * Whether the lease holder `host:pid:nonce` names a process on this host that no longer exists. This
 * process's own pid counts as alive, unless `self` is given: then a holder with our pid and another name
 * is an earlier process that had this pid (a restarted container), gone.
 *
 * A holder whose nonce ends with `@<place>` (PROCESS_PLACE) is judged only in that place. With `placed`,
 * a holder that names no place is never judged dead (upload leases: a wrong guess there lets two writers
 * into one file).
 */
export function holderIsDead(holder: string, self?: string, placed = false): boolean {
  const parts = holder.split(":");
  if (parts.length < 3) return false;
  const pid = Number(parts[parts.length - 2]);
  const host = parts.slice(0, -2).join(":");
  if (host !== os.hostname() || !Number.isInteger(pid) || pid <= 0) return false;
  const at = parts[parts.length - 1]!.indexOf("@");
  const place = at < 0 ? null : parts[parts.length - 1]!.slice(at + 1);
  if (place === null ? placed : place !== PROCESS_PLACE) return false;
  if (pid === process.pid) return self !== undefined && holder !== self;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
}

// ------------------------------------------------------------------------------------------------
// Blobs

export interface BlobPageRow {
  digest: string;
  size: number;
  garbage: boolean;
}

/**
 * Not referenced by any manifest (as config or layer, or as a manifest's own bytes), not linked to any
 * repository since `cutoff`, and stored before `cutoff`. Stale links (older than cutoff) do not keep a
 * blob: they are the leftovers of a deleted manifest or of an upload whose manifest never came.
 */
/** The manifest aliased `m` has no tag in its repository. */
const untaggedManifest = sql<boolean>`not exists (
  select 1 from tags t where t.repository_id = m.repository_id and t.digest = m.digest
)`;

function unreferencedBlob(cutoff: number) {
  return sql<boolean>`(
    b.created_at < ${cutoff}
    and not exists (select 1 from manifest_blobs mb where mb.blob_digest = b.digest)
    and not exists (select 1 from manifests m where m.digest = b.digest)
    and not exists (select 1 from repository_blobs rb where rb.digest = b.digest and rb.created_at >= ${cutoff})
  )`;
}

/** One page of `blobs` in digest order after `after`, each flagged garbage or not. */
export async function blobPage(db: Q, after: string, limit: number, cutoff: number): Promise<BlobPageRow[]> {
  const rows = await db
    .selectFrom((eb) =>
      eb
        .selectFrom("blobs")
        .select(["digest", "size", "created_at"])
        .where("digest", ">", after)
        .orderBy("digest")
        .limit(limit)
        .as("b"),
    )
    .select(["b.digest", "b.size"])
    .select(sql<number>`case when ${unreferencedBlob(cutoff)} then 1 else 0 end`.as("garbage"))
    .orderBy("b.digest")
    .execute();
  return rows.map((r) => ({ digest: r.digest, size: n(r.size), garbage: n(r.garbage) === 1 }));
}

/**
 * Of `digests`, those that are still garbage (run inside the deleting transaction).
 *
 * On PostgreSQL the blob rows are locked FOR UPDATE first, in digest order, and checked by a second
 * statement: under READ COMMITTED that statement sees every transaction that committed while we
 * waited for the locks. A manifest PUT share-locks the rows of the blobs it references
 * (MetadataStore.lockLinkedBlobs), so it either commits before the check (the blob is kept) or waits
 * for our commit and then finds the blob gone (the PUT is refused).
 */
export async function stillGarbageBlobs(
  trx: Q,
  digests: string[],
  cutoff: number,
): Promise<Map<string, number>> {
  if (digests.length === 0) return new Map();
  if (isPostgres(trx)) {
    await trx
      .selectFrom("blobs")
      .select("digest")
      .where("digest", "in", [...digests].sort())
      .orderBy("digest")
      .forUpdate()
      .execute();
  }
  const rows = await trx
    .selectFrom("blobs as b")
    .select(["b.digest", "b.size"])
    .where("b.digest", "in", digests)
    .where(unreferencedBlob(cutoff))
    .execute();
  return new Map(rows.map((r) => [r.digest, n(r.size)]));
}

/** Removes the rows of blobs (their remaining, stale links first). */
export async function deleteBlobRows(trx: Q, digests: string[]): Promise<void> {
  if (digests.length === 0) return;
  await trx.deleteFrom("repository_blobs").where("digest", "in", digests).execute();
  await trx.deleteFrom("blobs").where("digest", "in", digests).execute();
}

/**
 * Which of `digests` are not orphan files: those with a blob row, and those an upload row names as its
 * bytes (a commit that stopped after moving the bytes into place and before its transaction; the upload's
 * final PUT finishes it, so the file must stay until that upload is completed or purged). Inside a
 * transaction on PostgreSQL, first takes the digests' advisory locks (as recording a blob does), so that an
 * orphan file judged here cannot be a blob whose row another transaction is inserting.
 */
export async function existingBlobs(q: Q, digests: string[]): Promise<Set<string>> {
  if (digests.length === 0) return new Set();
  if (q.isTransaction) await lockDigests(q, digests);
  const rows = await q.selectFrom("blobs").select("digest").where("digest", "in", digests).execute();
  const uploads = await q.selectFrom("uploads").select("digest").where("digest", "in", digests).execute();
  return new Set([...rows.map((r) => r.digest), ...uploads.flatMap((u) => (u.digest ? [u.digest] : []))]);
}

export interface BlobReferences {
  /** (repository id, manifest digest) of the manifests listing the blob as config or layer. */
  manifests: { repositoryId: number; digest: string }[];
  /** Repositories where the blob is a manifest's own bytes. */
  asManifest: number[];
  /** Links made since the cutoff. */
  freshLinks: number;
  createdAt: number;
  size: number;
}

/** Everything that keeps a blob (for the dry run, which simulates removing manifests). */
export async function blobReferences(db: Q, digest: string, cutoff: number): Promise<BlobReferences | null> {
  const blob = await db
    .selectFrom("blobs")
    .select(["size", "created_at"])
    .where("digest", "=", digest)
    .executeTakeFirst();
  if (!blob) return null;
  const manifests = await db
    .selectFrom("manifest_blobs")
    .select(["repository_id", "manifest_digest"])
    .where("blob_digest", "=", digest)
    .execute();
  const asManifest = await db
    .selectFrom("manifests")
    .select("repository_id")
    .where("digest", "=", digest)
    .execute();
  const fresh = await db
    .selectFrom("repository_blobs")
    .select((eb) => eb.fn.countAll<number>().as("count"))
    .where("digest", "=", digest)
    .where("created_at", ">=", cutoff)
    .executeTakeFirst();
  return {
    manifests: manifests.map((r) => ({ repositoryId: n(r.repository_id), digest: r.manifest_digest })),
    asManifest: asManifest.map((r) => n(r.repository_id)),
    freshLinks: n(fresh?.count),
    createdAt: n(blob.created_at),
    size: n(blob.size),
  };
}

/** Config and layer digests of one manifest. */
export async function manifestBlobDigests(db: Q, repositoryId: number, manifest: string): Promise<string[]> {
  const rows = await db
    .selectFrom("manifest_blobs")
    .select("blob_digest")
    .where("repository_id", "=", repositoryId)
    .where("manifest_digest", "=", manifest)
    .execute();
  return rows.map((r) => r.blob_digest);
}

// ------------------------------------------------------------------------------------------------
// Repository links

export interface LinkKey {
  repositoryId: number;
  digest: string;
}

export interface LinkPageRow extends LinkKey {
  stale: boolean;
}

/**
 * A link older than `cutoff` that no manifest of its repository needs: the repository can no longer
 * use the blob (HEAD answers 404), though other repositories may still hold it.
 */
function staleLink(cutoff: number) {
  return sql<boolean>`(
    rb.created_at < ${cutoff}
    and not exists (select 1 from manifest_blobs mb where mb.blob_digest = rb.digest and mb.repository_id = rb.repository_id)
    and not exists (select 1 from manifests m where m.repository_id = rb.repository_id and m.digest = rb.digest)
  )`;
}

/** One page of `repository_blobs` in key order after `after`, each flagged stale or not. */
export async function linkPage(db: Q, after: LinkKey, limit: number, cutoff: number): Promise<LinkPageRow[]> {
  const rows = await db
    .selectFrom("repository_blobs as rb")
    .select(["rb.repository_id", "rb.digest"])
    .select(sql<number>`case when ${staleLink(cutoff)} then 1 else 0 end`.as("stale"))
    .where((eb) =>
      eb.or([
        eb("rb.repository_id", ">", after.repositoryId),
        eb.and([eb("rb.repository_id", "=", after.repositoryId), eb("rb.digest", ">", after.digest)]),
      ]),
    )
    .orderBy("rb.repository_id")
    .orderBy("rb.digest")
    .limit(limit)
    .execute();
  return rows.map((r) => ({ repositoryId: n(r.repository_id), digest: r.digest, stale: n(r.stale) === 1 }));
}

/** Deletes the links of `keys` that are still stale; returns how many went. */
export async function deleteStaleLinks(trx: Q, keys: LinkKey[], cutoff: number): Promise<number> {
  let removed = 0;
  const byRepo = new Map<number, string[]>();
  for (const k of keys) byRepo.set(k.repositoryId, [...(byRepo.get(k.repositoryId) ?? []), k.digest]);
  for (const [repositoryId, digests] of byRepo) {
    // PostgreSQL: lock the links first (a manifest PUT share-locks the links it relies on), then
    // decide in a statement that sees what committed meanwhile.
    if (isPostgres(trx)) {
      await trx
        .selectFrom("repository_blobs")
        .select("digest")
        .where("repository_id", "=", repositoryId)
        .where("digest", "in", [...digests].sort())
        .orderBy("digest")
        .forUpdate()
        .execute();
    }
    const result = await trx
      .deleteFrom("repository_blobs as rb")
      .where("rb.repository_id", "=", repositoryId)
      .where("rb.digest", "in", digests)
      .where(staleLink(cutoff))
      .executeTakeFirst();
    removed += n(result.numDeletedRows);
  }
  return removed;
}

// ------------------------------------------------------------------------------------------------
// Repositories and manifests

export interface RepositoryRow {
  id: number;
  name: string;
}

export async function repositoryPage(db: Q, afterId: number, limit: number): Promise<RepositoryRow[]> {
  const rows = await db
    .selectFrom("repositories")
    .select(["id", "name"])
    .where("id", ">", afterId)
    .orderBy("id")
    .limit(limit)
    .execute();
  return rows.map((r) => ({ id: n(r.id), name: r.name }));
}

/** Repositories holding released manifests (children of a deleted index), in id order. */
export async function releasedRepositoryPage(
  db: Q,
  afterId: number,
  limit: number,
): Promise<RepositoryRow[]> {
  const rows = await db
    .selectFrom("repositories as r")
    .select(["r.id", "r.name"])
    .where("r.id", ">", afterId)
    .where(({ exists, selectFrom }) =>
      exists(
        selectFrom("released_manifests as x").select("x.digest").whereRef("x.repository_id", "=", "r.id"),
      ),
    )
    .orderBy("r.id")
    .limit(limit)
    .execute();
  return rows.map((r) => ({ id: n(r.id), name: r.name }));
}

export async function releasedManifests(db: Q, repositoryId: number): Promise<Set<string>> {
  const rows = await db
    .selectFrom("released_manifests")
    .select("digest")
    .where("repository_id", "=", repositoryId)
    .execute();
  return new Set(rows.map((r) => r.digest));
}

/** Drops release marks of manifests that no longer exist. */
export async function forgetReleased(db: Q, repositoryId: number, digests: string[]): Promise<void> {
  for (let i = 0; i < digests.length; i += 500) {
    await db
      .deleteFrom("released_manifests")
      .where("repository_id", "=", repositoryId)
      .where("digest", "in", digests.slice(i, i + 500))
      .execute();
  }
}

export async function repositoryByName(db: Q, name: string): Promise<RepositoryRow | null> {
  const row = await db
    .selectFrom("repositories")
    .select(["id", "name"])
    .where("name", "=", name)
    .executeTakeFirst();
  return row ? { id: n(row.id), name: row.name } : null;
}

/** Whether a repository holds an untagged manifest from before `cutoff` (cheap test before loading its graph). */
export async function hasOldUntagged(db: Q, repositoryId: number, cutoff: number): Promise<boolean> {
  const row = await db
    .selectFrom("manifests as m")
    .select("m.digest")
    .where("m.repository_id", "=", repositoryId)
    .where("m.created_at", "<", cutoff)
    .where(untaggedManifest)
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}

export interface GraphManifest {
  digest: string;
  subject: string | null;
  size: number;
  mediaType: string;
  /** The later of when the manifest was first stored and last pushed again (its blob link). */
  freshAt: number;
  /** When it was last pulled (by tag or digest), if ever. */
  pulledAt: number | null;
  tags: string[];
}

export interface RepositoryGraph {
  manifests: Map<string, GraphManifest>;
  /** parent index → children. */
  children: Map<string, string[]>;
}

/**
 * Every manifest of a repository with its tags, subject, index edges and freshness. Without contents.
 * With `only`, inside a transaction on PostgreSQL (the collector about to delete those manifests),
 * their rows are locked FOR UPDATE first: a PUT that tags one of them or lists it in an index holds
 * a share lock on it (MetadataStore.insertManifest, lockManifests), so what is read next includes it.
 */
export async function repositoryGraph(
  db: Q,
  repositoryId: number,
  only?: string[],
): Promise<RepositoryGraph> {
  if (only && only.length > 0 && db.isTransaction && isPostgres(db)) {
    await db
      .selectFrom("manifests")
      .select("digest")
      .where("repository_id", "=", repositoryId)
      .where("digest", "in", [...only].sort())
      .orderBy("digest")
      .forUpdate()
      .execute();
  }
  let mq = db
    .selectFrom("manifests as m")
    .leftJoin("repository_blobs as rb", (join) =>
      join.onRef("rb.repository_id", "=", "m.repository_id").onRef("rb.digest", "=", "m.digest"),
    )
    .select([
      "m.digest",
      "m.subject",
      "m.size",
      "m.media_type",
      "m.created_at",
      "m.last_pulled_at",
      "rb.created_at as linked_at",
    ])
    .where("m.repository_id", "=", repositoryId);
  if (only) mq = mq.where("m.digest", "in", only.length ? only : [""]);
  const rows = await mq.execute();
  const manifests = new Map<string, GraphManifest>();
  for (const r of rows) {
    manifests.set(r.digest, {
      digest: r.digest,
      subject: r.subject,
      size: n(r.size),
      mediaType: r.media_type,
      freshAt: Math.max(n(r.created_at), n(r.linked_at)),
      pulledAt: r.last_pulled_at === null ? null : n(r.last_pulled_at),
      tags: [],
    });
  }
  let tq = db.selectFrom("tags").select(["name", "digest"]).where("repository_id", "=", repositoryId);
  if (only) tq = tq.where("digest", "in", only.length ? only : [""]);
  for (const t of await tq.execute()) manifests.get(t.digest)?.tags.push(t.name);
  let cq = db
    .selectFrom("manifest_children")
    .select(["parent_digest", "child_digest"])
    .where("repository_id", "=", repositoryId);
  if (only) cq = cq.where("child_digest", "in", only.length ? only : [""]);
  const children = new Map<string, string[]>();
  for (const c of await cq.execute()) {
    const list = children.get(c.parent_digest);
    if (list) list.push(c.child_digest);
    else children.set(c.parent_digest, [c.child_digest]);
  }
  return { manifests, children };
}

/** Referrers (digest → subject) of the given subjects in a repository. */
export async function referrersOf(
  q: Q,
  repositoryId: number,
  subjects: string[],
): Promise<{ digest: string; subject: string }[]> {
  if (subjects.length === 0) return [];
  const rows = await q
    .selectFrom("manifests")
    .select(["digest", "subject"])
    .where("repository_id", "=", repositoryId)
    .where("subject", "in", subjects)
    .execute();
  return rows.map((r) => ({ digest: r.digest, subject: r.subject ?? "" }));
}

/** Which of `digests` are manifests of the repository. */
export async function existingManifests(q: Q, repositoryId: number, digests: string[]): Promise<Set<string>> {
  if (digests.length === 0) return new Set();
  const rows = await q
    .selectFrom("manifests")
    .select("digest")
    .where("repository_id", "=", repositoryId)
    .where("digest", "in", digests)
    .execute();
  return new Set(rows.map((r) => r.digest));
}

// ------------------------------------------------------------------------------------------------
// Tags (retention)

export interface TagInfo {
  name: string;
  digest: string;
  /** When the tag was last pushed or moved. */
  updatedAt: number;
  /** When its manifest was last pulled (by tag or digest), if ever. */
  pulledAt: number | null;
}

export async function tagsOfRepository(q: Q, repositoryId: number): Promise<TagInfo[]> {
  const rows = await q
    .selectFrom("tags as t")
    .innerJoin("manifests as m", (join) =>
      join.onRef("m.repository_id", "=", "t.repository_id").onRef("m.digest", "=", "t.digest"),
    )
    .select(["t.name", "t.digest", "t.updated_at", "m.last_pulled_at"])
    .where("t.repository_id", "=", repositoryId)
    .execute();
  return rows.map((r) => ({
    name: r.name,
    digest: r.digest,
    updatedAt: n(r.updated_at),
    pulledAt: r.last_pulled_at === null ? null : n(r.last_pulled_at),
  }));
}

/** Deletes a tag only if it still points at `digest` and was not moved since `updatedAt`. */
export async function deleteTagIfUnchanged(trx: Q, repositoryId: number, tag: TagInfo): Promise<boolean> {
  const result = await trx
    .deleteFrom("tags")
    .where("repository_id", "=", repositoryId)
    .where("name", "=", tag.name)
    .where("digest", "=", tag.digest)
    .where("updated_at", "=", tag.updatedAt)
    .executeTakeFirst();
  return n(result.numDeletedRows) > 0;
}

/**
 * Marks the manifests of `digests` that no tag names any more as released (as a deleted index releases its
 * children): the collector removes each once nothing else holds it and it is older than the grace period,
 * whether or not gc.untagged is on. Retention uses it for what it untags, so that a manifest too young to
 * go with its tag is still freed later (issue 21).
 */
export async function releaseUntagged(trx: Q, repositoryId: number, digests: string[]): Promise<void> {
  if (digests.length === 0) return;
  await trx
    .insertInto("released_manifests")
    .columns(["repository_id", "digest", "released_at"])
    .expression((eb) =>
      eb
        .selectFrom("manifests as m")
        .select(["m.repository_id", "m.digest", sql<number>`cast(${Date.now()} as bigint)`.as("released_at")])
        .where("m.repository_id", "=", repositoryId)
        .where("m.digest", "in", [...new Set(digests)])
        .where(untaggedManifest),
    )
    .onConflict((oc) => oc.doNothing())
    .execute();
}

// ------------------------------------------------------------------------------------------------
// Uploads

export interface StaleUpload {
  id: string;
  size: number;
  updatedAt: number;
}

/** Upload sessions not written to since `cutoff` and not held by a request, after `after` in id order. */
export async function staleUploadPage(
  db: Q,
  after: string,
  limit: number,
  cutoff: number,
  now: number,
): Promise<StaleUpload[]> {
  const rows = await db
    .selectFrom("uploads")
    .select(["id", "size", "updated_at"])
    .where("id", ">", after)
    .where("updated_at", "<", cutoff)
    .where((eb) => eb.or([eb("lease_until", "is", null), eb("lease_until", "<", now)]))
    .orderBy("id")
    .limit(limit)
    .execute();
  return rows.map((r) => ({ id: r.id, size: n(r.size), updatedAt: n(r.updated_at) }));
}

/** Deletes the sessions of `ids` that are still stale; returns the ids that went. */
export async function deleteStaleUploads(
  trx: Q,
  ids: string[],
  cutoff: number,
  now: number,
): Promise<string[]> {
  if (ids.length === 0) return [];
  const rows = await trx
    .deleteFrom("uploads")
    .where("id", "in", ids)
    .where("updated_at", "<", cutoff)
    .where((eb) => eb.or([eb("lease_until", "is", null), eb("lease_until", "<", now)]))
    .returning("id")
    .execute();
  return rows.map((r) => r.id);
}

/** Which of `ids` have an upload row. */
export async function existingUploads(q: Q, ids: string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await q.selectFrom("uploads").select("id").where("id", "in", ids).execute();
  return new Set(rows.map((r) => r.id));
}

/** Tags, manifests and upload sessions of a repository (for `berth repo rm`). */
export async function repositoryCounts(
  q: Q,
  repositoryId: number,
): Promise<{ tags: number; manifests: number; uploads: number }> {
  const count = async (table: "tags" | "manifests" | "uploads") => {
    const row = await q
      .selectFrom(table)
      .select((eb) => eb.fn.countAll<number>().as("count"))
      .where("repository_id", "=", repositoryId)
      .executeTakeFirst();
    return n(row?.count);
  };
  return { tags: await count("tags"), manifests: await count("manifests"), uploads: await count("uploads") };
}
