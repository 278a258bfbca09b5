import type { Server } from "node:net";
import { performance } from "node:perf_hooks";
import v8 from "node:v8";
import vm from "node:vm";

/**
 * A worker's memory between and during requests: garbage collections that V8 would not run soon enough
 * on its own, each at a moment when it costs little.
 *
 * During a large body: Node copies each piece of a request body into a buffer of its own (up to 64 KB, allocated with
 * malloc), and frees it only when the garbage collector finds the JavaScript object that holds it dead.
 * Streaming a blob allocates almost nothing else on the JavaScript heap, so collections are rare and
 * freed buffers pile up: a 1 GiB push held 20 to 40 MB of them at a time, and left the allocator's heap
 * that much larger afterwards. A young-generation collection every few MB of body (well under a
 * millisecond: the pieces are dead by then) frees them as fast as they come.
 */

/**
 * After work, when the worker falls idle: V8 grows its young generation under load (to 8 MB with the
 * workers' 4 MB semi-spaces) and gives it back only at a full collection run at low allocation, which
 * an idle process never reaches; buffers that lived long enough to be promoted wait for one too. One full
 * collection once the worker has rested IDLE_AFTER_MS (about 10 ms of CPU for a worker's heap) gave an idle
 * worker back 4 to 8 MB. Nothing runs while the worker stays idle: the timer is armed by a new connection
 * (and at start-up) and disarmed by the collection.
 */

/** Bytes of body between two collections. */
export const BODY_COLLECT_EVERY = 8 * 1024 * 1024;

/** V8's gc(): a full collection without options (in Node 20, `{ type: "major" }` runs a young one). */
type Collect = (options?: { type: "minor"; execution?: "sync" | "async" }) => void;
let collect: Collect | null | undefined;

/**
 * V8's gc() without exposing it to every module: the flag makes V8 give the function to contexts
 * created afterwards, so a throw-away context hands it over. Once per process, at the first large body.
 */
function collector(): Collect | null {
  if (collect !== undefined) return collect;
  collect = null;
  try {
    const global = (globalThis as { gc?: Collect }).gc;
    if (typeof global === "function") {
      collect = global;
    } else {
      v8.setFlagsFromString("--expose-gc");
      const fn = vm.runInNewContext("gc") as unknown;
      if (typeof fn === "function") collect = fn as Collect;
    }
  } catch {
    // Not available: the garbage collector runs on its own schedule.
  }
  return collect;
}

/** Counts body bytes and runs a young-generation collection every BODY_COLLECT_EVERY of them. */
export class BodyMemory {
  private pending = 0;

  received(bytes: number): void {
    this.pending += bytes;
    if (this.pending < BODY_COLLECT_EVERY) return;
    this.pending = 0;
    collector()?.({ type: "minor", execution: "sync" });
  }
}

/** How long a worker rests before the collection. */
export const IDLE_AFTER_MS = 5_000;
/** Busy: the event loop worked more than this share of the last interval. */
const BUSY_UTILIZATION = 0.01;

/**
 * Runs a full collection once the process has rested IDLE_AFTER_MS after start-up or after work that came
 * on a new connection of `server`. Returns a function that stops it.
 */
export function collectWhenIdle(server: Server, idleAfterMs = IDLE_AFTER_MS): () => void {
  let timer: NodeJS.Timeout | undefined;
  let last = performance.eventLoopUtilization();
  const check = () => {
    const now = performance.eventLoopUtilization();
    const busy = performance.eventLoopUtilization(now, last).utilization > BUSY_UTILIZATION;
    last = now;
    if (busy) {
      timer = setTimeout(check, idleAfterMs).unref();
      return;
    }
    timer = undefined;
    collector()?.();
  };
  const arm = () => {
    if (timer) return;
    last = performance.eventLoopUtilization();
    timer = setTimeout(check, idleAfterMs).unref();
  };
  server.on("connection", arm);
  arm();
  return () => {
    server.off("connection", arm);
    if (timer) clearTimeout(timer);
    timer = undefined;
  };
}
