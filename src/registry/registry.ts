import { createHash, randomUUID } from "node:crypto";
import type { Readable } from "node:stream";
import type { NewEvent } from "../metadata/events-queries.js";
import type { ManifestRow, MetadataStore, ReferrerRow } from "../metadata/store.js";
import type { BlobStore, ReadOptions } from "../storage/blob-store.js";
import { UPLOAD_SIZE_MISMATCH } from "../storage/blob-store.js";
import { isRegistryError, RegistryError } from "./errors.js";
import { BLOB_MEDIA_TYPE, EventRecorder, type RequestInfo } from "./events.js"; // [events, issue 14]
import { manifestRecord, type ParsedManifest, parseManifest, requiredBlobs } from "./manifests.js";
import { OCI_INDEX } from "./media-types.js";
import {
  assertDigest,
  assertName,
  assertTag,
  lookupReference,
  type ParsedDigest,
  parseDigest,
  parseReference,
} from "./names.js";
import type { PullThroughCache } from "./proxy/cache.js";
import { HeldUploadLease, hashUpload, isWholeBlob, UploadHashes } from "./uploads.js";

export interface RegistryOptions {
  deleteEnabled: boolean;
  readOnly: boolean;
  maxManifestBytes: number;
  /**
   * A blob link older than this is renewed when a client asks for the blob (HEAD, GET, mount), so that a
   * client that saw the blob and skipped its upload has a whole grace period to push the manifest before the
   * garbage collector may take an unreferenced blob. Half the collector's grace period.
   */
  linkRefreshMs: number;
  /** Notifications (issue 14): records events in the transactions below; none when absent. */
  events?: EventRecorder;
}

export interface ByteRange {
  start: number;
  end: number;
}

export interface UploadState {
  id: string;
  size: number;
}

/** What an upload holds: its size, and the SHA-256 of those bytes when known. */
interface Written {
  size: number;
  digest: string | null;
  /**
   * The upload's file is gone because a commit moved it to the blob path of `digest` and stopped (a crash)
   * before its transaction: the bytes wait there, verified, for the final PUT to finish the commit.
   */
  inPlace?: boolean;
}

export interface PutManifestResult {
  digest: string;
  subject: string | null;
  tags: string[];
}

export interface Page<T> {
  items: T[];
  /** The last item when more follow (for the Link header), else null. */
  next: string | null;
}

export interface ReferrerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/**
 * How long an upload's lease lasts unless renewed. A request renews it every UPLOAD_LEASE_RENEW_MS while
 * it writes, and stops writing (HeldUploadLease) once a renewal finds it taken over or renewals failed
 * until it could run out; the lease of a request that died (with its process, or its whole machine) ends
 * when its time runs out, or at once when its holder's process is seen to be gone by a process that shares
 * its PID namespace (the metadata store judges that, see leaseUpload). A request that finds the lease
 * taken watches it for a while (leaseOrWait): a holder that renews it or lets it go was alive, and the
 * request is refused with 416; one that lets it run out died, and the request goes on, so a client that
 * retries on another replica after a crash waits seconds at most, not a refusal.
 */
const UPLOAD_LEASE_MS = 15_000;
const UPLOAD_LEASE_RENEW_MS = 3_000;
const UPLOAD_LEASE_POLL_MS = 200;
const PULL_MARK_INTERVAL_MS = 60_000;
const PULL_FLUSH_MS = 1_000;

/**
 * The registry's domain: every operation of the distribution API, with no HTTP in sight.
 * Bytes go to the BlobStore, everything else to the MetadataStore; a blob or manifest becomes
 * visible only in the transaction that records it, after its bytes are durable and verified.
 */
export class Registry {
  readonly hashes: UploadHashes;
  readonly events: EventRecorder; // [events, issue 14]
  private readonly pulls = new Map<string, number>();
  private pullTimer: NodeJS.Timeout | null = null;
  /** The pull-through cache (issue 13), when the configuration has `proxy`: consulted for mirrored repositories. */
  proxy: PullThroughCache | null = null;

  constructor(
    readonly meta: MetadataStore,
    readonly store: BlobStore,
    readonly options: RegistryOptions,
  ) {
    this.hashes = new UploadHashes(store);
    this.events = options.events ?? EventRecorder.disabled(); // [events, issue 14]
  }

  private assertWritable(): void {
    if (this.options.readOnly) {
      throw new RegistryError(
        "UNSUPPORTED",
        "the registry is in read-only mode: pushes and deletes are refused, pulls work",
        {
          readonly: true,
        },
      );
    }
  }

