import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { type Berth, startBerth } from "../helpers/server.js";

const started: Berth[] = [];
afterEach(async () => {
  for (const b of started.splice(0)) await b.cleanup().catch(() => {});
});

/** How many times a thread went to sleep and was woken (timers, I/O, signals). */
function wakeups(pid: number, thread = pid): number {
  const status = readFileSync(`/proc/${pid}/task/${thread}/status`, "utf8");
  return Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function metric(text: string, name: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

describe("an idle worker", () => {
  it("wakes for nothing once it rests, and samples event-loop delay only from the first scrape", async () => {
    const berth = await startBerth({ workers: 1 });
    started.push(berth);
    const pid = berth.process.pid as number;
    expect((await fetch(`${berth.url}/v2/`)).status).toBe(200);
    // The first background jobs run within 7.5 s of start-up (src/registry/jobs.ts); the collection once
    // the worker rests comes 10 s after start-up, or 10 s later again if it was busy (src/http/memory.ts).
    await sleep(22_000);
    const before = wakeups(pid);
    await sleep(5_000);
    // prom-client's event-loop sampler, started at start-up, woke the main thread once a second.
    expect(wakeups(pid) - before).toBeLessThanOrEqual(1);

    const first = await (await fetch(`${berth.url}/metrics`)).text();
    // Nothing sampled yet: zeros, not the empty sampler's minimum of 9.2e9 s.
    expect(metric(first, "nodejs_eventloop_lag_min_seconds")).toBe(0);
    expect(metric(first, "nodejs_eventloop_lag_max_seconds")).toBe(0);
    await sleep(2_500);
    const second = await (await fetch(`${berth.url}/metrics`)).text();
    const min = metric(second, "nodejs_eventloop_lag_min_seconds") as number;
    expect(min).toBeGreaterThan(0);
    expect(min).toBeLessThan(5);
  }, 90_000);
});
