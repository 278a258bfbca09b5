import { spawnSync } from "node:child_process";
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
  untrackDir(dir);
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

/**
 * Daemons started by this process. Normally each is stopped by its suite's afterAll; if the test
 * process exits without that (a hook timed out, the run was interrupted), the exit handler kills
 * their process groups so that no containerd or dockerd outlives the run.
 */
const tracked = new Map<number, { what: string; cmdlineHas?: string }>();
const trackedDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const [target, entry] of tracked) {
      if (entry.cmdlineHas && !cmdline(Math.abs(target)).includes(entry.cmdlineHas)) continue;
      try {
        process.kill(target, "SIGKILL");
      } catch {}
    }
    for (const dir of trackedDirs) {
      // dockerd bind-mounts its data root onto itself; a killed one leaves that mount behind.
      for (const point of mountsUnder(dir))
        spawnSync("umount", ["-l", point], { stdio: "ignore", timeout: 10_000 });
      if (mountsUnder(dir).length > 0) continue;
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {}
    }
  });
}

/** A temp directory to remove at exit if its owner's cleanup never ran. */
export function trackDir(dir: string): void {
  trackedDirs.add(dir);
  installExitHook();
}

export function untrackDir(dir: string): void {
  trackedDirs.delete(dir);
}

/**
 * Remembers a daemon: its process group (group = true; spawned detached) or a single pid. With
 * cmdlineHas, the pid is only killed if its command line still contains that text (the pid of a
 * process we did not spawn could have been reused).
 */
export function track(pid: number | undefined, what: string, group = true, cmdlineHas?: string): void {
  if (!pid) return;
  tracked.set(group ? -pid : pid, { what, cmdlineHas });
  installExitHook();
}

export function untrack(pid: number | undefined, group = true): void {
  if (pid) tracked.delete(group ? -pid : pid);
}
