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
    // the worker rests comes 5 s after start-up, or 5 s later again (and again) while it is busy
    // (src/http/memory.ts).
    await sleep(22_000);
    // It gave memory back once it rested (src/http/idle-memory.cts): the release's addon is loaded then.
    expect(readFileSync(`/proc/${pid}/maps`, "utf8")).toContain("berth_memory.node");
    // prom-client's event-loop sampler, started at start-up, woke the main thread once a second: a timer
    // like it wakes the worker in every 5 s window. On a loaded machine (the whole suite runs two files at
    // once) start-up's jobs can run late, so a few windows are looked at: one quiet window is enough.
    const windows: number[] = [];
    for (let i = 0; i < 6; i++) {
      const before = wakeups(pid);
      await sleep(5_000);
      windows.push(wakeups(pid) - before);
      if (windows.at(-1)! <= 1) break;
    }
    expect(Math.min(...windows), `wake-ups per 5 s window: ${windows.join(", ")}`).toBeLessThanOrEqual(1);

    const first = await (await fetch(`${berth.url}/metrics`)).text();
    // Nothing sampled yet: zeros, not the empty sampler's minimum of 9.2e9 s.
    expect(metric(first, "nodejs_eventloop_lag_min_seconds")).toBe(0);
    expect(metric(first, "nodejs_eventloop_lag_max_seconds")).toBe(0);
    await sleep(2_500);
    const second = await (await fetch(`${berth.url}/metrics`)).text();
    const min = metric(second, "nodejs_eventloop_lag_min_seconds") as number;
    expect(min).toBeGreaterThan(0);
    expect(min).toBeLessThan(5);
  }, 120_000);

  it("is forked with small-memory settings, unless the user chose their own", async () => {
    const settings = async (env: Record<string, string>) => {
      const berth = await startBerth({ workers: 2, env });
      started.push(berth);
      const pid = berth.process.pid as number;
      const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/);
      expect(children).toHaveLength(2);
      const child = children[0] as string;
      const args = readFileSync(`/proc/${child}/cmdline`, "utf8").split("\0");
      const arena = /^MALLOC_ARENA_MAX=(.*)$/m.exec(
        readFileSync(`/proc/${child}/environ`, "utf8").replaceAll("\0", "\n"),
      );
      const budget = /^BERTH_SERVING_INTERRUPT_BUDGET=(.*)$/m.exec(
        readFileSync(`/proc/${child}/environ`, "utf8").replaceAll("\0", "\n"),
      );
      return { args, arena: arena?.[1], budget: budget?.[1] };
    };
    const ours = await settings({});
    expect(ours.args).toEqual(expect.arrayContaining(["--max-semi-space-size=4", "--v8-pool-size=1"]));
    expect(ours.arena).toBe("2");
    // A high optimization budget while starting, V8's default (told in the environment) once serving.
    expect(ours.args).toContain(`--interrupt-budget=${8 * 66 * 1024}`);
    expect(ours.budget).toBe(String(66 * 1024));
    const theirs = await settings({ NODE_OPTIONS: "--v8-pool-size=3", MALLOC_ARENA_MAX: "4" });
    expect(theirs.args).toContain("--max-semi-space-size=4");
    expect(theirs.args).not.toContain("--v8-pool-size=1");
    expect(theirs.arena).toBe("4");
  });
});
