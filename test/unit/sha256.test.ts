import { createHash, randomBytes } from "node:crypto";
import { createSHA256 } from "hash-wasm";
import { describe, expect, it } from "vitest";
import {
  createResumableSha256,
  type Sha256Implementation,
  sha256Implementation,
} from "../../src/registry/sha256.js";

// The S3 store saves an upload's SHA-256 state after every chunk and the next chunk may continue it on
// another replica, with or without the native addon: every save/load must round-trip exactly.

const SIZES = [0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 1000, 4096, 65_535, 65_536, 65_537, 1_000_003];
const implementations: Sha256Implementation[] = ["native", "wasm"];

/** Chunks of the given sizes, random bytes. */
function chunks(sizes: number[]): Buffer[] {
  return sizes.map((n) => randomBytes(n));
}

function expected(parts: Buffer[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

describe("resumable SHA-256", () => {
  it("loads the native addon here (npm run build compiles it)", () => {
    // Without the addon the native half of these tests would not run.
    expect(sha256Implementation()).toBe("native");
  });

  // Every pair: the first implementation hashes and saves, the second loads and goes on, alternating.
  for (const first of implementations) {
    for (const second of implementations) {
      it(`${first} then ${second}: save and restore between every chunk matches node:crypto`, async () => {
        for (const size of SIZES) {
          // Each size as one chunk, and as N chunks of that size with a save/restore between each.
          for (const parts of [chunks([size]), chunks([size, size, size, 1, size])]) {
            let hash = await createResumableSha256(undefined, first);
            let turn = 0;
            for (const part of parts) {
              hash.update(part);
              const state = hash.save();
              turn++;
              hash = await createResumableSha256(state, turn % 2 === 0 ? first : second);
            }
            expect(hash.hex(), `chunks of ${size}`).toBe(expected(parts));
          }
        }
      });
    }
  }

  it("restores at random cut points in random-sized chunks", async () => {
    const sizes = Array.from({ length: 200 }, () => Math.floor(Math.random() * 300));
    const parts = chunks(sizes);
    let hash = await createResumableSha256(undefined, "native");
    for (const [i, part] of parts.entries()) {
      hash.update(part);
      hash = await createResumableSha256(hash.save(), i % 3 === 0 ? "wasm" : "native");
    }
    expect(hash.hex()).toBe(expected(parts));
  });

  it("hex() does not end the hash", async () => {
    for (const impl of implementations) {
      const hash = await createResumableSha256(undefined, impl);
      const a = randomBytes(100);
      const b = randomBytes(70);
      hash.update(a);
      expect(hash.hex()).toBe(expected([a]));
      hash.update(b);
      expect(hash.hex()).toBe(expected([a, b]));
    }
  });

  it("saves the same state from both implementations", async () => {
    const data = randomBytes(1000);
    const states: string[] = [];
    for (const impl of implementations) {
      const hash = await createResumableSha256(undefined, impl);
      hash.update(data);
      states.push(Buffer.from(hash.save()).toString("hex"));
    }
    expect(states[0]).toBe(states[1]);
    // "BSHA", version 1, 1000 bytes, 8 words, 1000 % 64 = 40 bytes of unfinished block.
    const state = Buffer.from(states[0]!, "hex");
    expect(state.subarray(0, 5).toString("latin1")).toBe("BSHA\x01");
    expect(state.readBigUInt64BE(8)).toBe(1000n);
    expect(state.length).toBe(48 + 40);
  });

  it("continues a state saved by hash-wasm itself (uploads begun before the addon)", async () => {
    for (const size of [0, 63, 64, 65, 5000]) {
      const a = randomBytes(size);
      const b = randomBytes(77);
      const legacy = await createSHA256();
      legacy.init();
      legacy.update(a);
      for (const impl of implementations) {
        const hash = await createResumableSha256(legacy.save(), impl);
        hash.update(b);
        expect(hash.hex()).toBe(expected([a, b]));
      }
    }
  });

  it("refuses states that are not one", async () => {
    for (const impl of implementations) {
      await expect(createResumableSha256(Buffer.from("nonsense"), impl)).rejects.toThrow();
      const hash = await createResumableSha256(undefined, impl);
      hash.update(randomBytes(10));
      const state = Buffer.from(hash.save());
      await expect(createResumableSha256(state.subarray(0, state.length - 1), impl)).rejects.toThrow();
      state[4] = 2;
      await expect(createResumableSha256(state, impl)).rejects.toThrow(/version/);
    }
  });
});
