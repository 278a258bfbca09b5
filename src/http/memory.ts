import type { Server } from "node:net";
import { performance } from "node:perf_hooks";
import { garbageCollector } from "../storage/memory.js";

/**
 * A full garbage collection once a worker falls idle, after start-up and after work (the collections
 * during large streams are in src/storage/memory.ts). V8 grows its young generation under load (to 8 MB
 * with the workers' 4 MB semi-spaces) and gives it back only at a full collection run at low allocation, which
 * an idle process never reaches; buffers that lived long enough to be promoted wait for one too. One full
 * collection once the worker has rested IDLE_AFTER_MS (about 10 ms of CPU for a worker's heap) gave an idle
 * worker back 4 to 8 MB. Nothing runs while the worker stays idle: the timer is armed by a new connection
 * (and at start-up) and disarmed by the collection.
 */

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
    garbageCollector()?.();
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
