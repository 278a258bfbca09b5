import type { DeliveryRow, EndpointRow, EventRow, NewEvent, Outcome } from "./events-queries.js";
import type {
  BlobPageRow,
  BlobReferences,
  LinkKey,
  LinkPageRow,
  LockRow,
  RepositoryGraph,
  RepositoryRow,
  StaleUpload,
  TagInfo,
} from "./gc-queries.js";
import type { HeldLease } from "./gc-store.js";
import type {
  ManifestInfo,
  ReferrerInfo,
  RepositoryRef,
  RepositoryStats,
  TagRow,
  TagSort,
} from "./ui-queries.js";
import type { RepositoryUsage, UsageSnapshot, UsageSummary, UsageTotals } from "./usage-queries.js";

/**
 * The facets of the MetadataStore interface (src/metadata/store.ts), one per concern, in domain terms.
 * The SQL implementation builds each from the query functions of its module with the database given
 * (bound.ts); these declarations are what src/registry and src/http may rely on.
 */

/** The web UI's read-only listings (ui-queries.ts). */
export interface UiReads {
  repositoryNames(search?: string): Promise<RepositoryRef[]>;
  repositoryByName(name: string): Promise<RepositoryRef | null>;
  repositoryStats(ids?: number[]): Promise<Map<number, RepositoryStats>>;
  tagPage(
    repositoryId: number,
    options: { search?: string; sort: TagSort; descending: boolean; offset: number; limit: number },
  ): Promise<{ total: number; rows: TagRow[] }>;
  manifestsByDigest(repositoryId: number, digests: string[]): Promise<Map<string, ManifestInfo>>;
  childrenOf(repositoryId: number, parents: string[]): Promise<Map<string, string[]>>;
  parentsOf(repositoryId: number, digest: string): Promise<string[]>;
  manifestTotalSizes(repositoryId: number, digests: string[]): Promise<Map<string, number>>;
  blobSizes(digests: string[]): Promise<Map<string, number>>;
  tagsOf(repositoryId: number, digest: string): Promise<string[]>;
  referrersOf(repositoryId: number, digest: string): Promise<ReferrerInfo[]>;
}

/** Storage usage from the rows alone (usage-queries.ts). */
export interface UsageReads {
  uploadUsage(): Promise<{ count: number; bytes: number }>;
  totalUsage(): Promise<UsageTotals>;
  sharedUsage(): Promise<UsageTotals>;
  unlinkedUsage(): Promise<UsageTotals>;
  usageSummary(): Promise<UsageSummary>;
  repositoryUsage(options?: { repositoryIds?: number[] }): Promise<RepositoryUsage[]>;
  usageOfRepository(name: string): Promise<RepositoryUsage | null>;
  /** Registry-wide usage in bounded steps (for the usage job; never on a request's path). */
  computeUsageSnapshot(options?: { pauseMs?: number; signal?: AbortSignal }): Promise<UsageSnapshot | null>;
  saveUsageSnapshot(snapshot: UsageSnapshot): Promise<void>;
  /** The last snapshot the usage job saved; null before its first run. */
  readUsageSnapshot(): Promise<UsageSnapshot | null>;
}

/** The notification outbox: events, endpoint cursors and leases, the delivery log (events-queries.ts). */
export interface EventStore {
  /** Appends events in a transaction of their own (pull events, which describe no change of rows). */
  appendEvents(events: NewEvent[]): Promise<void>;
  lastEventId(): Promise<number>;
  ensureEndpoints(names: string[], now?: number): Promise<void>;
  endpointRow(name: string): Promise<EndpointRow | null>;
  endpointRows(): Promise<EndpointRow[]>;
  leaseEndpoint(
    name: string,
    holder: string,
    ttlMs: number,
    stale: string | null,
    now?: number,
  ): Promise<boolean>;
  releaseEndpoint(name: string, holder: string): Promise<void>;
  eventsAfter(cursor: number, limit: number): Promise<EventRow[]>;
  recordOutcome(o: Outcome): Promise<boolean>;
  rewindEndpoint(name: string, cursor: number): Promise<boolean>;
  findEvent(by: { at?: number; eventId?: string }): Promise<number | null>;
  backlog(cursor: number): Promise<number>;
  recentDeliveries(options: {
    endpoint?: string;
    failuresOnly?: boolean;
    limit: number;
  }): Promise<DeliveryRow[]>;
  recentEvents(limit: number): Promise<EventRow[]>;
  pruneEvents(endpoints: string[], before: number): Promise<void>;
}

