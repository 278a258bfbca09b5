import type { Server } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { garbageCollector } from "../storage/memory.js";
import {
  IDLE_AFTER_MS,
  memoryAddonFile,
  releaseWhenIdle,
  releaseWithFlush,
  servingBudget,
} from "./idle-memory.cjs";

export { IDLE_AFTER_MS };

/**
 * A worker gives memory back once it falls idle, after start-up and after work that came on a new
 * connection of `server` (src/http/idle-memory.cts; the collections during large streams are in
 * src/storage/memory.ts). V8 grows its young generation under load and gives it back only at a
 * memory-reducing collection, which an idle process never reaches on its own; buffers that lived long
 * enough to be promoted wait for a full one; malloc keeps what they freed. At the first connection the
 * optimizing compiler's budget goes back to V8's default (STARTUP_INTERRUPT_BUDGET in
 * src/http/idle-memory.cts). Returns a function that stops it.
 */
export function collectWhenIdle(server: Server, idleAfterMs = IDLE_AFTER_MS): () => void {
  // This module's directory is two levels below the package: dist/http, src/http, or the bundle's dist/cli.
  const addon = memoryAddonFile(path.dirname(fileURLToPath(import.meta.url)));
  const idle = releaseWhenIdle(() => releaseWithFlush(addon) || garbageCollector()?.(), idleAfterMs);
  server.on("connection", idle.arm);
  server.once("connection", servingBudget);
  return () => {
    server.off("connection", servingBudget);
    server.off("connection", idle.arm);
    idle.stop();
  };
}
