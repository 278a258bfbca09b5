import type { Transaction } from "kysely";
import type { GcWrites } from "./facets.js";
import {
  acquireLock,
  blobPage,
  blobReferences,
  deleteBlobRows,
  deleteStaleLinks,
  deleteStaleUploads,
  deleteTagIfUnchanged,
  dropLocks,
  existingBlobs,
  existingManifests,
  existingUploads,
  forgetReleased,
  hasOldUntagged,
  LeaseLostError,
  type LinkKey,
  linkPage,
  locksNamed,
  manifestBlobDigests,
  readLock,
  referrersOf,
  releasedManifests,
  releasedRepositoryPage,
  releaseLock,
  releaseUntagged,
  renewLock,
  repositoryByName,
  repositoryCounts,
  repositoryGraph,
  repositoryPage,
  staleUploadPage,
  stillGarbageBlobs,
  type TagInfo,
  tagsOfRepository,
} from "./gc-queries.js";
import { deleteManifestRows } from "./manifest-rows.js";
import type { Database } from "./schema.js";

/**
 * The collector's, retention's and upload purging's view of the metadata (issue 6), in domain terms.
 *
 * Reads are plain queries (`gcReads`). Every write runs as one transaction whose first statement renews
 * the caller's job lease (a write: SQLite takes its write lock before anything is read; on PostgreSQL the
 * row locks of gc-queries.ts order it against pushes), then re-checks what it is about to delete, deletes
 * the rows, and runs the caller's `files` step (deleting bytes) before the commit, so that no commit can
 * make the same digest visible in between. A lease that is no longer the caller's ends the write with
 * LeaseLostError and changes nothing.
 */

type Tx = Transaction<Database>;

/** A job lease as a write under it names it (src/registry/gc.ts's Lease holds one). */
export interface HeldLease {
  name: string;
  holder: string;
  ttlMs: number;
}

/** The queries the collector reads with, outside any transaction. */
export const gcReads = {
  blobPage,
  blobReferences,
  existingBlobs,
  existingUploads,
  hasOldUntagged,
  linkPage,
  manifestBlobDigests,
  releasedManifests,
  releasedRepositoryPage,
  repositoryByName,
  repositoryCounts,
  repositoryGraph,
  repositoryPage,
  staleUploadPage,
  tagsOfRepository,
};

/** The job leases in `locks` (scheduled jobs, the collector, TLS renewal, adoption, proxy fetches). */
export const lockQueries = { acquireLock, readLock, renewLock, releaseLock, locksNamed, dropLocks };

/**
 * Deletes, inside `trx`, those of `digests` (one repository) that are still unheld: untagged, not newer
 * than `cutoff`, and not held by a manifest that stays (a parent index, a referrer, or its subject).
 * Anything pushed or tagged since the plan was made is seen here and kept. Returns digest → size.
 */
export async function deleteManifestBatch(
  trx: Tx,
  repositoryId: number,
  digests: string[],
  cutoff: number,
): Promise<Map<string, number>> {
  const graph = await repositoryGraph(trx, repositoryId, digests);
  const batch = new Set<string>([...graph.manifests.keys()]);
  const parents = new Map<string, string[]>();
  for (const [p, children] of graph.children) {
    for (const c of children) parents.set(c, [...(parents.get(c) ?? []), p]);
  }
  const referrers = await referrersOf(trx, repositoryId, [...batch]);
  const subjects = [
    ...new Set([...graph.manifests.values()].map((m) => m.subject).filter((s): s is string => s !== null)),
  ];
  const existingSubjects = await existingManifests(trx, repositoryId, subjects);
  for (const m of graph.manifests.values()) {
    if (m.tags.length > 0 || m.freshAt >= cutoff) batch.delete(m.digest);
  }
  for (let changed = true; changed; ) {
    changed = false;
    for (const digest of [...batch]) {
      const m = graph.manifests.get(digest);
      const heldByParent = (parents.get(digest) ?? []).some((p) => !batch.has(p));
      const heldByReferrer = referrers.some((r) => r.subject === digest && !batch.has(r.digest));
      const heldBySubject = m?.subject != null && existingSubjects.has(m.subject) && !batch.has(m.subject);
      if (heldByParent || heldByReferrer || heldBySubject) {
        batch.delete(digest);
        changed = true;
      }
    }
  }
  const removed = new Map<string, number>();
  for (const digest of batch) {
    if (await deleteManifestRows(trx, repositoryId, digest))
      removed.set(digest, graph.manifests.get(digest)?.size ?? 0);
  }
  return removed;
}

