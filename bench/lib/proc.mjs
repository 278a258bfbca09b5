// Process-tree memory accounting from /proc (Linux only).
//
// The tree is found from the parent pid in /proc/<pid>/stat rather than /proc/<pid>/task/*/children,
// which not every kernel provides.
import { readdirSync, readFileSync } from "node:fs";
import { Worker } from "node:worker_threads";

/** Parent pid of every live process, from /proc/<pid>/stat (field 4, after the parenthesised name). */
function parentMap() {
  const parents = new Map();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      parents.set(Number(entry), Number(rest[1]));
    } catch {
      // The process exited between readdir and read.
    }
  }
  return parents;
}

/** pid and all its descendants (Berth forks worker processes; Distribution is one process). */
export function processTree(rootPid) {
  const children = new Map();
  for (const [pid, ppid] of parentMap()) {
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(pid);
  }
  const out = [];
  const stack = [rootPid];
  while (stack.length > 0) {
    const pid = stack.pop();
    out.push(pid);
    for (const child of children.get(pid) ?? []) stack.push(child);
  }
  return out;
}

/** A field of /proc/<pid>/status in bytes (VmRSS, VmHWM, ...); 0 when the process is gone. */
export function statusBytes(pid, field) {
  try {
    const text = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = text.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

const CLOCK_TICKS = 100; // USER_HZ; `getconf CLK_TCK` is 100 on Linux.

/**
 * CPU seconds (user + system) used so far by the process tree rooted at pid: utime and stime of
 * each live process, plus cutime and cstime (children it has already reaped).
 */
export function treeCpuSeconds(rootPid) {
  let ticks = 0;
  for (const pid of processTree(rootPid)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      // Gone.
    }
  }
  return ticks / CLOCK_TICKS;
}

/** Sum of VmRSS over the process tree rooted at pid, in bytes. */
export function treeRss(rootPid) {
  let total = 0;
  for (const pid of processTree(rootPid)) total += statusBytes(pid, "VmRSS");
  return total;
}

// The sampler runs in a worker thread so that a busy bench event loop (pumping 1 GiB into a
// socket) cannot delay samples. It is CommonJS source because eval'd workers are not modules.
const SAMPLER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { readdirSync, readFileSync } = require("node:fs");
function tree(root) {
  const children = new Map();
  for (const e of readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(e)) continue;
    try {
      const st = readFileSync("/proc/" + e + "/stat", "utf8");
      const ppid = Number(st.slice(st.lastIndexOf(")") + 2).split(" ")[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(e));
    } catch {}
  }
  const out = [];
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop();
    out.push(pid);
    for (const c of children.get(pid) || []) stack.push(c);
  }
  return out;
}
function rss(pid) {
  try {
    const m = readFileSync("/proc/" + pid + "/status", "utf8").match(/^VmRSS:[ \\t]+([0-9]+) kB/m);
    return m ? Number(m[1]) * 1024 : 0;
  } catch { return 0; }
}
let peak = 0, samples = 0, maxProcs = 0, first = 0, peakOne = 0;
function sample() {
  const pids = tree(workerData.pid);
  let total = 0;
  for (const p of pids) {
    const r = rss(p);
    total += r;
    if (r > peakOne) peakOne = r;
  }
  if (samples === 0) first = total;
  if (total > peak) peak = total;
  if (pids.length > maxProcs) maxProcs = pids.length;
  samples++;
}
sample();
const timer = setInterval(sample, workerData.intervalMs);
parentPort.on("message", () => {
  clearInterval(timer);
  sample();
  parentPort.postMessage({ peak, first, samples, maxProcs, peakOne });
});
`;

/**
 * Starts sampling the summed VmRSS of pid's process tree every intervalMs.
 * Returns { stop(): Promise<{ peak, first, samples, maxProcs, peakOne }> } (bytes; `first` is the
 * sample taken when sampling started; `peakOne` the highest RSS of any single process of the tree).
 */
export function startRssSampler(pid, intervalMs = 50) {
  const worker = new Worker(SAMPLER_SOURCE, { eval: true, workerData: { pid, intervalMs } });
  const ready = new Promise((resolve) => worker.once("online", resolve));
  return {
    ready,
    async stop() {
      await ready;
      const result = new Promise((resolve, reject) => {
        worker.once("message", resolve);
        worker.once("error", reject);
      });
      worker.postMessage("stop");
      const out = await result;
      await worker.terminate();
      return out;
    },
  };
}

/** Proportional set size (shared pages divided among the processes that map them), in bytes. */
export function pssBytes(pid) {
  try {
    const m = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8").match(/^Pss:\s+(\d+) kB/m);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** CPU seconds (user + system) of one process so far. */
export function processCpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}
