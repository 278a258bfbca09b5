import { setTimeout as sleep } from "node:timers/promises";
import { LeaseLostError, type LinkKey, newHolder, type RepositoryGraph } from "../metadata/gc-queries.js";
import type { HeldLease } from "../metadata/gc-store.js";
import type { MetadataStore } from "../metadata/store.js";
import type { BlobStore } from "../storage/blob-store.js";

/**
 * Online garbage collection (issue 6).
 *
 * The safety protocol, shared with the registry's writers (src/registry/registry.ts):
 *   every file becomes visible inside a database write transaction (a commit renames the upload into
 *   place and records the blob in one transaction; a manifest PUT checks its blobs and stores itself in
 *   one transaction). The collector deletes inside a write transaction too: the first statement
 *   renews its lease (a write, so SQLite takes its write lock before anything is read), then it checks
 *   again that what it is about to delete is still unreferenced, deletes the rows, deletes the files,
 *   and commits. A push therefore either committed before the check (and the check sees it) or waits
 *   until the deletion is committed (and then uploads the bytes again, as the blob is gone).
 *
 * Work is done in batches of `batchSize` (one transaction each) with a pause in between, so that a
 * push never waits for more than one batch; reading is paged too. A lease row in `locks` makes sure
 * only one collector runs at a time over one database, whichever process or machine it runs on;
 * every batch is safe on its own anyway.
 *
 * What goes:
 *   - the children of deleted indexes (released_manifests) that nothing holds, older than the grace period;
 *   - untagged manifests (when enabled) that no tag, no kept index (as a child) and no kept referrer
 *     (as its subject) holds, with the referrers of a removed manifest and the children of a removed
 *     index that nothing else holds;
 *   - blobs that no manifest references, with no repository link newer than the grace period;
 *   - stale repository links (older than the grace period, needed by no manifest of the repository);
 *   - orphan files (on disk, no database row) older than the grace period;
 *   - abandoned uploads older than storage.maintenance.uploadpurging.age.
 * Everything newer than the grace period stays: it protects the blobs of a push whose manifest has
 * not arrived yet.
 */

export interface GcLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug?(obj: object, msg?: string): void;
}

const SCAN_PAGE = 1000;
const FILE_DELETE_CONCURRENCY = 8;
/** A job lease lasts this long unless renewed (by every batch, and by a heartbeat every third of it). */
export const LEASE_TTL_MS = 20_000;

// ------------------------------------------------------------------------------------------------
// Leases

type Locks = MetadataStore["locks"];
/** Whatever holds the job leases: the metadata store. */
export type LockSource = Pick<MetadataStore, "locks">;

/** A held job lease (a row in `locks`), renewed by every batch and by a heartbeat in between. */
export class Lease {
  private heartbeat: NodeJS.Timeout | null = null;
  lost = false;

  private constructor(
    private readonly locks: Locks,
    readonly name: string,
    readonly holder: string,
    readonly ttlMs: number,
  ) {}

  /**
   * Takes the lease when free. `takeIdle`: also when it merely rests until its next scheduled run
   * (on-demand runs from the CLI); a job that is running is never interrupted.
   */
  static async acquire(
    meta: LockSource,
    name: string,
    options: { ttlMs?: number; takeIdle?: boolean } = {},
  ): Promise<Lease | null> {
    const holder = newHolder();
    const ttl = options.ttlMs ?? LEASE_TTL_MS;
    if (!(await meta.locks.acquireLock(name, holder, ttl, options.takeIdle ?? false))) return null;
    const lease = new Lease(meta.locks, name, holder, ttl);
    lease.heartbeat = setInterval(
      () => {
        lease.renew().catch(() => {});
      },
      Math.max(1000, Math.floor(ttl / 3)),
    );
    lease.heartbeat.unref();
    return lease;
  }

  /** Who holds `name` now, for messages. */
  static async describe(meta: LockSource, name: string): Promise<string> {
    const row = await meta.locks.readLock(name);
    if (!row) return "nobody";
    const state = row.holder.startsWith("run:") ? "running in" : "last run by";
    return `${state} ${row.holder.replace(/^(run|idle):/, "").replace(/:[0-9a-f]{8}$/, "")} (until ${new Date(row.expires_at).toISOString()})`;
  }

  /** What a write under this lease names (the store renews it as the first statement of the write). */
  get held(): HeldLease {
    return { name: this.name, holder: this.holder, ttlMs: this.ttlMs };
  }

