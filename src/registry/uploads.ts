import { createHash, type Hash } from "node:crypto";
import type { BlobStore } from "../storage/blob-store.js";
import { RegistryError } from "./errors.js";
import { createResumableSha256 } from "./sha256.js";

/** A SHA-256 in progress over an upload's bytes. */
export interface RunningHash {
  update(chunk: Buffer): void;
  /** The digest of what was hashed so far, in hex; hashing may go on afterwards. */
  hex(): string;
  /** The state to continue from in another process, or null when this implementation cannot export it. */
  save(): Uint8Array | null;
}

/** node:crypto (OpenSSL): the fastest, but its state cannot leave the process. */
class NodeSha256 implements RunningHash {
  constructor(private readonly hash: Hash = createHash("sha256")) {}
  update(chunk: Buffer): void {
    this.hash.update(chunk);
  }
  hex(): string {
    return this.hash.copy().digest("hex");
  }
  save(): null {
    return null;
  }
}

interface HashState {
  hash: RunningHash;
  size: number;
  usedAt: number;
}

const MAX_STATES = 2048;

/**
 * Running SHA-256 states of uploads in progress, so that each byte is hashed once as it streams in.
 * A cache only: when a chunk reaches another process, or after a restart, the state is rebuilt from the
 * bytes already stored, or, on stores that cannot read an upload back (S3), loaded from the state the
 * store saved with the last acknowledged chunk.
 */
export class UploadHashes {
  private readonly states = new Map<string, HashState>();

  constructor(private readonly store: BlobStore) {}

  /** A new hash for an upload that starts empty. */
  async fresh(): Promise<RunningHash> {
    return this.store.resumableHashes ? createResumableSha256() : new NodeSha256();
  }

  /** The hash over the first `size` bytes of the upload. */
  async at(id: string, size: number): Promise<RunningHash> {
    const state = this.states.get(id);
    if (state && state.size === size) {
      state.usedAt = Date.now();
      return state.hash;
    }
    this.states.delete(id);
    if (size === 0) return this.fresh();
    if (this.store.resumableHashes) {
      const saved = await this.store.uploadHashState?.(id, size);
      if (!saved) throw new Error(`upload ${id}: no saved hash state at ${size} bytes`);
      return createResumableSha256(saved);
    }
    const hash = createHash("sha256");
    for await (const chunk of await this.store.readUpload(id, size)) hash.update(chunk as Buffer);
    return new NodeSha256(hash);
  }

  remember(id: string, hash: RunningHash, size: number): void {
    if (this.states.size >= MAX_STATES) this.evict();
    this.states.set(id, { hash, size, usedAt: Date.now() });
  }

  forget(id: string): void {
    this.states.delete(id);
  }

  private evict(): void {
    const oldest = [...this.states.entries()]
      .sort((a, b) => a[1].usedAt - b[1].usedAt)
      .slice(0, MAX_STATES / 4);
    for (const [id] of oldest) this.states.delete(id);
  }
}

/** Hash a whole upload with another algorithm (sha512 digests). */
export async function hashUpload(
  store: BlobStore,
  id: string,
  size: number,
  algorithm: string,
): Promise<string> {
  if (store.resumableHashes) {
    throw new RegistryError(
      "UNSUPPORTED",
      `${algorithm} digests are not supported for uploads on the ${store.kind} store; use sha256`,
      { algorithm },
    );
  }
  const hash = createHash(algorithm);
  if (size > 0) for await (const chunk of await store.readUpload(id, size)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/**
 * An upload's lease while a request holds it: renewed every `renewMs`, and given up (`lost`) as soon as it
 * is no longer surely this request's: a renewal found it taken over, or renewals failed (the database
 * unreachable) until it could run out within one more interval, after which another request may take it.
 * From then on this request writes nothing more to the upload and truncates nothing: the body stream is
 * cut (guard) and the request answered 503.
 */
export class HeldUploadLease {
  private until: number;
  private failure: RegistryError | null = null;
  private renewing = false;
  private readonly timer: NodeJS.Timeout;
  /** Fails the read of the next chunk that `guard` is waiting for. */
  private waiting: ((err: RegistryError) => void) | null = null;

  constructor(
    readonly holder: string,
    takenAt: number,
    ttlMs: number,
    private readonly renewMs: number,
    renew: () => Promise<boolean>,
  ) {
    this.until = takenAt + ttlMs;
    this.timer = setInterval(() => {
      if (this.expired() || this.renewing) return;
      this.renewing = true;
      const sent = Date.now();
      renew()
        .then(
          (held) => {
            if (held) this.until = sent + ttlMs;
            else this.lose("was taken over by another request");
          },
          // Tried again at the next tick, until the lease could run out (expired).
          () => {},
        )
        .finally(() => {
          this.renewing = false;
        });
    }, renewMs);
  }

  /** Why this request must stop, once the lease is no longer surely its own; null while it is. */
  get lost(): RegistryError | null {
    this.expired();
    return this.failure;
  }

  /** Stops renewing (the caller releases the lease). */
  end(): void {
    clearInterval(this.timer);
  }

  /**
   * `body` until the lease is lost; then its error, at once, even while the next chunk is awaited. One
   * promise per chunk and nothing kept once it is read (racing each read against one long-lived promise
   * would keep every chunk reachable until the request ends).
   */
  guard(body: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
    const lease = this;
    return {
      [Symbol.asyncIterator]() {
        const chunks = body[Symbol.asyncIterator]();
        return {
          next(): Promise<IteratorResult<Buffer>> {
            const failure = lease.lost;
            if (failure) {
              void chunks.return?.()?.catch(() => {});
              return Promise.reject(failure);
            }
            return new Promise((resolve, reject) => {
              lease.waiting = reject;
              chunks.next().then(
                (result) => {
                  lease.waiting = null;
                  resolve(result);
                },
                (err) => {
                  lease.waiting = null;
                  reject(err);
                },
              );
            });
          },
          async return(): Promise<IteratorResult<Buffer>> {
            lease.waiting = null;
            await chunks.return?.();
            return { done: true, value: undefined };
          },
        };
      },
    };
  }

  private expired(): boolean {
    if (!this.failure && Date.now() >= this.until - this.renewMs) this.lose("could not be renewed in time");
    return this.failure !== null;
  }

  private lose(reason: string): void {
    if (this.failure) return;
    this.failure = new RegistryError(
      "UNAVAILABLE",
      `the upload's lease ${reason}: this request stopped writing; ask where the upload stands (GET) and go on from there`,
      undefined,
      { "Retry-After": "1" },
      503,
    );
    clearInterval(this.timer);
    this.waiting?.(this.failure);
    this.waiting = null;
  }
}

/**
 * Whether `body` is the whole blob `digest` again, `size` bytes (a final PUT resent by a proxy after the
 * replica that took it died): read and hashed, nothing written.
 */
export async function isWholeBlob(
  body: AsyncIterable<Buffer>,
  digest: { algorithm: string; digest: string },
  size: number,
): Promise<boolean> {
  const hash = createHash(digest.algorithm);
  let length = 0;
  for await (const chunk of body) {
    length += chunk.length;
    // Longer than the blob: not it, whatever follows (the rest is left unread).
    if (length > size) return false;
    hash.update(chunk);
  }
  return length === size && `${digest.algorithm}:${hash.digest("hex")}` === digest.digest;
}
