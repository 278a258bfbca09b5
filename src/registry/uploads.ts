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
