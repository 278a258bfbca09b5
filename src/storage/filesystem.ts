import { randomUUID } from "node:crypto";
import { createReadStream, constants as fsc } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import {
  type BlobStat,
  type BlobStore,
  type StoredBlob,
  type StoredUpload,
  UPLOAD_SIZE_MISMATCH,
} from "./blob-store.js";
import { repositoriesDir } from "./distribution-probe.js";
import { StreamMemory } from "./memory.js";
import { makePrivateDir } from "./private-files.js";

/** Flush threshold when streaming an upload to disk: large writes, few syscalls, flat memory. */
const WRITE_BATCH = 1024 * 1024;
/**
 * During a long upload, start a background flush every this many bytes, so that the disk writes while
 * the network still delivers and the fsync at commit only has the tail left to flush.
 */
const FLUSH_EVERY = 64 * 1024 * 1024;
const READ_CHUNK = 1024 * 1024;

/**
 * Blobs on a local filesystem, laid out as Distribution lays them out
 * (`docker/registry/v2/blobs/sha256/ab/abcd.../data`), so that a registry:2 root directory can be adopted.
 * Uploads live in `berth/uploads/<id>`, on the same filesystem, so that commit is a rename.
 */
export class FilesystemBlobStore implements BlobStore {
  readonly kind = "filesystem";
  private readonly blobRoot: string;
  private readonly uploadRoot: string;
  private readonly tmpRoot: string;
  private readonly flushing = new Map<string, Promise<void>>();

  constructor(readonly root: string) {
    this.blobRoot = path.join(root, "docker", "registry", "v2", "blobs");
    this.uploadRoot = path.join(root, "berth", "uploads");
    this.tmpRoot = path.join(root, "berth", "tmp");
  }

  async init(): Promise<void> {
    await fs.mkdir(this.blobRoot, { recursive: true });
    makePrivateDir(path.dirname(this.uploadRoot)); // berth/ also holds the database: 0700
    await fs.mkdir(this.uploadRoot, { recursive: true });
    await fs.mkdir(this.tmpRoot, { recursive: true });
  }

  blobPath(digest: string): string {
    const colon = digest.indexOf(":");
    const algorithm = digest.slice(0, colon);
    const hex = digest.slice(colon + 1);
    if (!/^[a-z0-9]+$/.test(algorithm) || !/^[a-f0-9]{64,128}$/.test(hex)) {
      throw new Error(`refusing to build a path from digest ${JSON.stringify(digest)}`);
    }
    return path.join(this.blobRoot, algorithm, hex.slice(0, 2), hex, "data");
  }

  private uploadPath(id: string): string {
    if (!/^[a-zA-Z0-9-]{1,64}$/.test(id))
      throw new Error(`refusing to build a path from upload id ${JSON.stringify(id)}`);
    return path.join(this.uploadRoot, id);
  }

  async foreignRepositories(): Promise<string | null> {
    const dir = repositoriesDir(this.root);
    try {
      await fs.stat(dir);
      return dir;
    } catch {
      return null;
    }
  }

