// Metric: an idle server's memory and CPU. A fresh pair of servers (empty data directories) gets
// one GET /v2/, then rests 40 s (20 s with --quick); then RSS is read from /proc/<pid>/status and CPU time from
// /proc/<pid>/stat over 30 s (10 s with --quick). Berth: the supervisor, each worker and the whole
// tree; Distribution is one process, reported in every row. PSS (shared pages divided among the
// processes that map them: the node binary's pages count once for the tree) goes in the notes.
import { request } from "../lib/http.mjs";
import { processCpuSeconds, processTree, pssBytes, statusBytes } from "../lib/proc.mjs";
import { makeRow } from "../lib/report.mjs";
import { SERVER_KEYS } from "../lib/servers.mjs";
import { log, sleep } from "../lib/util.mjs";

export default {
  id: "idle",
  title: "Idle memory and CPU",
  async run(ctx) {
    const pair = await ctx.startPair("idle");
    const rows = { tree: {}, worker: {}, supervisor: {}, cpu: {} };
    const notes = [];
    try {
      for (const key of SERVER_KEYS) {
        if (pair[key].error) continue;
        await request(`${pair[key].baseUrl}/v2/`);
      }
      // What a fresh server does in its first half minute (the first scheduled jobs, V8 shrinking the
      // heap after start-up) is not idleness: rest 40 s first (20 s with --quick).
      await sleep(ctx.opts.mode === "quick" ? 20_000 : 40_000);
      const seconds = ctx.opts.mode === "quick" ? 10 : 30;
      const cpu0 = {};
      for (const key of SERVER_KEYS) {
        if (pair[key].error) continue;
        cpu0[key] = processTree(pair[key].pid).map((pid) => [pid, processCpuSeconds(pid)]);
      }
      await sleep(seconds * 1000);
      for (const key of SERVER_KEYS) {
        const server = pair[key];
        if (server.error) {
          for (const row of Object.values(rows)) row[key] = { error: server.error };
          continue;
        }
        const pids = processTree(server.pid);
        const rss = (pid) => statusBytes(pid, "VmRSS") / 1e6;
        const workers = pids.filter((pid) => pid !== server.pid);
        const tree = pids.reduce((sum, pid) => sum + rss(pid), 0);
        const pss = pids.reduce((sum, pid) => sum + pssBytes(pid) / 1e6, 0);
        const worker = workers.length > 0 ? Math.max(...workers.map(rss)) : rss(server.pid);
        const busiest = Math.max(
          ...cpu0[key].map(([pid, before]) => ((processCpuSeconds(pid) - before) / seconds) * 100),
        );
        rows.tree[key] = { value: tree, samples: [tree] };
        rows.worker[key] = { value: worker, samples: [worker] };
        rows.supervisor[key] = { value: rss(server.pid), samples: [rss(server.pid)] };
        rows.cpu[key] = { value: busiest, samples: [busiest] };
        notes.push(
          `${server.label}: ${pids.length} process(es), RSS ${pids.map((p) => rss(p).toFixed(0)).join(" + ")} MB, PSS of the tree ${pss.toFixed(0)} MB`,
        );
        log(
          `idle ${key}: tree ${tree.toFixed(0)} MB, worker ${worker.toFixed(0)} MB, cpu ${busiest.toFixed(2)}%`,
        );
      }
    } finally {
      await ctx.stopPair(pair);
    }
    const row = (id, label, unit, result, max) =>
      makeRow({
        id,
        label,
        unit,
        higherIsBetter: false,
        aggregate: "max",
        result,
        notes: id === "idle-tree" ? notes : [],
        target: max === undefined ? null : { kind: "berth", max },
      });
    return [
      row("idle-tree", "M1. Idle RSS, whole process tree", "MB", rows.tree),
      row("idle-worker", "M2. Idle RSS, one worker (Distribution: its process)", "MB", rows.worker, 60),
      row(
        "idle-supervisor",
        "M3. Idle RSS, supervisor (Distribution: its process)",
        "MB",
        rows.supervisor,
        45,
      ),
      row("idle-cpu", "M4. Idle CPU of the busiest process", "% of a core", rows.cpu, 0.2),
    ];
  },
};