  /** Renews the lease (the heartbeat, and jobs between two writes). */
  async renew(): Promise<void> {
    if (this.lost) throw new LeaseLostError(this.name);
    if (!(await this.locks.renewLock(this.name, this.holder, this.ttlMs))) {
      this.lost = true;
      throw new LeaseLostError(this.name);
    }
  }

  /** Ends the run; the lease then rests until `idleUntil` (0: free at once). */
  async release(idleUntil = 0): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    if (!this.lost) await this.locks.releaseLock(this.name, this.holder, idleUntil);
  }
}

// ------------------------------------------------------------------------------------------------
// Reports

export interface RemovedManifest {
  repository: string;
  digest: string;
  size: number;
  reason: string;
}

export interface RemovedBlob {
  digest: string;
  size: number;
}

export interface RemovedUpload {
  id: string;
  size: number;
  /** "session" (a row and its file) or "file" (a file without a row). */
  kind: "session" | "file";
}

export interface GcReport {
  dryRun: boolean;
  /** Stopped early (the process is stopping, or the lease was lost). */
  aborted: boolean;
  startedAt: number;
  durationMs: number;
  manifests: RemovedManifest[];
  blobs: RemovedBlob[];
  blobBytes: number;
  /** Stale repository links removed (blobs still used elsewhere). */
  links: number;
  orphans: RemovedBlob[];
  orphanBytes: number;
  uploads: RemovedUpload[];
  uploadBytes: number;
  /** Write transactions run, and the longest of them. */
  transactions: number;
  longestTransactionMs: number;
  notes: string[];
}

/** A report with nothing in it yet (shared with retention, which reports what it collects the same way). */
export function emptyReport(dryRun: boolean): GcReport {
  return {
    dryRun,
    aborted: false,
    startedAt: Date.now(),
    durationMs: 0,
    manifests: [],
    blobs: [],
    blobBytes: 0,
    links: 0,
    orphans: [],
    orphanBytes: 0,
    uploads: [],
    uploadBytes: 0,
    transactions: 0,
    longestTransactionMs: 0,
    notes: [],
  };
}

// ------------------------------------------------------------------------------------------------
// Options and the run context

export interface GcOptions {
  /** Nothing newer than this is collected. */
  graceMs: number;
  /** Items per transaction. */
  batchSize: number;
  /** Pause between two transactions. */
  pauseMs: number;
  /** Remove untagged manifests too, when older than olderThanMs (never less than graceMs). */
  untagged: { enabled: boolean; olderThanMs: number };
  /** Purge abandoned uploads (storage.maintenance.uploadpurging) in the same run. */
  uploads: { enabled: boolean; ageMs: number } | null;
  /** Delete files that have no database row (default true). */
  orphans?: boolean;
  /**
   * The operator vouches that every blob in the store was written by this Berth (`berth gc
   * --i-know-the-store-is-mine`): orphan files are collected even when the database knows no blob.
   */
  storeIsMine?: boolean;
  dryRun: boolean;
  /** The job lease; required unless dryRun. */
  lease: Lease | null;
  signal?: AbortSignal;
  log?: GcLogger;
}

export interface GcTarget {
  meta: MetadataStore;
  store: BlobStore;
}

/** The run was asked to stop (the process is shutting down). */
export class Aborted extends Error {}

/**
 * A job that stopped early (the process is stopping, or its lease was lost) ends with a report that says so:
 * true when `err` was such a stop and is now in `report`; any other error is the caller's to throw.
 */
export function noteStopped(report: { aborted: boolean; notes: string[] }, err: unknown): boolean {
  if (!(err instanceof Aborted || err instanceof LeaseLostError)) return false;
  report.aborted = true;
  report.notes.push(
    err instanceof Aborted ? "stopped before the end (the process is stopping)" : err.message,
  );
  return true;
}

/** Shared machinery of the collector, retention and purging: batches, pauses, the lease, the report. */
export class Batcher {
  /** How long the last write transaction took (ms). */
  lastWriteMs: number | null = null;

  constructor(
    readonly target: GcTarget,
    readonly report: GcReport,
    readonly lease: Lease | null,
    readonly pauseMs: number,
    readonly signal?: AbortSignal,
  ) {}

  /** The collector's reads and writes of the metadata store. */
  get gc(): MetadataStore["gc"] {
    return this.target.meta.gc;
  }