  async stat(digest: string): Promise<BlobStat | null> {
    try {
      const st = await fs.stat(this.blobPath(digest));
      return { size: st.size, modifiedAt: st.mtimeMs };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async read(digest: string, range?: { start: number; end: number }): Promise<Readable> {
    const file = this.blobPath(digest);
    const handle = await fs.open(file, "r");
    // The stream owns the handle from here on and closes it when done or destroyed.
    return createReadStream("", {
      fd: handle,
      autoClose: true,
      start: range?.start,
      end: range?.end,
      highWaterMark: READ_CHUNK,
    });
  }

  async put(digest: string, content: Buffer): Promise<void> {
    const target = this.blobPath(digest);
    const existing = await this.stat(digest);
    if (existing && existing.size === content.length) return;
    const tmp = path.join(this.tmpRoot, randomUUID());
    const handle = await fs.open(tmp, "w");
    try {
      await handle.writeFile(content);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await this.moveIntoPlace(tmp, target);
  }

  async delete(digest: string): Promise<void> {
    const file = this.blobPath(digest);
    await fs.rm(file, { force: true });
    // Remove the now-empty <hex> folder; leave the two-letter fan-out folders.
    await fs.rmdir(path.dirname(file)).catch(() => {});
  }

  async *list(): AsyncIterable<StoredBlob> {
    for (const algorithm of await readdirOrEmpty(this.blobRoot)) {
      const algDir = path.join(this.blobRoot, algorithm);
      for (const fan of await readdirOrEmpty(algDir)) {
        const fanDir = path.join(algDir, fan);
        for (const hex of await readdirOrEmpty(fanDir)) {
          try {
            const st = await fs.stat(path.join(fanDir, hex, "data"));
            yield { digest: `${algorithm}:${hex}`, size: st.size, modifiedAt: st.mtimeMs };
          } catch (err) {
            if (!isNotFound(err)) throw err;
          }
        }
      }
    }
  }

  async createUpload(id: string): Promise<void> {
    const handle = await fs.open(this.uploadPath(id), fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o644);
    await handle.close();
  }

  async uploadSize(id: string): Promise<number | null> {
    try {
      return (await fs.stat(this.uploadPath(id))).size;
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async writeUpload(
    id: string,
    offset: number,
    source: AsyncIterable<Buffer>,
    onChunk: (chunk: Buffer) => void,
  ): Promise<number> {
    const handle = await fs.open(this.uploadPath(id), "r+");
    let position = offset;
    let batch: Buffer[] = [];
    let batchBytes = 0;
    let inFlight: Promise<unknown> = Promise.resolve();
    let unflushed = 0;
    const flush = async () => {
      const chunks = batch;
      const at = position;
      position += batchBytes;
      unflushed += batchBytes;
      batch = [];
      batchBytes = 0;
      await inFlight;
      // One write in flight while the next batch is read and hashed.
      inFlight = writeAllv(handle, chunks, at);
      if (unflushed >= FLUSH_EVERY) {
        unflushed = 0;
        void inFlight.then(() => this.flushInBackground(id)).catch(() => {});
      }
    };
    try {
      for await (const chunk of source) {
        onChunk(chunk);
        batch.push(chunk);
        batchBytes += chunk.length;
        if (batchBytes >= WRITE_BATCH) await flush();
      }
      if (batchBytes > 0) await flush();
      await inFlight;
      return position - offset;
    } catch (err) {
      // Nothing is cut back here: see BlobStore.writeUpload.
      await inFlight.catch(() => {});
      throw err;
    } finally {
      await handle.close();
    }
  }

  /**
   * Starts writing an upload's dirty pages to disk on a descriptor of its own, with nobody waiting for it:
   * the fsync at commit is what durability rests on; this only leaves that fsync little to do.
   * At most one such flush per upload at a time.
   */
  private flushInBackground(id: string): void {
    if (this.flushing.has(id)) return;
    const file = this.uploadPath(id);
    const done = (async () => {
      const handle = await fs.open(file, "r");
      try {
        await handle.datasync();
      } finally {
        await handle.close();
      }
    })()
      .catch(() => {})
      .finally(() => this.flushing.delete(id));
    this.flushing.set(id, done);
  }

  async readUpload(id: string, length: number): Promise<Readable> {
    if (length === 0) {
      const { Readable } = await import("node:stream");
      return Readable.from([]);
    }
    const { Readable } = await import("node:stream");
    const file = createReadStream(this.uploadPath(id), {
      start: 0,
      end: length - 1,
      highWaterMark: READ_CHUNK,
    });
    // Read back to hash it, a whole upload goes by in 1 MB buffers: collected as they go (memory.ts).
    const memory = new StreamMemory();
    return Readable.from(
      (async function* () {
        for await (const chunk of file) {
          memory.received((chunk as Buffer).length);
          yield chunk as Buffer;
        }
      })(),
      { objectMode: false },
    );
  }

  async truncateUpload(id: string, size: number): Promise<void> {
    await fs.truncate(this.uploadPath(id), size);
  }

  async syncUpload(id: string): Promise<void> {
    const handle = await fs.open(this.uploadPath(id), "r+");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  async commitUpload(id: string, digest: string, size?: number): Promise<void> {
    const file = this.uploadPath(id);
    if (size !== undefined) {
      const stored = (await fs.stat(file)).size;
      if (stored !== size) {
        throw Object.assign(new Error(`upload ${id} holds ${stored} bytes, not the ${size} acknowledged`), {
          code: UPLOAD_SIZE_MISMATCH,
        });
      }
    }
    await this.moveIntoPlace(file, this.blobPath(digest));
  }

  async deleteUpload(id: string): Promise<void> {
    await fs.rm(this.uploadPath(id), { force: true });
  }

  async *listUploads(): AsyncIterable<StoredUpload> {
    for (const id of await readdirOrEmpty(this.uploadRoot)) {
      try {
        const st = await fs.stat(path.join(this.uploadRoot, id));
        yield { id, size: st.size, modifiedAt: st.mtimeMs };
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
  }

  async probe(): Promise<void> {
    const file = path.join(this.tmpRoot, `probe-${randomUUID()}`);
    const handle = await fs.open(file, "w");
    try {
      await handle.writeFile("ok");
      await handle.sync();
    } finally {
      await handle.close();
      await fs.rm(file, { force: true });
    }
  }

  /** Rename a fsync'd file to its content-addressed path and make the rename itself durable. */
  private async moveIntoPlace(source: string, target: string): Promise<void> {
    const dir = path.dirname(target);
    await fs.mkdir(dir, { recursive: true });
    await fs.rename(source, target);
    await fsyncDir(dir);
  }
}

async function writeAllv(handle: fs.FileHandle, chunks: Buffer[], position: number): Promise<void> {
  let pending = chunks;
  let at = position;
  while (pending.length > 0) {
    const { bytesWritten } = await handle.writev(pending, at);
    at += bytesWritten;
    let skip = bytesWritten;
    const rest: Buffer[] = [];
    for (const chunk of pending) {
      if (skip >= chunk.length) {
        skip -= chunk.length;
        continue;
      }
      rest.push(skip > 0 ? chunk.subarray(skip) : chunk);
      skip = 0;
    }
    pending = rest;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === "ENOENT";
}