/** The collector's writes, each one transaction under a lease (see above). */
export function gcWrites(transaction: <T>(fn: (trx: Tx) => Promise<T>) => Promise<T>): GcWrites {
  const underLease = <T>(lease: HeldLease, fn: (trx: Tx) => Promise<T>): Promise<T> =>
    transaction(async (trx) => {
      if (!(await renewLock(trx, lease.name, lease.holder, lease.ttlMs)))
        throw new LeaseLostError(lease.name);
      return fn(trx);
    });
  return {
    /** Removes the still unheld of `digests` (one repository); digest → size of those removed. */
    removeManifests: (lease: HeldLease, repositoryId: number, digests: string[], cutoff: number) =>
      underLease(lease, (trx) => deleteManifestBatch(trx, repositoryId, digests, cutoff)),

    /** Drops the released marks of manifests that are gone. */
    forgetReleased: (lease: HeldLease, repositoryId: number, digests: string[]) =>
      underLease(lease, (trx) => forgetReleased(trx, repositoryId, digests)),

    /**
     * Claims the blobs of `digests` that are still unreferenced and older than `cutoff`: deletes their
     * rows, then runs `files` with them (to delete their bytes) before the commit. digest → size.
     */
    removeGarbageBlobs: (
      lease: HeldLease,
      digests: string[],
      cutoff: number,
      files: (gone: string[]) => Promise<void>,
    ): Promise<Map<string, number>> =>
      underLease(lease, async (trx) => {
        const still = await stillGarbageBlobs(trx, digests, cutoff);
        const gone = [...still.keys()];
        await deleteBlobRows(trx, gone);
        await files(gone);
        return still;
      }),

    /** Removes the links of `keys` that are still stale; how many went. */
    removeStaleLinks: (lease: HeldLease, keys: LinkKey[], cutoff: number) =>
      underLease(lease, (trx) => deleteStaleLinks(trx, keys, cutoff)),

    /**
     * Runs `files` with those of `digests` that have no blob row and no upload naming them, while no
     * commit can record one of them (the files it deletes are orphans until the commit).
     */
    withOrphanBlobs: <T>(lease: HeldLease, digests: string[], files: (orphans: string[]) => Promise<T>) =>
      underLease(lease, async (trx) => {
        const known = await existingBlobs(trx, digests);
        return files(digests.filter((d) => !known.has(d)));
      }),

    /** Deletes the upload sessions of `ids` still stale at `now`, then runs `files` with their ids. */
    removeStaleUploads: (
      lease: HeldLease,
      ids: string[],
      cutoff: number,
      now: number,
      files: (gone: string[]) => Promise<void>,
    ): Promise<string[]> =>
      underLease(lease, async (trx) => {
        const gone = await deleteStaleUploads(trx, ids, cutoff, now);
        await files(gone);
        return gone;
      }),

    /** Runs `files` with those of `ids` that have no upload row, while none can be created for them. */
    withOrphanUploads: <T>(lease: HeldLease, ids: string[], files: (orphans: string[]) => Promise<T>) =>
      underLease(lease, async (trx) => {
        const known = await existingUploads(trx, ids);
        return files(ids.filter((id) => !known.has(id)));
      }),

    /**
     * Retention: reads the repository's tags, lets `choose` pick those to remove (decided again in each
     * transaction, so what was pushed, moved or pulled meanwhile counts), removes those not moved since.
     * Returns the tags removed.
     */
    removeTags: (lease: HeldLease, repositoryId: number, choose: (tags: TagInfo[]) => TagInfo[]) =>
      underLease(lease, async (trx) => {
        const removed: TagInfo[] = [];
        for (const tag of choose(await tagsOfRepository(trx, repositoryId))) {
          if (await deleteTagIfUnchanged(trx, repositoryId, tag)) removed.push(tag);
        }
        await releaseUntagged(
          trx,
          repositoryId,
          removed.map((t) => t.digest),
        );
        return removed;
      }),
  };
}
