import { readFileSync, rmSync } from "node:fs";
import { run } from "./exec.js";

/** Mount points at or below a directory, deepest first (from /proc/self/mountinfo). */
export function mountsUnder(dir: string): string[] {
  let text: string;
  try {
    text = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return [];
  }
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const points = text
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((p): p is string => !!p)
    .map((p) => p.replace(/\\040/g, " "))
    .filter((p) => p === dir || p.startsWith(prefix));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/**
 * Removes a temp directory a daemon or client used, unmounting anything left mounted below it
 * first (overlay snapshots, network namespaces) so that nothing leaks past the test.
 */
export async function removeTree(dir: string): Promise<void> {
  for (const point of mountsUnder(dir)) {
    await run("umount", ["-l", point], { allowFailure: true, timeoutMs: 10_000 });
  }
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** True while a pid is alive (and not a zombie we could still reap). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z";
  } catch {
    return false;
  }
}

/** The command line of a live process, or "" when it is gone. */
export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return "";
  }
}