  checkStop(): void {
    if (this.signal?.aborted) throw new Aborted();
    if (this.lease?.lost) throw new LeaseLostError(this.lease.name);
  }

  /**
   * One bounded write transaction: renew the lease first (the write lock), then `fn`; then a pause at
   * least as long as the transaction was, so that the collector holds the write lock at most half of
   * the time however slow the disk is, and writers in other processes get their turn in between.
   */
  async write<T>(fn: (lease: HeldLease) => Promise<T>): Promise<T> {
    this.checkStop();
    if (!this.lease) throw new Error("the collector needs its lease to delete anything");
    const lease = this.lease;
    if (lease.lost) throw new LeaseLostError(lease.name);
    const t0 = performance.now();
    let result: T;
    try {
      result = await fn(lease.held);
    } catch (err) {
      if (err instanceof LeaseLostError) lease.lost = true;
      throw err;
    }
    const ms = performance.now() - t0;
    this.lastWriteMs = ms;
    this.report.transactions++;
    this.report.longestTransactionMs = Math.max(this.report.longestTransactionMs, Math.round(ms * 10) / 10);
    await this.breathe(ms);
    return result;
  }

  /** Lets requests run between two steps: `pauseMs`, or `atLeastMs` when longer. */
  async breathe(atLeastMs = 0): Promise<void> {
    const ms = Math.max(this.pauseMs, atLeastMs);
    if (ms > 0) await sleep(ms);
    else await new Promise((resolve) => setImmediate(resolve));
  }
}

/** How long one deleting transaction should hold its locks (pushes wait for them). */
const TARGET_TRANSACTION_MS = 200;

/**
 * Items per deleting transaction: at most `max` (gc.batchsize), fewer while transactions run longer than
 * TARGET_TRANSACTION_MS. Deleting bytes is part of the transaction, and in a bucket each delete is a few
 * network round trips: 100 of them held one transaction for seconds. It starts small and doubles while
 * transactions stay short, so a fast store soon works in full batches.
 */
export class BatchSizer {
  size: number;

  constructor(readonly max: number) {
    this.size = Math.min(max, 8);
  }

  record(items: number, ms: number): void {
    if (ms > TARGET_TRANSACTION_MS) {
      this.size = Math.max(1, Math.min(this.size, Math.floor((items * TARGET_TRANSACTION_MS) / ms)));
    } else if (ms < TARGET_TRANSACTION_MS / 2 && items >= this.size) {
      this.size = Math.min(this.max, this.size * 2);
    }
  }
}

async function forEachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Runs a whole collection (or its dry run). Never throws for a stop or a lost lease: the report says `aborted`. */
export async function collectGarbage(target: GcTarget, options: GcOptions): Promise<GcReport> {
  const report = emptyReport(options.dryRun);
  if (!options.dryRun && !options.lease) throw new Error("collectGarbage: a lease is required unless dryRun");
  const b = new Batcher(target, report, options.lease, options.pauseMs, options.signal);
  const now = Date.now();
  const cutoff = now - options.graceMs;
  try {
    let simulated: SimulatedManifests | null = null;
    if (options.untagged.enabled) {
      const manifestCutoff = now - Math.max(options.untagged.olderThanMs, options.graceMs);
      simulated = await collectUntagged(b, manifestCutoff, options);
    }
    const released = await collectReleased(b, cutoff, options);
    if (released.size > 0) {
      simulated ??= new Map();
      for (const [repo, digests] of released) {
        const set = simulated.get(repo) ?? new Set<string>();
        for (const d of digests) set.add(d);
        simulated.set(repo, set);
      }
    }
    await collectBlobs(b, cutoff, options, simulated);
    if (!options.dryRun) await collectLinks(b, cutoff, options);
    if (options.orphans !== false) await collectOrphans(b, cutoff, options);
    if (options.uploads?.enabled) await purgeUploadsWith(b, now - options.uploads.ageMs, options);
  } catch (err) {
    if (!noteStopped(report, err)) throw err;
  }
  report.durationMs = Date.now() - report.startedAt;
  return report;
}

// ------------------------------------------------------------------------------------------------
// Untagged manifests

/** Manifests a dry run would remove, by repository id, to find the blobs that would go with them. */
type SimulatedManifests = Map<number, Set<string>>;

/**
 * Which manifests of a repository are kept. Roots: tagged, or newer than `cutoff`. Then: the children
 * of a kept index, the referrers of a kept manifest and the subject of a kept referrer are kept.
 */