  private assertDeletable(): void {
    this.assertWritable();
    if (!this.options.deleteEnabled) {
      throw new RegistryError(
        "UNSUPPORTED",
        "deleting is disabled on this registry (storage.delete.enabled is false)",
      );
    }
  }

  private async repositoryIdOrUnknown(name: string): Promise<number> {
    const id = await this.meta.repositoryId(name);
    if (id === null)
      throw new RegistryError("NAME_UNKNOWN", "repository name not known to registry", { name });
    return id;
  }

  // ---------------------------------------------------------------- blobs

  /** A blob's size; `probe`: for a HEAD (see PullThroughCache.statBlob). */
  async statBlob(name: string, digest: string, probe = false): Promise<{ digest: string; size: number }> {
    assertName(name);
    assertDigest(digest);
    const blob = await this.meta.linkedBlob(name, digest);
    if (!blob) {
      const proxied = await this.proxy?.statBlob(name, digest, probe);
      if (proxied) return proxied;
      throw new RegistryError("BLOB_UNKNOWN", "blob unknown to registry", { digest });
    }
    if (!this.options.readOnly && blob.linkedAt < Date.now() - this.options.linkRefreshMs) {
      // The collector may have taken it between the read above and now: only a renewed link counts.
      if (!(await this.meta.refreshLink(name, digest))) {
        throw new RegistryError("BLOB_UNKNOWN", "blob unknown to registry", { digest });
      }
    }
    return { digest, size: blob.size };
  }

  async openBlob(
    name: string,
    digest: string,
    range?: ByteRange,
    options?: ReadOptions,
  ): Promise<{ size: number; stream: Readable }> {
    const { size } = await this.statBlob(name, digest);
    if (this.proxy && !(await this.meta.linkedBlob(name, digest))) {
      // Fetched through the mirror: the size is the upstream's (or the stored bytes'), which a size
      // statBlob took from a manifest may not be.
      const proxied = await this.proxy.openBlob(name, digest, size, range);
      if (proxied) return proxied;
    }
    try {
      return { size, stream: await this.store.read(digest, range, options) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw new RegistryError("BLOB_UNKNOWN", "blob unknown to registry", { digest });
      }
      throw err;
    }
  }

  async deleteBlob(name: string, digest: string, request?: RequestInfo): Promise<void> {
    assertName(name);
    assertDigest(digest);
    this.assertDeletable();
    const repositoryId = await this.repositoryIdOrUnknown(name);
    const events = this.events.rows(request, "delete", { repository: name, digest }); // [events, issue 14]
    const removed = await this.meta.unlinkBlobOf(name, repositoryId, digest, events);
    if (removed) this.events.recorded(events);
    if (!removed) throw new RegistryError("BLOB_UNKNOWN", "blob unknown to registry", { digest });
  }

  /**
   * Links a blob that another repository holds into `name`. `from` may be omitted; then any repository
   * that `canRead` and that links the blob will do. Returns false when nothing could be mounted.
   */
  async mountBlob(
    name: string,
    digest: string,
    from: string | undefined,
    canRead: (repo: string) => boolean,
    request?: RequestInfo,
  ): Promise<boolean> {
    assertName(name);
    this.assertWritable();
    this.proxy?.assertWritable(name);
    if (!parseDigest(digest)) return false;
    let source: string | undefined;
    if (from !== undefined) {
      if (!canRead(from) || !(await this.meta.linkedBlob(from, digest).catch(() => null))) return false;
      source = from;
    } else {
      source = (await this.meta.repositoriesLinking(digest)).find((repo) => canRead(repo));
      if (source === undefined) return false;
    }
    const sourceName = source;
    let events: NewEvent[] = [];
    const mounted = await this.meta.linkExistingBlob(name, digest, sourceName, (size) => {
      // [events, issue 14]
      events = this.events.rows(request, "mount", {
        repository: name,
        digest,
        mediaType: BLOB_MEDIA_TYPE,
        size,
        fromRepository: sourceName,
      });
      return events;
    });
    if (mounted) this.events.recorded(events);
    return mounted;
  }

  // ---------------------------------------------------------------- uploads

  async startUpload(name: string): Promise<UploadState> {
    assertName(name);
    this.assertWritable();
    this.proxy?.assertWritable(name);
    const id = randomUUID();
    await this.store.createUpload(id);
    await this.meta.createUpload(name, id);
    return { id, size: 0 };
  }

