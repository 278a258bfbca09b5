import v8 from "node:v8";
import vm from "node:vm";

/**
 * Garbage collections that V8 would not run soon enough on its own while a large stream passes through
 * a process (the idle-time one is in src/http/memory.ts).
 *
 * Node copies each piece of a request body into a buffer of its own (up to 64 KB, allocated with
 * malloc), and frees it only when the garbage collector finds the JavaScript object that holds it dead.
 * Streaming a blob allocates almost nothing else on the JavaScript heap, so collections are rare and
 * freed buffers pile up: a 1 GiB push held 20 to 40 MB of them at a time, and left the allocator's heap
 * that much larger afterwards. Reading an upload back to hash it (1 MB buffers from a file stream) did the
 * same: 122-125 MB in a worker during a chunked push whose PATCHes land in turn in two workers. A
 * young-generation collection every few MB of stream (well under a millisecond: the pieces are dead by
 * then) frees them as fast as they come.
 */

/** Bytes of stream between two collections. */
export const STREAM_COLLECT_EVERY = 8 * 1024 * 1024;

/** V8's gc(): a full collection without options (in Node 20, `{ type: "major" }` runs a young one). */
export type Collect = (options?: { type: "minor"; execution?: "sync" | "async" }) => void;
let collect: Collect | null | undefined;

/**
 * V8's gc() without exposing it to every module: the flag makes V8 give the function to contexts
 * created afterwards, so a throw-away context hands it over. Once per process, at first use.
 */
export function garbageCollector(): Collect | null {
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

/** Counts stream bytes and runs a young-generation collection every STREAM_COLLECT_EVERY of them. */
export class StreamMemory {
  private pending = 0;

  received(bytes: number): void {
    this.pending += bytes;
    if (this.pending < STREAM_COLLECT_EVERY) return;
    this.pending = 0;
    garbageCollector()?.({ type: "minor", execution: "sync" });
  }
}