/** Job leases, rows of `locks` (gc-queries.ts). */
export interface LockStore {
  acquireLock(name: string, holder: string, ttlMs: number, takeIdle: boolean): Promise<boolean>;
  readLock(name: string): Promise<LockRow | null>;
  renewLock(name: string, holder: string, ttlMs: number): Promise<boolean>;
  releaseLock(name: string, holder: string, idleUntil: number): Promise<void>;
  /** Every row whose name starts with `prefix`. */
  locksNamed(prefix: string): Promise<LockRow[]>;
  /** Removes the rows named `prefix...` that ran out before `before`. */
  dropLocks(prefix: string, before: number): Promise<void>;
}

/** What garbage collection, retention and upload purging read, outside any transaction (gc-queries.ts). */
export interface GcReads {
  blobPage(after: string, limit: number, cutoff: number): Promise<BlobPageRow[]>;
  blobReferences(digest: string, cutoff: number): Promise<BlobReferences | null>;
  existingBlobs(digests: string[]): Promise<Set<string>>;
  existingUploads(ids: string[]): Promise<Set<string>>;
  hasOldUntagged(repositoryId: number, cutoff: number): Promise<boolean>;
  linkPage(after: LinkKey, limit: number, cutoff: number): Promise<LinkPageRow[]>;
  manifestBlobDigests(repositoryId: number, manifest: string): Promise<string[]>;
  releasedManifests(repositoryId: number): Promise<Set<string>>;
  releasedRepositoryPage(afterId: number, limit: number): Promise<RepositoryRow[]>;
  repositoryByName(name: string): Promise<RepositoryRow | null>;
  repositoryCounts(repositoryId: number): Promise<{ tags: number; manifests: number; uploads: number }>;
  repositoryGraph(repositoryId: number, only?: string[]): Promise<RepositoryGraph>;
  repositoryPage(afterId: number, limit: number): Promise<RepositoryRow[]>;
  staleUploadPage(after: string, limit: number, cutoff: number, now: number): Promise<StaleUpload[]>;
  tagsOfRepository(repositoryId: number): Promise<TagInfo[]>;
}

/**
 * The collector's writes (gc-store.ts): each one transaction whose first statement renews `lease`
 * (LeaseLostError, and nothing changed, when it is no longer the caller's); the `files` step runs inside
 * it, before the commit.
 */
export interface GcWrites {
  removeManifests(
    lease: HeldLease,
    repositoryId: number,
    digests: string[],
    cutoff: number,
  ): Promise<Map<string, number>>;
  forgetReleased(lease: HeldLease, repositoryId: number, digests: string[]): Promise<void>;
  removeGarbageBlobs(
    lease: HeldLease,
    digests: string[],
    cutoff: number,
    files: (gone: string[]) => Promise<void>,
  ): Promise<Map<string, number>>;
  removeStaleLinks(lease: HeldLease, keys: LinkKey[], cutoff: number): Promise<number>;
  withOrphanBlobs<T>(
    lease: HeldLease,
    digests: string[],
    files: (orphans: string[]) => Promise<T>,
  ): Promise<T>;
  removeStaleUploads(
    lease: HeldLease,
    ids: string[],
    cutoff: number,
    now: number,
    files: (gone: string[]) => Promise<void>,
  ): Promise<string[]>;
  withOrphanUploads<T>(lease: HeldLease, ids: string[], files: (orphans: string[]) => Promise<T>): Promise<T>;
  removeTags(
    lease: HeldLease,
    repositoryId: number,
    choose: (tags: TagInfo[]) => TagInfo[],
  ): Promise<TagInfo[]>;
}