  async uploadStatus(name: string, id: string): Promise<UploadState> {
    assertName(name);
    const row = await this.meta.upload(name, id);
    if (!row) throw unknownUpload(id);
    // Status and the final PUT must agree: an upload whose bytes are neither in its file nor already in
    // place (see Written.inPlace) cannot be completed, so it is unknown here too.
    if ((await this.store.uploadSize(id)) === null && !(await this.bytesInPlace(row))) {
      await this.meta.deleteUploadRow(id);
      throw unknownUpload(id);
    }
    return { id, size: row.size };
  }

  /** Whether an upload's recorded bytes already sit at the blob path of its recorded digest, whole. */
  private async bytesInPlace(row: { size: number; digest: string | null }): Promise<boolean> {
    if (!row.digest || !parseDigest(row.digest)) return false;
    const stat = await this.store.stat(row.digest);
    return stat !== null && stat.size === row.size;
  }

  async cancelUpload(name: string, id: string): Promise<void> {
    assertName(name);
    const row = await this.meta.upload(name, id);
    if (!row) throw unknownUpload(id);
    await this.meta.deleteUploadRow(id);
    this.hashes.forget(id);
    await this.store.deleteUpload(id);
  }

  /**
   * Appends a chunk. With `range` (Content-Range), the chunk must start where the upload ends,
   * or it is refused with 416 and the upload is left as it was.
   */
  async appendChunk(
    name: string,
    id: string,
    body: AsyncIterable<Buffer>,
    range?: ByteRange,
    contentLength?: number,
  ): Promise<UploadState> {
    assertName(name);
    this.assertWritable();
    return this.withUploadLease(name, id, async (state, lease) => {
      if (state.inPlace) throw alreadyInPlace(id, state.size);
      const next = await this.writeChunk(id, state, lease, body, range, contentLength);
      return { state: next, result: { id, size: next.size } };
    });
  }

  /** Finishes an upload, with an optional last chunk, verifying the digest before anything is visible. */
  async completeUpload(
    name: string,
    id: string,
    digest: string,
    body: AsyncIterable<Buffer> | null,
    range?: ByteRange,
    contentLength?: number,
    request?: RequestInfo,
  ): Promise<{ digest: string; size: number }> {
    assertName(name);
    this.assertWritable();
    const parsed = assertDigest(digest);
    try {
      return await this.finishUpload(name, id, parsed, body, range, contentLength, request);
    } catch (err) {
      // Unknown uploads are refused before their body is read (a body read already is found short below).
      if (!isRegistryError(err) || err.code !== "BLOB_UPLOAD_UNKNOWN" || !body) throw err;
      const resent = await this.resentAfterCommit(name, parsed, body, range);
      if (resent) return resent;
      throw err;
    }
  }

  private async finishUpload(
    name: string,
    id: string,
    parsed: ParsedDigest,
    body: AsyncIterable<Buffer> | null,
    range: ByteRange | undefined,
    contentLength: number | undefined,
    request: RequestInfo | undefined,
  ): Promise<{ digest: string; size: number }> {
    return this.withUploadLease(name, id, async (before, lease) => {
      if (body && before.digest === parsed.digest && before.size > 0) {
        // The upload holds exactly the bytes of `digest` already: a body now is the whole blob again, a
        // final PUT resent after the request that carried it first died in its commit (a proxy retries
        // an idempotent PUT on another replica). Then the commit goes on; anything else is answered with
        // where the upload stands, and the upload is kept.
        if (range?.start || !(await isWholeBlob(lease.guard(body), parsed, before.size))) {
          throw alreadyComplete(id, before.size);
        }
        body = null;
      }
      if (before.inPlace) {
        if (body) throw alreadyInPlace(id, before.size);
        if (before.digest !== parsed.digest) {
          // The bytes in place are those of another digest: this upload cannot become `digest`.
          await this.meta.deleteUploadRow(id);
          throw new RegistryError("DIGEST_INVALID", "provided digest did not match uploaded content", {
            expected: parsed.digest,
            actual: before.digest,
          });
        }
        await this.commitInPlace(name, id, parsed.digest, before.size, lease, request);
        return { state: before, result: { digest: parsed.digest, size: before.size } };
      }
      const state = body ? await this.writeChunk(id, before, lease, body, range, contentLength) : before;
      const actual = await this.uploadDigest(id, state, parsed);
      if (actual !== parsed.digest) {
        await this.discardUpload(id);
        throw new RegistryError("DIGEST_INVALID", "provided digest did not match uploaded content", {
          expected: parsed.digest,
          actual,
        });
      }
      // The row already names these bytes when the last PATCH brought them all (the usual bodiless PUT).
      const recorded = !body && before.digest === parsed.digest && before.size === state.size;
      await this.commit(name, id, parsed.digest, state.size, { lease, recorded }, request);
      return { state, result: { digest: parsed.digest, size: state.size } };
    });
  }

