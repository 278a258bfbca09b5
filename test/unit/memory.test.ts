import net from "node:net";
import { constants, PerformanceObserver } from "node:perf_hooks";
import { afterEach, describe, expect, it } from "vitest";
import { collectWhenIdle } from "../../src/http/memory.js";
import { STREAM_COLLECT_EVERY, StreamMemory } from "../../src/storage/memory.js";

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

const stops: (() => void)[] = [];
const servers: net.Server[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) stop();
  for (const server of servers.splice(0)) await new Promise((r) => server.close(r));
});

describe("worker memory", () => {
  it("runs a young-generation collection for every STREAM_COLLECT_EVERY bytes of a stream", async () => {
    const memory = new StreamMemory();
    const minor = await collections(constants.NODE_PERFORMANCE_GC_MINOR, () => {
      for (let sent = 0; sent < 3 * STREAM_COLLECT_EVERY; sent += 64 * 1024) memory.received(64 * 1024);
    });
    expect(minor).toBeGreaterThanOrEqual(3);
  });

  it("runs one full collection once the process rests, and again after a new connection", async () => {
    const server = net.createServer((socket) => socket.end());
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const major = constants.NODE_PERFORMANCE_GC_MAJOR;
    const atStart = await collections(
      major,
      () => {
        stops.push(collectWhenIdle(server, 100));
      },
      1500,
    );
    expect(atStart).toBeGreaterThanOrEqual(1);
    const port = (server.address() as net.AddressInfo).port;
    const afterConnection = await collections(
      major,
      async () => {
        await new Promise<void>((resolve, reject) => {
          const socket = net.connect(port, "127.0.0.1", () => socket.end());
          socket.on("close", () => resolve());
          socket.on("error", reject);
        });
      },
      1500,
    );
    expect(afterConnection).toBeGreaterThanOrEqual(1);
  });
});
