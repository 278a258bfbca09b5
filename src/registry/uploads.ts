import { createHash, type Hash } from "node:crypto";
import type { BlobStore } from "../storage/blob-store.js";

interface HashState {
  hash: Hash;
  size: number;
  usedAt: number;
}

const MAX_STATES = 2048;

/**
 * Running SHA-256 states of uploads in progress, so that each byte is hashed once as it streams in.
 * A cache only: when a chunk reaches another process, or after a restart, the state is rebuilt
 * from the bytes already on disk.
 */
export class UploadHashes {
  private readonly states = new Map<string, HashState>();

  constructor(private readonly store: BlobStore) {}

  /** The hash over the first `size` bytes of the upload. */
  async at(id: string, size: number): Promise<Hash> {
    const state = this.states.get(id);
    if (state && state.size === size) {
      state.usedAt = Date.now();
      return state.hash;
    }
    this.states.delete(id);
    const hash = createHash("sha256");
    if (size > 0) {
      for await (const chunk of await this.store.readUpload(id, size)) hash.update(chunk as Buffer);
    }
    return hash;
  }

  remember(id: string, hash: Hash, size: number): void {
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
  const hash = createHash(algorithm);
  if (size > 0) for await (const chunk of await store.readUpload(id, size)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