  /**
   * A final PUT resent after its upload was committed (the replica that committed it died before its
   * answer reached the client, and a proxy sent the PUT again): the upload's row is gone, the blob is
   * linked to `name`, and the body is that blob's bytes again. Answered as the first PUT would have been;
   * null for anything else (the upload is unknown then).
   */
  private async resentAfterCommit(
    name: string,
    parsed: ParsedDigest,
    body: AsyncIterable<Buffer>,
    range: ByteRange | undefined,
  ): Promise<{ digest: string; size: number } | null> {
    if (range?.start) return null;
    const blob = await this.meta.linkedBlob(name, parsed.digest);
    if (!blob || !(await isWholeBlob(body, parsed, blob.size))) return null;
    return { digest: parsed.digest, size: blob.size };
  }

  /** POST ?digest=: the whole blob in one request. */
  async monolithicUpload(
    name: string,
    digest: string,
    body: AsyncIterable<Buffer>,
    contentLength?: number,
    request?: RequestInfo,
  ): Promise<{ digest: string; size: number }> {
    assertName(name);
    this.assertWritable();
    this.proxy?.assertWritable(name);
    const parsed = assertDigest(digest);
    const id = randomUUID();
    await this.store.createUpload(id);
    try {
      const hash = await this.hashes.fresh();
      const size = await this.store.writeUpload(
        id,
        0,
        body,
        (chunk) => hash.update(chunk),
        () => hash.save(),
      );
      if (contentLength !== undefined && size !== contentLength) {
        throw new RegistryError("SIZE_INVALID", "body length did not match Content-Length", {
          contentLength,
          received: size,
        });
      }
      const actual =
        parsed.algorithm === "sha256"
          ? `sha256:${hash.hex()}`
          : `${parsed.algorithm}:${await hashUpload(this.store, id, size, parsed.algorithm)}`;
      if (actual !== parsed.digest) {
        throw new RegistryError("DIGEST_INVALID", "provided digest did not match uploaded content", {
          expected: parsed.digest,
          actual,
        });
      }
      await this.commit(name, id, parsed.digest, size, null, request);
      return { digest: parsed.digest, size };
    } catch (err) {
      await this.store.deleteUpload(id).catch(() => {});
      throw err;
    }
  }

  /**
   * Runs `fn` while holding the upload's lease, with what was acknowledged so far (its size, and the
   * SHA-256 of those bytes), and records what `fn` leaves behind, whether it succeeded or not.
   */
  /**
   * Takes an upload's lease. When another request holds it, watches the lease: renewed, its holder is
   * alive and writing; released, its holder wrote and what this request was sent for has moved on;
   * either way null (the caller refuses with 416 and the current Range). Left to run out, its holder died
   * (a replica killed mid-chunk), and the lease is taken once it has. Waits at most one lease time and one
   * renewal interval.
   */
  private async leaseOrWait(name: string, id: string): Promise<{ holder: string; at: number } | null> {
    // `at`: a time before the lease was written, so that it runs no longer than its holder believes.
    const lease = async (watched?: number) => {
      const at = Date.now();
      const holder = await this.meta.leaseUpload(id, UPLOAD_LEASE_MS, watched);
      return holder === null ? null : { holder, at };
    };
    const first = await lease();
    if (first !== null) return first;
    const deadline = Date.now() + UPLOAD_LEASE_MS + UPLOAD_LEASE_RENEW_MS;
    let until: number | null = null;
    for (;;) {
      const row = await this.meta.upload(name, id);
      if (!row) throw unknownUpload(id);
      if (row.lease_until === null) return null;
      if (until !== null && row.lease_until > until) return null;
      until = row.lease_until;
      const now = Date.now();
      // A lease longer than any this version takes (an older Berth's 30 s ones) is not watched to its end.
      if (until - now > UPLOAD_LEASE_MS + UPLOAD_LEASE_RENEW_MS) return null;
      // The lease watched, taken once it has run out, or as soon as its holder is seen to be a process
      // that is gone (not one released or renewed since: that holder was alive, see above).
      const taken = await lease(until);
      if (taken !== null) return taken;
      if (now >= deadline) return null;
      await new Promise((resolve) => setTimeout(resolve, UPLOAD_LEASE_POLL_MS));
    }
  }