export function keptManifests(graph: RepositoryGraph, cutoff: number, released?: Set<string>): Set<string> {
  const referrers = referrersMap(graph);
  const kept = new Set<string>();
  const queue: string[] = [];
  const keep = (digest: string) => {
    if (!kept.has(digest) && graph.manifests.has(digest)) {
      kept.add(digest);
      queue.push(digest);
    }
  };
  // With `released`, only those (children of deleted indexes) may go: every other manifest is a root too.
  for (const m of graph.manifests.values())
    if (m.tags.length > 0 || m.freshAt >= cutoff || (released && !released.has(m.digest))) keep(m.digest);
  while (queue.length > 0) {
    const digest = queue.pop() as string;
    for (const child of graph.children.get(digest) ?? []) keep(child);
    for (const referrer of referrers.get(digest) ?? []) keep(referrer);
    const subject = graph.manifests.get(digest)?.subject;
    if (subject) keep(subject);
  }
  return kept;
}

function referrersMap(graph: RepositoryGraph): Map<string, string[]> {
  const referrers = new Map<string, string[]>();
  for (const m of graph.manifests.values()) {
    if (!m.subject) continue;
    const list = referrers.get(m.subject);
    if (list) list.push(m.digest);
    else referrers.set(m.subject, [m.digest]);
  }
  return referrers;
}

/**
 * Groups the manifests to remove into batches that keep related manifests (an index with its children,
 * a manifest with its referrers) in one transaction, as the in-transaction check keeps anything whose
 * relative stays behind. A group larger than `batchSize` is a batch of its own.
 */
