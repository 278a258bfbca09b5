// Deterministic, incompressible blob content generated in chunks, never held whole in memory.
//
// A blob of `size` bytes with a given `seed` is a 64 MiB pseudo-random block (AES-128-CTR over
// zeros, fixed key) repeated, with the first 64 bytes replaced by a header naming the seed and size.
// Different seeds therefore give different digests while sharing one 64 MiB buffer, so generating
// the data costs the bench process almost nothing during a timed push.
import { createCipheriv, createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";

const BLOCK = 64 * 1024 * 1024;
const HEADER = 64;
const DEFAULT_CHUNK = 4 * 1024 * 1024;
const DATA_VERSION = "blobdata-v1";

let block = null;

function randomBlock() {
  if (block === null) {
    const cipher = createCipheriv("aes-128-ctr", Buffer.from("berth-bench-key!"), Buffer.alloc(16));
    block = cipher.update(Buffer.alloc(BLOCK));
  }
  return block;
}

/** Deterministic pseudo-random bytes of any (small) length for a given seed string. */
export function pseudoRandomBytes(seed, length) {
  const key = createHash("sha256").update(`key:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv("aes-128-ctr", key, Buffer.alloc(16));
  return cipher.update(Buffer.alloc(length));
}

function header(seed, size) {
  const h = Buffer.alloc(HEADER, 0x20);
  h.write(`berth-bench ${seed} ${size}`.slice(0, HEADER), "utf8");
  return h;
}

/**
 * Yields the bytes [start, end) of blob (seed, size) as Buffers of at most chunkSize bytes.
 * The Buffers are views of a shared block: consume (write or hash) them before the next one.
 */
export function* blobChunks(seed, size, { start = 0, end = size, chunkSize = DEFAULT_CHUNK } = {}) {
  const data = randomBlock();
  const head = header(seed, size);
  let offset = start;
  while (offset < end) {
    const inBlock = offset % BLOCK;
    const length = Math.min(chunkSize, end - offset, BLOCK - inBlock);
    if (offset < HEADER) {
      const n = Math.min(length, HEADER - offset);
      const piece = Buffer.concat([
        head.subarray(offset, offset + n),
        data.subarray(inBlock + n, inBlock + length),
      ]);
      yield piece;
    } else {
      yield data.subarray(inBlock, inBlock + length);
    }
    offset += length;
  }
}

let digestCache = null;
let digestCacheFile = null;

/** Where blob digests are remembered between runs (hashing 1 GiB takes ~0.6 s). */
export function setDigestCacheFile(file) {
  digestCacheFile = file;
  digestCache = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {};
}

/** "sha256:<hex>" of blob (seed, size). */
export function blobDigest(seed, size) {
  const key = `${DATA_VERSION}:${seed}:${size}`;
  if (digestCache?.[key]) return digestCache[key];
  const hash = createHash("sha256");
  for (const chunk of blobChunks(seed, size)) hash.update(chunk);
  const digest = `sha256:${hash.digest("hex")}`;
  if (digestCache) {
    digestCache[key] = digest;
    if (digestCacheFile) {
      writeFileSync(digestCacheFile, `${JSON.stringify(digestCache, null, 2)}\n`);
    }
  }
  return digest;
}

export function sha256Digest(buffer) {
  return `sha256:${createHash("sha256").update(buffer).digest("hex")}`;
}