  private async withUploadLease<T>(
    name: string,
    id: string,
    fn: (state: Written, lease: HeldUploadLease) => Promise<{ state: Written; result: T }>,
  ): Promise<T> {
    const row = await this.meta.upload(name, id);
    if (!row) throw unknownUpload(id);
    const taken = await this.leaseOrWait(name, id);
    if (taken === null) {
      const now = await this.meta.upload(name, id);
      throw new RegistryError(
        "BLOB_UPLOAD_INVALID",
        "another request is writing to this upload",
        { id },
        rangeHeader((now ?? row).size),
        416,
      );
    }
    const { holder, at } = taken;
    const lease = new HeldUploadLease(holder, at, UPLOAD_LEASE_MS, UPLOAD_LEASE_RENEW_MS, () =>
      this.meta.renewUploadLease(id, holder, UPLOAD_LEASE_MS),
    );
    let state: Written = { size: row.size, digest: row.digest };
    try {
      // What was acknowledged, read again now that the lease is ours: the row read above may predate a
      // request that wrote, finished and let the lease go in between, and trimming the file back to that
      // older size would throw away bytes it acknowledged.
      const current = await this.meta.upload(name, id);
      if (!current) throw unknownUpload(id);
      state = { size: current.size, digest: current.digest };
      // The file is the truth for bytes, the row for what was acknowledged: trim anything unacknowledged.
      const onDisk = this.store.continueUpload
        ? await this.store.continueUpload(id, state.size)
        : await this.store.uploadSize(id);
      if (onDisk === null) {
        if (await this.bytesInPlace(state)) {
          state = { ...state, inPlace: true };
          const done = await fn(state, lease);
          state = done.state;
          return done.result;
        }
        await this.meta.deleteUploadRow(id);
        throw unknownUpload(id);
      }
      if (onDisk > state.size) await this.store.truncateUpload(id, state.size);
      else if (onDisk < state.size) {
        state = { size: onDisk, digest: null };
        this.hashes.forget(id);
      }
      const done = await fn(state, lease);
      state = done.state;
      return done.result;
    } finally {
      lease.end();
      await this.meta.finishUploadWrite(id, holder, state.size, state.digest).catch(() => {});
    }
  }

  private async writeChunk(
    id: string,
    state: Written,
    lease: HeldUploadLease,
    body: AsyncIterable<Buffer>,
    range?: ByteRange,
    contentLength?: number,
  ): Promise<Written> {
    const offset = state.size;
    if (range) {
      if (range.start !== offset) {
        throw new RegistryError(
          "BLOB_UPLOAD_INVALID",
          "chunk out of order: its range must start where the upload ends",
          { expectedStart: offset, start: range.start },
          rangeHeader(offset),
          416,
        );
      }
      if (
        range.end < range.start ||
        (contentLength !== undefined && range.end - range.start + 1 !== contentLength)
      ) {
        throw new RegistryError(
          "BLOB_UPLOAD_INVALID",
          "Content-Range does not match Content-Length",
          { range, contentLength },
          rangeHeader(offset),
          416,
        );
      }
    }
    const hash = await this.hashes.at(id, offset);
    this.hashes.forget(id);
    // What a write leaves past `offset` when it fails is cut back by the next holder of the lease (see
    // withUploadLease), never here: this request may no longer hold it.
    const written = await this.store.writeUpload(
      id,
      offset,
      lease.guard(body),
      (chunk) => hash.update(chunk),
      () => hash.save(),
    );
    const expected = range ? range.end - range.start + 1 : contentLength;
    if (expected !== undefined && written !== expected) {
      const lost = lease.lost;
      if (lost) throw lost;
      await this.store.truncateUpload(id, offset);
      throw new RegistryError(
        "BLOB_UPLOAD_INVALID",
        "chunk length did not match its declared length",
        { expected, received: written },
        rangeHeader(offset),
        400,
      );
    }
    const size = offset + written;
    this.hashes.remember(id, hash, size);
    // Recorded with the size, so that any process can verify a bodiless PUT without reading the bytes again.
    return { size, digest: `sha256:${hash.hex()}` };
  }

  private async uploadDigest(id: string, state: Written, parsed: ParsedDigest): Promise<string> {
    if (parsed.algorithm !== "sha256") {
      return `${parsed.algorithm}:${await hashUpload(this.store, id, state.size, parsed.algorithm)}`;
    }
    if (state.digest?.startsWith("sha256:")) return state.digest;
    const hash = await this.hashes.at(id, state.size);
    this.hashes.forget(id);
    return `sha256:${hash.hex()}`;
  }

