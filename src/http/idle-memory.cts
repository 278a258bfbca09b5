import path from "node:path";

// node:v8 and node:perf_hooks are required where used: the supervisor needs neither (about 1 MB of it).
type V8 = typeof import("node:v8");
type PerfHooks = typeof import("node:perf_hooks");

/**
 * Giving memory back once a process falls idle: after start-up and after work, in the workers (armed by
 * new connections, src/http/memory.ts) and in the supervisor (armed by its workers' messages). CommonJS,
 * as the supervisor is (src/cli/supervisor.cts).
 *
 * The release is native/memory's `release()`: V8's low-memory collection (compacts the heap, shrinks the
 * young generation back, frees the pages V8 pools for later) and glibc's malloc_trim(0) (returns the free
 * pages that Node's buffers, SQLite and the HTTP parsers left in malloc's arenas, which an idle process
 * otherwise keeps for ever). On this machine it took an idle worker from 62-68 MB to 55-58 MB. Without
 * the addon a worker runs a plain full collection instead. Nothing runs while a process stays idle: the
 * timer is armed by activity and disarmed by the release.
 */

/** How long a process rests before the release. */
export const IDLE_AFTER_MS = 5_000;
/** Busy: the event loop worked more than this share of the last interval. */
const BUSY_UTILIZATION = 0.01;

/** The addon's file, from a directory two levels below the package (dist/cli, dist/http, src/http...). */
export function memoryAddonFile(twoBelowRoot: string): string {
  return path.join(twoBelowRoot, "..", "..", "native", "memory", "build", "Release", "berth_memory.node");
}

let release: (() => void) | null | undefined;

/**
 * The native release, or null when the addon is not built (or BERTH_NATIVE_MEMORY=0). Loaded once, at
 * the first release, so that a process that never rests never maps it.
 */
export function nativeRelease(addonFile: string): (() => void) | null {
  if (release !== undefined) return release;
  release = null;
  if (process.env.BERTH_NATIVE_MEMORY === "0" || process.platform !== "linux") return release;
  try {
    const addon = require(addonFile) as { release?: unknown };
    if (typeof addon.release === "function") release = addon.release as () => void;
  } catch {
    // Not built: the caller's fallback, if any.
  }
  return release;
}

/**
 * Runs the native release (when the addon loads: true) with V8's bytecode flushing forced for its
 * collections: the bytecode of every function that is not running is dropped and compiled again from its
 * source at its next call (start-up code, the configuration, migrations: most of it never runs again).
 * About 1 MB of an idle worker's heap.
 */
export function releaseWithFlush(addonFile: string): boolean {
  const release = nativeRelease(addonFile);
  if (!release) return false;
  const v8 = require("node:v8") as V8;
  v8.setFlagsFromString("--stress-flush-code");
  try {
    release();
  } finally {
    v8.setFlagsFromString("--no-stress-flush-code");
  }
  return true;
}

/**
 * V8's budget of bytecode a function runs before the optimizing compiler (TurboFan) compiles it: 8 times
 * V8's default while a worker starts (the supervisor passes the flag, src/cli/supervisor.cts), V8's own
 * once it serves (servingBudget, at the worker's first connection). At the default, a few start-up
 * functions cross it (the path functions of module loading, the query compiler during the migrations
 * check), and compiling them pages in some 4 MB of TurboFan's machine code from the node binary, resident
 * from then on: a worker that has not served yet (an idle registry, the common case for a self-hosted
 * one) stays that much smaller. Kept high for good, the budget halved manifest GETs per second.
 */
export const STARTUP_INTERRUPT_BUDGET = 8 * 66 * 1024;
/** V8's default budget (V8 11, in Node 20). */
export const V8_INTERRUPT_BUDGET = 66 * 1024;
/** The environment variable that tells a worker the budget to set when it starts serving. */
export const SERVING_BUDGET_ENV = "BERTH_SERVING_INTERRUPT_BUDGET";

/** Sets the budget the supervisor named in SERVING_BUDGET_ENV, if any (once serving). */
export function servingBudget(): void {
  const budget = Number(process.env[SERVING_BUDGET_ENV]);
  if (Number.isInteger(budget) && budget > 0)
    (require("node:v8") as V8).setFlagsFromString(`--interrupt-budget=${budget}`);
}

export interface IdleRelease {
  /** Activity: release once the process has rested `idleAfterMs` from now. Cheap when already armed. */
  arm(): void;
  stop(): void;
}

/**
 * Calls `releaseNow` once the process has rested `idleAfterMs` after each arm(). With `watchLoop` (the
 * workers, whose work comes on connections that arm only when they open) the rest is measured on the event
 * loop: when the timer fires and the loop was busy since, it waits another interval instead. Without it
 * (the supervisor, armed by every message) each arm() starts the interval again. Armed once at the start.
 */
export function releaseWhenIdle(
  releaseNow: () => void,
  idleAfterMs = IDLE_AFTER_MS,
  watchLoop = true,
): IdleRelease {
  let timer: NodeJS.Timeout | undefined;
  const { performance } = watchLoop ? (require("node:perf_hooks") as PerfHooks) : { performance: null };
  let last = performance?.eventLoopUtilization();
  const check = () => {
    if (performance && last) {
      const now = performance.eventLoopUtilization();
      const busy = performance.eventLoopUtilization(now, last).utilization > BUSY_UTILIZATION;
      last = now;
      if (busy) {
        timer = setTimeout(check, idleAfterMs).unref();
        return;
      }
    }
    timer = undefined;
    releaseNow();
  };
  const arm = () => {
    if (timer) {
      if (!performance) timer.refresh();
      return;
    }
    last = performance?.eventLoopUtilization();
    timer = setTimeout(check, idleAfterMs).unref();
  };
  arm();
  return {
    arm,
    stop() {
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
  };
}