export function manifestBatches(graph: RepositoryGraph, remove: Set<string>, batchSize: number): string[][] {
  const parent = new Map<string, string>();
  const find = (x: string): string => {
    let root = x;
    while (parent.get(root) !== root) root = parent.get(root) as string;
    let cur = x;
    while (parent.get(cur) !== root) {
      const next = parent.get(cur) as string;
      parent.set(cur, root);
      cur = next;
    }
    return root;
  };
  const union = (a: string, c: string) => {
    if (!remove.has(a) || !remove.has(c)) return;
    const ra = find(a);
    const rc = find(c);
    if (ra !== rc) parent.set(ra, rc);
  };
  for (const d of remove) parent.set(d, d);
  for (const [p, children] of graph.children) for (const c of children) union(p, c);
  for (const m of graph.manifests.values()) if (m.subject) union(m.digest, m.subject);
  const groups = new Map<string, string[]>();
  for (const d of [...remove].sort()) {
    const root = find(d);
    const g = groups.get(root);
    if (g) g.push(d);
    else groups.set(root, [d]);
  }
  const batches: string[][] = [];
  let current: string[] = [];
  for (const g of groups.values()) {
    if (current.length > 0 && current.length + g.length > batchSize) {
      batches.push(current);
      current = [];
    }
    current.push(...g);
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

function removalReason(graph: RepositoryGraph, remove: Set<string>, digest: string, base: string): string {
  const m = graph.manifests.get(digest);
  if (m?.subject && remove.has(m.subject)) return `referrer of ${m.subject}, which goes`;
  for (const [p, children] of graph.children) {
    if (remove.has(p) && children.includes(digest)) return `child of index ${p}, which goes`;
  }
  return base;
}

export interface ManifestPlan {
  digests: Set<string>;
  /** Why a planned manifest goes: `base` for the ones picked directly, else its relation to one that goes. */
  reason(digest: string, base: string): string;
}

/**
 * The manifests of a repository that are not kept (keptManifests), optionally only those reachable from
 * `from` (retention: the manifests whose last tag it removes, their referrers, the children of a removed
 * index). Pure.
 */
export function planManifestRemoval(
  graph: RepositoryGraph,
  cutoff: number,
  from?: Set<string>,
  released?: Set<string>,
): ManifestPlan {
  const kept = keptManifests(graph, cutoff, released && descendants(graph, released));
  let digests = new Set([...graph.manifests.keys()].filter((d) => !kept.has(d)));
  if (from) digests = reachable(graph, digests, from);
  return { digests, reason: (digest, base) => removalReason(graph, digests, digest, base) };
}

/**
 * Removes (or, in a dry run, lists) the manifests of one repository that are not kept, optionally only
 * those reachable from `from.digests`.
 */
export async function removeUnkeptManifests(
  b: Batcher,
  repository: { id: number; name: string },
  cutoff: number,
  batchSize: number,
  dryRun: boolean,
  from?: { digests: Set<string>; reason: string },
  released?: Set<string>,
): Promise<RemovedManifest[]> {
  const graph = await b.gc.repositoryGraph(repository.id);
  const plan = planManifestRemoval(graph, cutoff, from?.digests, released);
  if (plan.digests.size === 0) return [];
  const base = from?.reason ?? "untagged";
  const out: RemovedManifest[] = [];
  const record = (digest: string, size: number) =>
    out.push({ repository: repository.name, digest, size, reason: plan.reason(digest, base) });
  if (dryRun) {
    for (const digest of [...plan.digests].sort()) record(digest, graph.manifests.get(digest)?.size ?? 0);
    return out;
  }
  for (const batch of manifestBatches(graph, plan.digests, batchSize)) {
    const removed = await b.write((lease) => b.gc.removeManifests(lease, repository.id, batch, cutoff));
    for (const [digest, size] of removed) record(digest, size);
  }
  return out;
}

/** `start` with every manifest below it through index→child edges (an index inside a released index). */
function descendants(graph: RepositoryGraph, start: Set<string>): Set<string> {
  const out = new Set(start);
  const queue = [...start];
  while (queue.length > 0) {
    for (const child of graph.children.get(queue.pop() as string) ?? []) {
      if (!out.has(child)) {
        out.add(child);
        queue.push(child);
      }
    }
  }
  return out;
}

/**
 * The children of deleted indexes (released_manifests), with the default configuration too: each goes
 * once nothing holds it (no tag, no index that stays, no kept referrer) and it is older than the grace
 * period. Deleting a multi-platform image by its index digest thereby frees its platform images' layers.
 */
async function collectReleased(b: Batcher, cutoff: number, options: GcOptions): Promise<SimulatedManifests> {
  const simulated: SimulatedManifests = new Map();
  for (let after = 0; ; ) {
    b.checkStop();
    const repos = await b.gc.releasedRepositoryPage(after, 100);
    if (repos.length === 0) break;
    after = repos[repos.length - 1]?.id ?? after;
    for (const repo of repos) {
      b.checkStop();
      const released = await b.gc.releasedManifests(repo.id);
      const removed = await removeUnkeptManifests(
        b,
        repo,
        cutoff,
        options.batchSize,
        options.dryRun,
        { digests: released, reason: "child of a deleted index" },
        released,
      );
      b.report.manifests.push(...removed);
      if (options.dryRun && removed.length > 0) simulated.set(repo.id, new Set(removed.map((m) => m.digest)));
      if (!options.dryRun) {
        // Marks of manifests that are gone (removed now, or deleted since) are dropped.
        const graph = await b.gc.repositoryGraph(repo.id, [...released]);
        const gone = [...released].filter((d) => !graph.manifests.has(d));
        if (gone.length > 0) await b.write((lease) => b.gc.forgetReleased(lease, repo.id, gone));
      }
      await b.breathe();
    }
  }
  return simulated;
}

/** The part of `candidates` reachable from `start` through index→child and subject→referrer edges. */
function reachable(graph: RepositoryGraph, candidates: Set<string>, start: Set<string>): Set<string> {
  const referrers = referrersMap(graph);
  const out = new Set<string>();
  const queue = [...start].filter((d) => candidates.has(d));
  for (const d of queue) out.add(d);
  while (queue.length > 0) {
    const d = queue.pop() as string;
    for (const next of [...(graph.children.get(d) ?? []), ...(referrers.get(d) ?? [])]) {
      if (candidates.has(next) && !out.has(next)) {
        out.add(next);
        queue.push(next);
      }
    }
  }
  return out;
}

async function collectUntagged(b: Batcher, cutoff: number, options: GcOptions): Promise<SimulatedManifests> {
  const simulated: SimulatedManifests = new Map();
  for (let after = 0; ; ) {
    b.checkStop();
    const repos = await b.gc.repositoryPage(after, 100);
    if (repos.length === 0) break;
    after = repos[repos.length - 1]?.id ?? after;
    for (const repo of repos) {
      b.checkStop();
      if (!(await b.gc.hasOldUntagged(repo.id, cutoff))) continue;
      const removed = await removeUnkeptManifests(b, repo, cutoff, options.batchSize, options.dryRun);
      b.report.manifests.push(...removed);
      if (options.dryRun && removed.length > 0) simulated.set(repo.id, new Set(removed.map((m) => m.digest)));
      if (!options.dryRun && removed.length > 0) {
        options.log?.debug?.(
          { repository: repo.name, manifests: removed.length },
          "gc: removed untagged manifests",
        );
      }
      await b.breathe();
    }
  }
  return simulated;
}

// ------------------------------------------------------------------------------------------------
// Blobs

async function collectBlobs(
  b: Batcher,
  cutoff: number,
  options: GcOptions,
  simulated: SimulatedManifests | null,
): Promise<void> {
  let pending: string[] = [];
  const sizer = new BatchSizer(options.batchSize);
  const flush = async () => {
    while (pending.length > 0) {
      const digests = pending.slice(0, sizer.size);
      pending = pending.slice(digests.length);
      const removed = await b.write((lease) =>
        // Files go inside the transaction: no commit can make the same digest visible in between.
        b.gc.removeGarbageBlobs(lease, digests, cutoff, (gone) =>
          forEachLimit(gone, FILE_DELETE_CONCURRENCY, (d) => b.target.store.delete(d)),
        ),
      );
      sizer.record(digests.length, b.lastWriteMs ?? 0);
      for (const [digest, size] of removed) {
        b.report.blobs.push({ digest, size });
        b.report.blobBytes += size;
      }
    }
  };
  const seen = new Set<string>();
  for (let after = ""; ; ) {
    b.checkStop();
    const page = await b.gc.blobPage(after, SCAN_PAGE, cutoff);
    if (page.length === 0) break;
    after = page[page.length - 1]?.digest ?? after;
    for (const row of page) {
      if (!row.garbage) continue;
      if (options.dryRun) {
        seen.add(row.digest);
        b.report.blobs.push({ digest: row.digest, size: row.size });
        b.report.blobBytes += row.size;
        continue;
      }
      pending.push(row.digest);
      if (pending.length >= sizer.size) await flush();
    }
    if (options.dryRun) await b.breathe();
  }
  await flush();
  if (options.dryRun && simulated && simulated.size > 0)
    await simulateBlobsOfRemovedManifests(b, cutoff, simulated, seen);
}

/** Dry run: the blobs that would go once the untagged manifests it lists are gone. */
async function simulateBlobsOfRemovedManifests(
  b: Batcher,
  cutoff: number,
  simulated: SimulatedManifests,
  seen: Set<string>,
): Promise<void> {
  const removed = (repositoryId: number, digest: string) => simulated.get(repositoryId)?.has(digest) ?? false;
  const candidates = new Set<string>();
  for (const [repositoryId, digests] of simulated) {
    for (const manifest of digests) {
      candidates.add(manifest);
      for (const blob of await b.gc.manifestBlobDigests(repositoryId, manifest)) candidates.add(blob);
    }
  }
  for (const digest of [...candidates].sort()) {
    if (seen.has(digest)) continue;
    const refs = await b.gc.blobReferences(digest, cutoff);
    if (!refs || refs.createdAt >= cutoff) continue;
    const held =
      refs.manifests.some((m) => !removed(m.repositoryId, m.digest)) ||
      refs.asManifest.some((repositoryId) => !removed(repositoryId, digest)) ||
      refs.freshLinks > 0;
    if (held) continue;
    b.report.blobs.push({ digest, size: refs.size });
    b.report.blobBytes += refs.size;
  }
}

// ------------------------------------------------------------------------------------------------
// Stale links

async function collectLinks(b: Batcher, cutoff: number, options: GcOptions): Promise<void> {
  let pending: LinkKey[] = [];
  const flush = async () => {
    const keys = pending;
    pending = [];
    if (keys.length === 0) return;
    b.report.links += await b.write((lease) => b.gc.removeStaleLinks(lease, keys, cutoff));
  };
  for (let after: LinkKey = { repositoryId: -1, digest: "" }; ; ) {
    b.checkStop();
    const page = await b.gc.linkPage(after, SCAN_PAGE, cutoff);
    if (page.length === 0) break;
    const last = page[page.length - 1] as LinkKey;
    after = { repositoryId: last.repositoryId, digest: last.digest };
    for (const row of page) {
      if (!row.stale) continue;
      pending.push({ repositoryId: row.repositoryId, digest: row.digest });
      if (pending.length >= options.batchSize) await flush();
    }
  }
  await flush();
}

// ------------------------------------------------------------------------------------------------
// Orphan files

async function collectOrphans(b: Batcher, cutoff: number, options: GcOptions): Promise<void> {
  const refusal = await orphansRefused(b, options);
  if (refusal) {
    b.report.notes.push(refusal.note);
    options.log?.warn(refusal.fields, `gc: ${refusal.note}`);
    return;
  }
  let chunk: { digest: string; size: number }[] = [];
  const sizer = new BatchSizer(options.batchSize);
  const check = async () => {
    const entries = chunk;
    chunk = [];
    if (entries.length === 0) return;
    const known = await b.gc.existingBlobs(entries.map((e) => e.digest));
    const orphans = entries.filter((e) => !known.has(e.digest));
    for (let i = 0; i < orphans.length; ) {
      const batch = orphans.slice(i, i + (options.dryRun ? orphans.length : sizer.size));
      i += batch.length;
      if (options.dryRun) {
        for (const o of batch) recordOrphan(b, o);
        continue;
      }
      const removed = await b.write((lease) =>
        b.gc.withOrphanBlobs(
          lease,
          batch.map((o) => o.digest),
          async (unknown) => {
            const gone: { digest: string; size: number }[] = [];
            await forEachLimit(unknown, FILE_DELETE_CONCURRENCY, async (digest) => {
              const st = await b.target.store.stat(digest);
              if (!st || st.modifiedAt >= cutoff) return;
              await b.target.store.delete(digest);
              gone.push({ digest, size: st.size });
            });
            return gone;
          },
        ),
      );
      sizer.record(batch.length, b.lastWriteMs ?? 0);
      for (const o of removed) recordOrphan(b, o);
    }
  };
  for await (const entry of b.target.store.list()) {
    if (entry.modifiedAt >= cutoff) continue;
    chunk.push({ digest: entry.digest, size: entry.size });
    if (chunk.length >= SCAN_PAGE) {
      b.checkStop();
      await check();
    }
  }
  b.checkStop();
  await check();
}

/**
 * Why no file may be judged an orphan in this store, or null. A file without a row is garbage only when
 * Berth can be sure that it wrote it: never while the store holds registry:2 repositories (on a filesystem
 * or in a bucket; their link files, not Berth's rows, say what their blobs are), and never when the database
 * knows no blob and no repository at all while the store holds blobs (a registry:2 store not adopted yet, or Berth's own store
 * beside a lost or new database), unless the operator says the store is Berth's (`storeIsMine`).
 */
async function orphansRefused(
  b: Batcher,
  options: GcOptions,
): Promise<{ note: string; fields: Record<string, unknown> } | null> {
  const store = b.target.store;
  const foreign = (await store.foreignRepositories?.()) ?? null;
  if (foreign) {
    return {
      note: `orphan files are not collected: ${foreign} holds registry:2 repositories, whose link files (not Berth's rows) say which blobs are in use`,
      fields: { directory: foreign },
    };
  }
  if (
    options.storeIsMine ||
    (await b.gc.blobPage("", 1, 0)).length > 0 ||
    (await b.gc.repositoryPage(0, 1)).length > 0
  )
    return null;
  for await (const _ of store.list()) {
    return {
      note:
        "orphan files are not collected: the database knows no blob and no repository while the store holds blobs " +
        "(registry:2 data not adopted yet, or this store beside a new or lost database). Adopt registry:2 " +
        "data with `berth import`; if every blob in the store is Berth's own garbage, run " +
        "`berth gc --i-know-the-store-is-mine`",
      fields: { store: store.kind },
    };
  }
  return null;
}

function recordOrphan(b: Batcher, o: { digest: string; size: number }): void {
  b.report.orphans.push(o);
  b.report.orphanBytes += o.size;
}

// ------------------------------------------------------------------------------------------------
// Uploads

export interface PurgeOptions {
  ageMs: number;
  batchSize: number;
  pauseMs: number;
  dryRun: boolean;
  lease: Lease | null;
  signal?: AbortSignal;
  log?: GcLogger;
}

/** Removes upload sessions not written to for `ageMs` (row and file), and upload files without a row as old. */
export async function purgeUploads(target: GcTarget, options: PurgeOptions): Promise<GcReport> {
  const report = emptyReport(options.dryRun);
  if (!options.dryRun && !options.lease) throw new Error("purgeUploads: a lease is required unless dryRun");
  const b = new Batcher(target, report, options.lease, options.pauseMs, options.signal);
  try {
    await purgeUploadsWith(b, Date.now() - options.ageMs, {
      batchSize: options.batchSize,
      dryRun: options.dryRun,
    });
  } catch (err) {
    if (!noteStopped(report, err)) throw err;
  }
  report.durationMs = Date.now() - report.startedAt;
  return report;
}

async function purgeUploadsWith(
  b: Batcher,
  cutoff: number,
  options: { batchSize: number; dryRun: boolean },
): Promise<void> {
  // Sessions: the row says when the upload was last written to; a request holding its lease is never cut off.
  for (let after = ""; ; ) {
    b.checkStop();
    const now = Date.now();
    const page = await b.gc.staleUploadPage(after, options.batchSize, cutoff, now);
    if (page.length === 0) break;
    after = page[page.length - 1]?.id ?? after;
    if (options.dryRun) {
      for (const u of page) recordUpload(b, { id: u.id, size: u.size, kind: "session" });
      continue;
    }
    const ids = await b.write((lease) =>
      b.gc.removeStaleUploads(
        lease,
        page.map((u) => u.id),
        cutoff,
        Date.now(),
        (gone) => forEachLimit(gone, FILE_DELETE_CONCURRENCY, (id) => b.target.store.deleteUpload(id)),
      ),
    );
    const removed = new Set(ids);
    for (const u of page) if (removed.has(u.id)) recordUpload(b, { id: u.id, size: u.size, kind: "session" });
  }
  // Files without a row (a monolithic upload that died, a crash between file and row), by mtime.
  let chunk: { id: string; size: number }[] = [];
  const check = async () => {
    const entries = chunk;
    chunk = [];
    if (entries.length === 0) return;
    const known = await b.gc.existingUploads(entries.map((e) => e.id));
    const orphans = entries.filter((e) => !known.has(e.id));
    if (orphans.length === 0) return;
    if (options.dryRun) {
      for (const o of orphans) recordUpload(b, { ...o, kind: "file" });
      return;
    }
    const removed = await b.write((lease) =>
      b.gc.withOrphanUploads(
        lease,
        orphans.map((o) => o.id),
        async (unknown) => {
          const ids = new Set(unknown);
          const gone = orphans.filter((o) => ids.has(o.id));
          await forEachLimit(gone, FILE_DELETE_CONCURRENCY, (o) => b.target.store.deleteUpload(o.id));
          return gone;
        },
      ),
    );
    for (const o of removed) recordUpload(b, { ...o, kind: "file" });
  };
  for await (const upload of b.target.store.listUploads()) {
    if (upload.modifiedAt >= cutoff) continue;
    chunk.push({ id: upload.id, size: upload.size });
    if (chunk.length >= options.batchSize) {
      b.checkStop();
      await check();
    }
  }
  await check();
}

function recordUpload(b: Batcher, u: RemovedUpload): void {
  b.report.uploads.push(u);
  b.report.uploadBytes += u.size;
}

// ------------------------------------------------------------------------------------------------
// Helpers for callers

export interface WaitForLeaseOptions {
  takeIdle?: boolean;
  /** Give up after this long (0: try once). */
  timeoutMs?: number;
  onWait?: (holder: string) => void;
  signal?: AbortSignal;
}

/** Takes a job lease, waiting for a running job elsewhere to finish when asked to. */
export async function waitForLease(
  meta: LockSource,
  name: string,
  options: WaitForLeaseOptions = {},
): Promise<Lease | null> {
  const deadline = Date.now() + (options.timeoutMs ?? 0);
  let told = false;
  for (;;) {
    const lease = await Lease.acquire(meta, name, { takeIdle: options.takeIdle });
    if (lease) return lease;
    if (Date.now() >= deadline || options.signal?.aborted) return null;
    if (!told) {
      options.onWait?.(await Lease.describe(meta, name));
      told = true;
    }
    await sleep(500);
  }
}

/** Sums for logs and metrics. */
export function summarize(report: GcReport): Record<string, number | boolean> {
  return {
    dryRun: report.dryRun,
    aborted: report.aborted,
    durationMs: report.durationMs,
    manifests: report.manifests.length,
    blobs: report.blobs.length,
    blobBytes: report.blobBytes,
    links: report.links,
    orphans: report.orphans.length,
    orphanBytes: report.orphanBytes,
    uploads: report.uploads.length,
    uploadBytes: report.uploadBytes,
    transactions: report.transactions,
    longestTransactionMs: report.longestTransactionMs,
  };
}