  private async discardUpload(id: string): Promise<void> {
    this.hashes.forget(id);
    await this.meta.deleteUploadRow(id);
    await this.store.deleteUpload(id);
  }

  /**
   * fsync, then in one transaction that holds the database write lock: record the blob, rename its bytes
   * into place, link it to the repository and drop the upload. The garbage collector deletes files under
   * the same lock, so it can never remove bytes that a commit is making visible.
   *
   * A crash can stop this between the rename and the end of the transaction. So that the upload can still
   * be finished then, its row first records the verified size and digest: with the file gone and those
   * bytes at that digest's path, status and the final PUT both see a complete upload (Written.inPlace), the
   * PUT finishes the commit (commitInPlace), and the collector keeps the file meanwhile (existingBlobs).
   */
  private async commit(
    name: string,
    id: string,
    digest: string,
    size: number,
    row: { lease: HeldUploadLease; recorded: boolean } | null,
    request?: RequestInfo,
  ): Promise<void> {
    await this.store.syncUpload(id);
    if (row && !row.recorded && !(await this.meta.noteUploadWrite(id, row.lease.holder, size, digest))) {
      throw row.lease.lost ?? leaseTakenOver(id);
    }
    // [events, issue 14]
    const events = this.events.rows(request, "push", {
      repository: name,
      digest,
      mediaType: BLOB_MEDIA_TYPE,
      size,
    });
    const lost = row?.lease.lost;
    if (lost) throw lost;
    let committed: boolean;
    try {
      committed = await this.meta.commitBlob(
        name,
        { digest, size, uploadId: row ? id : null, holder: row?.lease.holder, events },
        // The store checks that the upload holds exactly the `size` bytes that were verified.
        () => this.store.commitUpload(id, digest, size),
      );
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== UPLOAD_SIZE_MISMATCH) throw err;
      // Bytes beyond (or short of) what was acknowledged and hashed: written without the lease; the
      // upload cannot be trusted.
      if (row) await this.discardUpload(id);
      throw new RegistryError(
        "BLOB_UPLOAD_INVALID",
        "the upload's stored size differs from what was acknowledged; start the upload again",
        { id, acknowledged: size },
      );
    }
    if (!committed) throw leaseTakenOver(id);
    this.events.recorded(events);
    this.hashes.forget(id);
  }

  /** The second half of a commit that a crash interrupted after its rename: the bytes are in place. */
  private async commitInPlace(
    name: string,
    id: string,
    digest: string,
    size: number,
    lease: HeldUploadLease,
    request?: RequestInfo,
  ): Promise<void> {
    // [events, issue 14]
    const events = this.events.rows(request, "push", {
      repository: name,
      digest,
      mediaType: BLOB_MEDIA_TYPE,
      size,
    });
    const lost = lease.lost;
    if (lost) throw lost;
    const committed = await this.meta.commitBlobInPlace(
      name,
      { digest, size, uploadId: id, holder: lease.holder, events },
      async () => {
        // Under the write lock, so the collector cannot be removing the file at this moment.
        const stat = await this.store.stat(digest);
        return stat !== null && stat.size === size;
      },
    );
    if (committed === null) throw leaseTakenOver(id);
    if (committed) this.events.recorded(events);
    this.hashes.forget(id);
    if (!committed) throw unknownUpload(id);
  }

  // ---------------------------------------------------------------- manifests

  async putManifest(
    name: string,
    reference: string,
    content: Buffer,
    contentType: string | undefined,
    extraTags: string[] = [],
    request?: RequestInfo,
  ): Promise<PutManifestResult> {
    assertName(name);
    const ref = parseReference(reference);
    this.assertWritable();
    this.proxy?.assertWritable(name);
    if (content.length > this.options.maxManifestBytes) {
      throw new RegistryError(
        "SIZE_INVALID",
        `manifest is larger than the limit of ${this.options.maxManifestBytes} bytes`,
        { size: content.length },
        {},
        413,
      );
    }
    const tags = [...new Set([...(ref.kind === "tag" ? [ref.tag] : []), ...extraTags.map(assertTag)])];
    const parsed = parseManifest(content, contentType);
    const algorithm = ref.kind === "digest" ? ref.digest.algorithm : "sha256";
    const digest = `${algorithm}:${createHash(algorithm).update(content).digest("hex")}`;
    if (ref.kind === "digest" && ref.digest.digest !== digest) {
      throw new RegistryError("DIGEST_INVALID", "manifest digest did not match the reference", {
        expected: ref.digest.digest,
        actual: digest,
      });
    }
    // [events, issue 14] one push event per tag (or one without a tag), as registry:2 sends them
    const target = {
      repository: name,
      digest,
      mediaType: parsed.mediaType,
      size: content.length,
      references: manifestReferences(parsed),
    };
    const events = this.events.rows(
      request,
      "push",
      ...(tags.length === 0 ? [target] : tags.map((tag) => ({ ...target, tag }))),
    );
    const missing = await this.meta.commitManifest(
      name,
      { manifest: manifestRecord(digest, content, parsed), tags, events },
      () => this.store.put(digest, content),
      { blobs: requiredBlobs(parsed), manifests: parsed.manifests.map((m) => m.digest) },
    );
    if (missing) {
      throw new RegistryError(
        "MANIFEST_BLOB_UNKNOWN",
        missing.kind === "blob"
          ? "manifest references a blob unknown to this repository"
          : "index references a manifest unknown to this repository",
        { digest: missing.digest },
      );
    }
    this.events.recorded(events);
    return { digest, subject: parsed.subject?.digest ?? null, tags };
  }

  /** A manifest by tag or digest, exactly as pushed. `pull` marks it as pulled (retention). */
  async getManifest(name: string, reference: string, pull = false): Promise<ManifestRow> {
    assertName(name);
    const ref = lookupReference(reference);
    const row =
      (this.proxy ? await this.proxy.manifest(name, reference) : null) ??
      (ref === null
        ? null
        : ref.kind === "tag"
          ? await this.meta.manifestByTag(name, ref.tag)
          : await this.meta.manifestByDigest(name, ref.digest.digest));
    if (!row) {
      if ((await this.meta.repositoryId(name)) === null) {
        throw new RegistryError("NAME_UNKNOWN", "repository name not known to registry", { name });
      }
      throw new RegistryError("MANIFEST_UNKNOWN", "manifest unknown to registry", { reference });
    }
    // Recorded at most once a minute, or four times per proxy.ttl when that is shorter (the cache's expiry
    // judges by it).
    const markEvery = Math.min(PULL_MARK_INTERVAL_MS, (this.proxy?.shortestTtlMs ?? Infinity) / 4);
    if (pull && !this.options.readOnly && (row.last_pulled_at ?? 0) < Date.now() - markEvery) {
      this.notePull(name, row.digest);
    }
    return row;
  }

  /**
   * Pull times (for retention) are written in batches, never on the request's path: a write there could
   * wait on the database lock that another process (the collector) holds.
   */
  private notePull(name: string, digest: string): void {
    this.pulls.set(`${name}\n${digest}`, Date.now());
    if (this.pullTimer) return;
    this.pullTimer = setTimeout(() => {
      this.pullTimer = null;
      void this.flushPulls();
    }, PULL_FLUSH_MS);
    this.pullTimer.unref();
  }

  /** Writes the pull times noted so far in one transaction (also called on shutdown). */
  async flushPulls(): Promise<void> {
    if (this.pulls.size === 0) return;
    const batch = [...this.pulls.entries()];
    this.pulls.clear();
    await this.meta
      .markPulledMany(
        batch.map(([key, at]) => {
          const [name, digest] = key.split("\n") as [string, string];
          return { name, digest, at };
        }),
      )
      .catch(() => {});
  }

  /** DELETE by tag removes that tag only; by digest the manifest and every tag on it. */
  async deleteManifest(name: string, reference: string, request?: RequestInfo): Promise<void> {
    assertName(name);
    this.assertDeletable();
    const ref = lookupReference(reference);
    const repositoryId = await this.repositoryIdOrUnknown(name);
    if (ref === null)
      throw new RegistryError("MANIFEST_UNKNOWN", "manifest unknown to registry", { reference });
    // [events, issue 14]
    const events = this.events.rows(
      request,
      "delete",
      ref.kind === "tag"
        ? { repository: name, tag: ref.tag }
        : { repository: name, digest: ref.digest.digest },
    );
    const removed = await this.meta.deleteReference(
      name,
      repositoryId,
      ref.kind === "tag" ? { tag: ref.tag } : { digest: ref.digest.digest },
      events,
    );
    if (removed) this.events.recorded(events);
    if (!removed) throw new RegistryError("MANIFEST_UNKNOWN", "manifest unknown to registry", { reference });
  }

  async deleteTag(name: string, tag: string, request?: RequestInfo): Promise<void> {
    assertTag(tag);
    await this.deleteManifest(name, tag, request);
  }

  /** Removes a repository with its tags, manifests, blob links and uploads. Blobs go at the next collection. */
  async deleteRepository(name: string, request?: RequestInfo): Promise<void> {
    assertName(name);
    this.assertDeletable();
    const repositoryId = await this.repositoryIdOrUnknown(name);
    const events = this.events.rows(request, "delete", { repository: name }); // [events, issue 14]
    const uploads = await this.meta.removeRepository(name, repositoryId, events);
    this.events.recorded(events);
    for (const id of uploads) {
      this.hashes.forget(id);
      await this.store.deleteUpload(id).catch(() => {});
    }
  }

  // ---------------------------------------------------------------- listings

  async listTags(name: string, n?: number, last?: string): Promise<Page<string>> {
    assertName(name);
    const repositoryId = await this.repositoryIdOrUnknown(name);
    if (n === 0) return { items: [], next: null };
    const rows = await this.meta.listTags(repositoryId, n === undefined ? undefined : n + 1, last);
    if (n !== undefined && rows.length > n) {
      const items = rows.slice(0, n);
      return { items, next: items[items.length - 1] ?? null };
    }
    return { items: rows, next: null };
  }

  /** Repositories in byte order; `visible` filters out what the caller may not pull. */
  async catalog(
    n: number,
    last: string | undefined,
    visible: (repo: string) => boolean = () => true,
  ): Promise<Page<string>> {
    if (n === 0) return { items: [], next: null };
    const items: string[] = [];
    let cursor = last;
    for (;;) {
      const batch = await this.meta.listRepositories(Math.max(n + 1, 100), cursor);
      for (const repo of batch) {
        if (!visible(repo)) continue;
        if (items.length === n) return { items, next: items[n - 1] ?? null };
        items.push(repo);
      }
      if (batch.length < Math.max(n + 1, 100)) return { items, next: null };
      cursor = batch[batch.length - 1];
    }
  }

  async referrers(name: string, digest: string, artifactType?: string): Promise<ReferrerDescriptor[]> {
    assertName(name);
    assertDigest(digest);
    const rows = await this.meta.referrers(name, digest, artifactType);
    return rows.map(referrerDescriptor);
  }

  /** The referrers response body: an OCI image index. */
  static referrersIndex(descriptors: ReferrerDescriptor[]): {
    schemaVersion: 2;
    mediaType: string;
    manifests: ReferrerDescriptor[];
  } {
    return { schemaVersion: 2, mediaType: OCI_INDEX, manifests: descriptors };
  }
}

