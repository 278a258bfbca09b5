import { constants, PerformanceObserver } from "node:perf_hooks";
import { describe, expect, it } from "vitest";
import { BODY_COLLECT_EVERY, BodyMemory } from "../../src/http/memory.js";

/** Garbage collections of the given kind seen while `during` runs and a little after. */
async function collections(kind: number, during: () => Promise<void> | void, settleMs = 50): Promise<number> {
  let seen = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if ((entry.detail as { kind?: number } | undefined)?.kind === kind) seen++;
    }
  });
  observer.observe({ entryTypes: ["gc"] });
  try {
    await during();
    await new Promise((r) => setTimeout(r, settleMs));
  } finally {
    observer.disconnect();
  }
  return seen;
}

describe("worker memory", () => {
  it("runs a young-generation collection for every BODY_COLLECT_EVERY bytes of body", async () => {
    const memory = new BodyMemory();
    const minor = await collections(constants.NODE_PERFORMANCE_GC_MINOR, () => {
      for (let sent = 0; sent < 3 * BODY_COLLECT_EVERY; sent += 64 * 1024) memory.received(64 * 1024);
    });
    expect(minor).toBeGreaterThanOrEqual(3);
  });
});
