import { execFileSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { memoryAddonFile, nativeRelease } from "../../src/http/idle-memory.cjs";
import { ROOT } from "../helpers/server.js";

const addonFile = memoryAddonFile(path.join(ROOT, "src", "http"));

// A child process fragments malloc's heap the way a worker's buffers do (many small allocations, every
// 16th kept), frees the rest with a full collection, and reports its RSS before and after the release.
const CHILD = `
const addon = require(process.argv[1]);
const rss = () => {
  const line = require("node:fs").readFileSync("/proc/self/status", "utf8").split("\\n").find((l) => l.startsWith("VmRSS:"));
  return Number(line.split(/ +/)[1]) * 1024;
};
let kept = [];
{
  const all = [];
  for (let i = 0; i < 6000; i++) all.push(Buffer.alloc(16 * 1024, 1));
  kept = all.filter((_, i) => i % 16 === 0);
}
globalThis.gc();
// V8 frees the buffers' memory (to malloc) from the event loop, after the collection.
setTimeout(() => {
  globalThis.gc();
  setTimeout(() => {
    const before = rss();
    addon.release();
    const after = rss();
    process.stdout.write(JSON.stringify({ before, after, kept: kept.length }));
  }, 100);
}, 100);
`;

describe("the native memory release (native/memory)", () => {
  it("is built, and gives the pages freed buffers left in malloc's heap back to the system", () => {
    expect(nativeRelease(addonFile), `${addonFile} loads`).toBeTypeOf("function");
    const out = execFileSync(process.execPath, ["--expose-gc", "-e", CHILD, addonFile], { encoding: "utf8" });
    const { before, after } = JSON.parse(out) as { before: number; after: number };
    // About 90 MB freed to malloc, in 16 KB pieces between live ones: glibc keeps them all until trimmed.
    expect(before - after).toBeGreaterThan(40 * 1024 * 1024);
  });
});