/** The descriptors a manifest points at, for an event's target.references (issue 14). */
function manifestReferences(m: ParsedManifest): { mediaType: string; digest: string; size: number }[] {
  const all = [...(m.config ? [m.config] : []), ...m.layers, ...m.manifests];
  return all.map((d) => ({ mediaType: d.mediaType, digest: d.digest, size: d.size }));
}

function referrerDescriptor(row: ReferrerRow): ReferrerDescriptor {
  const d: ReferrerDescriptor = { mediaType: row.media_type, digest: row.digest, size: row.size };
  if (row.artifact_type) d.artifactType = row.artifact_type;
  if (row.annotations) d.annotations = JSON.parse(row.annotations) as Record<string, string>;
  return d;
}

function alreadyInPlace(id: string, size: number): RegistryError {
  return new RegistryError(
    "BLOB_UPLOAD_INVALID",
    "the upload is complete: finish it with a PUT and its digest, without a body",
    { id },
    rangeHeader(size),
    416,
  );
}

function alreadyComplete(id: string, size: number): RegistryError {
  return new RegistryError(
    "BLOB_UPLOAD_INVALID",
    "the upload already holds all the bytes of this digest: finish it with a PUT without a body",
    { id },
    rangeHeader(size),
    416,
  );
}

function leaseTakenOver(id: string): RegistryError {
  return new RegistryError(
    "UNAVAILABLE",
    "the upload's lease was taken over by another request: ask where the upload stands (GET) and go on from there",
    { id },
    { "Retry-After": "1" },
    503,
  );
}

function unknownUpload(id: string): RegistryError {
  return new RegistryError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", { id });
}

/** The spec's Range header for an upload holding `size` bytes. */
export function uploadRange(size: number): string {
  return `0-${Math.max(size - 1, 0)}`;
}

function rangeHeader(size: number): Record<string, string> {
  return { Range: uploadRange(size) };
}

export type { ParsedManifest };
