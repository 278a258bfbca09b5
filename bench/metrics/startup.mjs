// Metric: time from starting the server to its first answer to GET /v2/ (polled every 5 ms).
//  - with an empty data directory;
//  - after a kill -9 of the whole process tree during 20 parallel monolithic pushes (the restart
//    finds partial uploads, a WAL to recover, leases of dead processes).
// Each repetition starts a new server; the figure is the median.
import path from "node:path";
import { blobDigest } from "../lib/blobdata.mjs";
import { processTree } from "../lib/proc.mjs";
import { pushBlobMonolithic } from "../lib/registry.mjs";
import { makeRow } from "../lib/report.mjs";
import { SERVER_KEYS, startServer, stopServer } from "../lib/servers.mjs";
import { errorMessage, log, MiB, sleep } from "../lib/util.mjs";

const POLL_MS = 5;
const PARALLEL_PUSHES = 20;

function killTree(server) {
  for (const pid of processTree(server.pid)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Gone.
    }
  }
  return Promise.race([server.exitedPromise, sleep(5000)]);
}

async function measure(ctx, label, fn) {
  const result = {};
  for (const key of SERVER_KEYS) result[key] = { samples: [], error: null };
  for (let rep = 0; rep < ctx.opts.reps; rep++) {
    const order = rep % 2 === 0 ? SERVER_KEYS : [...SERVER_KEYS].reverse();
    for (const key of order) {
      if (result[key].error) continue;
      try {
        const ms = await fn(key, rep);
        result[key].samples.push(ms);
        log(`${label} ${key} rep ${rep + 1}/${ctx.opts.reps}: ${ms.toFixed(0)} ms`);
      } catch (err) {
        result[key].error = errorMessage(err);
        log(`${label} ${key} FAILED: ${result[key].error}`);
      }
    }
  }
  for (const key of SERVER_KEYS) {
    const sorted = [...result[key].samples].sort((a, b) => a - b);
    result[key].value = sorted.length > 0 ? sorted[Math.floor(sorted.length / 2)] : null;
  }
  return result;
}

export default {
  id: "startup",
  title: "Start-up: time to the first /v2/ answer",
  async run(ctx) {
    const base = path.join(ctx.opts.workDir, "startup");
    const start = (key, dataDir) =>
      startServer({
        key,
        impl: ctx.implFor(key),
        dataDir,
        workDir: base,
        extraArgs: key === "berth" ? ctx.opts.berthArgs : [],
        pollMs: POLL_MS,
      });

    const empty = await measure(ctx, "startup-empty", async (key, rep) => {
      const server = await start(key, path.join(base, `${key}-empty-${rep}`));
      const ms = server.readyMs;
      await stopServer(server);
      return ms;
    });

    const blobBytes = Math.min(64 * MiB, ctx.opts.blobBytes);
    const crashed = await measure(ctx, "startup-after-crash", async (key, rep) => {
      const dataDir = path.join(base, `${key}-crash-${rep}`);
      const first = await start(key, dataDir);
      const pushes = [];
      for (let i = 0; i < PARALLEL_PUSHES; i++) {
        const seed = `crash-${rep}-${i}`;
        const blob = { seed, size: blobBytes, digest: blobDigest(seed, blobBytes) };
        pushes.push(pushBlobMonolithic(first, `bench/crash-${i}`, blob).catch(() => {}));
      }
      await sleep(1500);
      await killTree(first);
      await Promise.allSettled(pushes);
      const second = await start(key, dataDir);
      const ms = second.readyMs;
      await stopServer(second);
      return ms;
    });

    return [
      makeRow({
        id: "startup",
        label: "S1. Start-up to first /v2/ answer, empty data directory",
        unit: "ms",
        higherIsBetter: false,
        result: empty,
        target: { kind: "berth", max: 1000 },
      }),
      makeRow({
        id: "startup-crash",
        label: `S2. Start-up after kill -9 during ${PARALLEL_PUSHES} parallel ${blobBytes / MiB} MiB pushes`,
        unit: "ms",
        higherIsBetter: false,
        result: crashed,
        target: { kind: "berth", max: 1500 },
      }),
    ];
  },
};
