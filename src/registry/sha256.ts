import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type { createSHA256 } from "hash-wasm";

/**
 * SHA-256 whose state can leave the process, for uploads on stores that cannot read an upload back (S3):
 * the state is saved with every acknowledged chunk, and the next chunk continues it on any replica.
 *
 * Two implementations, one state format:
 * - OpenSSL's SHA-256 through the optional native addon native/sha256 (about as fast as node:crypto,
 *   which uses the same code but cannot export its state);
 * - hash-wasm's, when the addon is not built (several times slower).
 *
 * The saved state is Berth's own, documented in native/sha256/sha256.c ("BSHA", version 1: bytes hashed,
 * the chaining value H0..H7 and the unfinished block), so that an upload begun on a replica with the
 * addon continues on one without it, and the other way round. States saved by earlier versions of Berth
 * (hash-wasm's save(), 116 bytes) are still loaded.
 */
export interface ResumableSha256 {
  update(chunk: Uint8Array): void;
  /** The digest of what was hashed so far, in hex; hashing may go on afterwards. */
  hex(): string;
  /** The state in Berth's format, to continue with `createResumableSha256(state)`. */
  save(): Uint8Array;
}

export type Sha256Implementation = "native" | "wasm";

interface Addon {
  init(): Buffer;
  update(ctx: Buffer, bytes: Uint8Array): void;
  digest(ctx: Buffer): Buffer;
  save(ctx: Buffer): Buffer;
  load(state: Uint8Array): Buffer;
}

const MAGIC = [0x42, 0x53, 0x48, 0x41]; // "BSHA"
const VERSION = 1;
const HEADER = 48;
/**
 * hash-wasm 4's saved state: a 4-byte prefix, then its context: message[64], length (u64 LE), hash[8] (u32 LE),
 * 32 (u32 LE), 4 bytes of padding.
 */
const WASM_STATE = 116;

let addon: Addon | null | undefined;

function loadAddon(): Addon | null {
  if (addon !== undefined) return addon;
  addon = null;
  if (process.env.BERTH_NATIVE_SHA256 === "0") return addon;
  try {
    // Two levels up from src/registry/, dist/registry/ and the bundled worker in dist/cli/ alike.
    const file = fileURLToPath(
      new URL("../../native/sha256/build/Release/berth_sha256.node", import.meta.url),
    );
    const loaded = createRequire(import.meta.url)(file) as Partial<Addon>;
    if (typeof loaded.update === "function" && typeof loaded.save === "function") addon = loaded as Addon;
  } catch {
    // Not built (no compiler), or a Node that does not export OpenSSL's SHA-256: hash-wasm instead.
  }
  return addon;
}

/** The implementation new hashes use here: "native" when the addon loads, else "wasm". */
export function sha256Implementation(): Sha256Implementation {
  return loadAddon() ? "native" : "wasm";
}

/** A SHA-256 that starts empty or continues from `state` (Berth's format, or hash-wasm's from older versions). */
export async function createResumableSha256(
  state?: Uint8Array,
  implementation: Sha256Implementation = sha256Implementation(),
): Promise<ResumableSha256> {
  const canonical = state ? toCanonical(state) : undefined;
  if (implementation === "native") {
    const native = loadAddon();
    if (!native) throw new Error("the native SHA-256 addon is not built");
    return new NativeSha256(native, canonical ? native.load(canonical) : native.init());
  }
  return WasmSha256.create(canonical);
}

class NativeSha256 implements ResumableSha256 {
  constructor(
    private readonly native: Addon,
    private readonly ctx: Buffer,
  ) {}
  update(chunk: Uint8Array): void {
    this.native.update(this.ctx, chunk);
  }
  hex(): string {
    return this.native.digest(this.ctx).toString("hex");
  }
  save(): Uint8Array {
    return this.native.save(this.ctx);
  }
}

type WasmHasher = Awaited<ReturnType<typeof createSHA256>>;

class WasmSha256 implements ResumableSha256 {
  private constructor(private readonly hasher: WasmHasher) {}

  static async create(canonical?: Uint8Array): Promise<WasmSha256> {
    // Loaded on first use: only S3 uploads on a replica without the addon need it.
    const hasher = await (await import("hash-wasm")).createSHA256();
    hasher.init();
    if (canonical) {
      // hash-wasm refuses a state without the prefix of its own build: take it from a fresh state.
      const prefix = hasher.save().subarray(0, 4);
      hasher.load(canonicalToWasm(canonical, prefix));
    }
    return new WasmSha256(hasher);
  }
  update(chunk: Uint8Array): void {
    this.hasher.update(chunk);
  }
  hex(): string {
    const state = this.hasher.save();
    const hex = this.hasher.digest("hex");
    this.hasher.load(state);
    return hex;
  }
  save(): Uint8Array {
    return wasmToCanonical(this.hasher.save());
  }
}

function isCanonical(state: Uint8Array): boolean {
  return state.length >= HEADER && MAGIC.every((b, i) => state[i] === b);
}

/** Checks a state in Berth's format, or converts one saved by hash-wasm (Berth before the addon). */
function toCanonical(state: Uint8Array): Uint8Array {
  if (isCanonical(state)) {
    if (state[4] !== VERSION) throw new Error(`SHA-256 state version ${state[4]} is not known`);
    const view = new DataView(state.buffer, state.byteOffset, state.byteLength);
    const total = view.getBigUint64(8);
    if (state.length !== HEADER + Number(total & 63n)) throw new Error("a SHA-256 state of the wrong length");
    return state;
  }
  if (state.length === WASM_STATE) return wasmToCanonical(state);
  throw new Error("not a SHA-256 state");
}

function wasmToCanonical(state: Uint8Array): Uint8Array {
  if (state.length !== WASM_STATE) throw new Error("not a hash-wasm SHA-256 state");
  const view = new DataView(state.buffer, state.byteOffset, state.byteLength);
  if (view.getUint32(108, true) !== 32) throw new Error("not a hash-wasm SHA-256 state");
  const total = view.getBigUint64(68, true);
  const pending = Number(total & 63n);
  const out = new Uint8Array(HEADER + pending);
  const o = new DataView(out.buffer);
  out.set(MAGIC, 0);
  out[4] = VERSION;
  o.setBigUint64(8, total);
  for (let i = 0; i < 8; i++) o.setUint32(16 + 4 * i, view.getUint32(76 + 4 * i, true));
  out.set(state.subarray(4, 4 + pending), HEADER);
  return out;
}

function canonicalToWasm(canonical: Uint8Array, prefix: Uint8Array): Uint8Array {
  const view = new DataView(canonical.buffer, canonical.byteOffset, canonical.byteLength);
  const total = view.getBigUint64(8);
  const out = new Uint8Array(WASM_STATE);
  const o = new DataView(out.buffer);
  out.set(prefix, 0);
  out.set(canonical.subarray(HEADER), 4);
  o.setBigUint64(68, total, true);
  for (let i = 0; i < 8; i++) o.setUint32(76 + 4 * i, view.getUint32(16 + 4 * i), true);
  o.setUint32(108, 32, true);
  return out;
}
