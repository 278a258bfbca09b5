import type { Readable } from "node:stream";

export interface BlobStat {
  size: number;
  modifiedAt: number;
}

export interface StoredBlob {
  digest: string;
  size: number;
  modifiedAt: number;
}

export interface StoredUpload {
  id: string;
  size: number;
  modifiedAt: number;
}

/** How the caller will use what `read` returns. */
export interface ReadOptions {
  /**
   * The caller hands the body to a plain TCP socket and can splice a SocketBody (src/storage/socket-body.ts)
   * into it: a store that reads over plain HTTP may return one. `size` is the blob's size (from the
   * database), which such a read checks against the store's answer.
   */
  socket?: { size: number };
}

/**
 * Blob bytes, content-addressed, one copy per digest. Uploads are append-only files of their own,
 * made visible only by `commitUpload` (fsync, then an atomic rename into place).
 * Digests given to a store are already validated (src/registry/names.ts); stores never hash.
 */
export interface BlobStore {
  readonly kind: string;
  stat(digest: string): Promise<BlobStat | null>;
  /** Stream `[start, end]` (inclusive) of a blob, or all of it. */
  read(digest: string, range?: { start: number; end: number }, options?: ReadOptions): Promise<Readable>;
  /** Store small content (manifests) atomically under its digest. */
  put(digest: string, content: Buffer): Promise<void>;
  delete(digest: string): Promise<void>;
  list(): AsyncIterable<StoredBlob>;

  createUpload(id: string): Promise<void>;
  /** Current length of an upload's data, or null when it does not exist. */
  uploadSize(id: string): Promise<number | null>;
  /**
   * For the holder of an upload's lease, who knows that `acknowledged` bytes were acknowledged: what
   * uploadSize would say, where a store can answer more cheaply. It may answer `acknowledged` when it can
   * continue from there even though a write that was never acknowledged left more (which it then never
   * trusts). Stores without it are asked uploadSize.
   */
  continueUpload?(id: string, acknowledged: number): Promise<number | null>;
  /**
   * Write `source` at `offset`, calling `onChunk` for every chunk in order before it is written.
   * Resolves with the bytes written. On failure, what was written past `offset` is left as it is: the
   * writer may have lost the upload's lease to another (it stops because of that), and the next holder
   * cuts the upload back to what was acknowledged before it writes.
   */
  writeUpload(
    id: string,
    offset: number,
    source: AsyncIterable<Buffer>,
    onChunk: (chunk: Buffer) => void,
    hashState?: () => Uint8Array | null,
  ): Promise<number>;
  /**
   * Stores that cannot read an upload back (S3: parts of a multipart upload are unreadable until it completes)
   * set this: then the caller hashes with a SHA-256 whose state can be saved, passes `hashState` to
   * `writeUpload`, and continues from `uploadHashState` instead of reading the bytes again.
   */
  readonly resumableHashes?: boolean;
  /** The saved SHA-256 state over the first `size` bytes of an upload (stores with resumableHashes). */
  uploadHashState?(id: string, size: number): Promise<Uint8Array | null>;
  /**
   * Where the store holds registry:2 repositories that have not been imported (real images with no rows:
   * their blobs are never orphan files), for messages; null when there are none. Stores that cannot
   * share a directory with registry:2 leave it out.
   */
  foreignRepositories?(): Promise<string | null>;
  /**
   * Stores that may keep a blob where registry:2 cannot read it (S3: a blob uploaded in parts stays at the
   * key its multipart upload completed at): copies each such blob to Distribution's key, server-side, and
   * retires the other copy once no read can still be using it. Run in the background (a job) while
   * registry:2's link files are kept, so that registry:2 started on the same store reads every blob.
   */
  relocateForDistribution?(options: { retireAfterMs: number; signal?: AbortSignal }): Promise<{
    moved: number;
    bytes: number;
    retired: number;
  }>;
  /** A short-lived URL a client may GET the blob from directly (storage.redirect), when the store has one. */
  presign?(digest: string, expiresInSeconds: number): Promise<string>;
  /** Stream the first `length` bytes of an upload (to rebuild a hash state). */
  readUpload(id: string, length: number): Promise<Readable>;
  truncateUpload(id: string, size: number): Promise<void>;
  /** Flush an upload's bytes to stable storage (before its digest is committed). */
  syncUpload(id: string): Promise<void>;
  /**
   * Make a synced upload visible as `digest` (an atomic rename). The caller has verified the digest.
   * `size`: the upload's acknowledged size, when the caller knows it (stores that keep state per size use it).
   * A store that cannot tell its bytes apart by size (a file) checks that the upload holds exactly `size`
   * bytes, and refuses with an error whose `code` is UPLOAD_SIZE_MISMATCH, changing nothing.
   */
  commitUpload(id: string, digest: string, size?: number): Promise<void>;
  deleteUpload(id: string): Promise<void>;
  listUploads(): AsyncIterable<StoredUpload>;
  /** Proves the store can take a write (readiness). */
  probe(): Promise<void>;
  /** Releases connections (at shutdown). */
  close?(): void;
}

/** The `code` of commitUpload's error for an upload that does not hold the acknowledged number of bytes. */
export const UPLOAD_SIZE_MISMATCH = "UPLOAD_SIZE_MISMATCH";

/**
 * The blob store failed for a reason that is not the request's (throttling, timeouts, an unreachable
 * endpoint) after the store's own bounded retries. Answered with 503 and Retry-After, and logged
 * with the operation's name.
 */
export class StoreUnavailableError extends Error {
  readonly retryAfterSeconds = 5;
  constructor(
    readonly operation: string,
    override readonly cause: unknown,
  ) {
    super(
      `${operation} failed: ${(cause as Error)?.name ?? "error"}: ${(cause as Error)?.message ?? String(cause)}`,
    );
    this.name = "StoreUnavailableError";
  }
}

/**
 * Whether `err` is a StoreUnavailableError. By name as well as by class: the S3 store is loaded as a file
 * of its own beside the bundled worker (scripts/bundle-worker.mjs), with its own copy of this module.
 */
export function isStoreUnavailable(err: unknown): err is StoreUnavailableError {
  return (
    err instanceof StoreUnavailableError || (err instanceof Error && err.name === "StoreUnavailableError")
  );
}
