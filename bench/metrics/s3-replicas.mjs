// S3 rows (issue 11): manifest GET by tag with one and with two Berth replicas, each
// `berth serve --workers 1`, on one PostgreSQL database and one bucket, beside one and two
// Distribution processes on a bucket of their own. Load: ab with 64 keep-alive connections in all;
// with two replicas, two ab processes run at once, 32 connections each, one per replica, and their
// requests per second are summed (no balancer in front: nothing else takes a share of the CPU).
import { runAb } from "../lib/ab.mjs";
import { OCI_MANIFEST } from "../lib/registry.mjs";
import { makeRow } from "../lib/report.mjs";
import { newBucket, newDatabase, s3Skip, skippedRows, startExtra, stopExtra } from "../lib/scaleout.mjs";
import { ensureSmallImage, SMALL_REPO, SMALL_TAG } from "../lib/small-image.mjs";
import { errorMessage, log } from "../lib/util.mjs";

const KEYS = ["b1", "b2", "d1", "d2"];

async function load(ctx, servers) {
  const per = Math.round(64 / servers.length);
  const reports = await Promise.all(
    servers.map((server) =>
      runAb(`${server.baseUrl}/v2/${SMALL_REPO}/manifests/${SMALL_TAG}`, {
        concurrency: per,
        seconds: ctx.opts.abSeconds,
        headers: [`Accept: ${OCI_MANIFEST}`],
      }),
    ),
  );
  return {
    value: reports.reduce((sum, r) => sum + r.rps, 0),
    perReplica: reports.map((r) => Math.round(r.rps)),
    p99ms: Math.max(...reports.map((r) => r.percentilesMs["99"] ?? 0)),
  };
}

export default {
  id: "s3-replicas",
  title: "Manifest GET with one and two replicas on PostgreSQL + S3",
  async run(ctx) {
    const labels = [
      [
        "s3-replicas-1",
        "S3-8. Manifest GET, 64 connections, 1 replica (Berth --workers 1, PostgreSQL + S3)",
        "req/s",
      ],
      ["s3-replicas-2", "S3-9. Manifest GET, 64 connections, 2 replicas (Berth --workers 1 each)", "req/s"],
    ];
    const skip = s3Skip({ needsPostgres: true });
    if (skip) return skippedRows(this, skip, labels);
    const started = [];
    const pair = {};
    try {
      const berthConfig = await newDatabase(ctx, "bench_replicas");
      const buckets = {
        berth: await newBucket(ctx, "bench-replicas-berth"),
        distribution: await newBucket(ctx, "bench-replicas-distribution"),
      };
      const replicas = { berth: [], distribution: [] };
      for (const key of ["berth", "distribution"]) {
        try {
          for (const n of [1, 2]) {
            const server = await startExtra(ctx, "s3-replicas", {
              key: `${key}-r${n}`,
              impl: ctx.implFor(key),
              s3: buckets[key],
              ...(key === "berth"
                ? { berthConfig, extraArgs: [...ctx.opts.berthArgs, "--workers", "1"] }
                : {}),
            });
            started.push(server);
            replicas[key].push(server);
          }
          // Pushed through the first replica, read through both.
          await ensureSmallImage(ctx, replicas[key][0]);
          for (const server of replicas[key]) {
            await runAb(`${server.baseUrl}/v2/${SMALL_REPO}/manifests/${SMALL_TAG}`, {
              concurrency: 32,
              requests: 2000,
              headers: [`Accept: ${OCI_MANIFEST}`],
            });
          }
        } catch (err) {
          replicas[key] = errorMessage(err);
          log(`s3-replicas: ${key}: ${replicas[key]}`);
        }
      }
      const entry = (key, count) =>
        typeof replicas[key] === "string"
          ? { key, error: replicas[key] }
          : { key, label: `${key} × ${count}`, servers: replicas[key].slice(0, count) };
      pair.b1 = entry("berth", 1);
      pair.b2 = entry("berth", 2);
      pair.d1 = entry("distribution", 1);
      pair.d2 = entry("distribution", 2);
      const result = await ctx.alternate(pair, ctx.opts.reps, (group) => load(ctx, group.servers), {
        label: "s3-replicas",
        keys: KEYS,
      });
      const scaling = (two, one) =>
        result[two].value && result[one].value
          ? `${(result[two].value / result[one].value).toFixed(2)}x`
          : "n/a";
      return [
        makeRow({
          id: labels[0][0],
          label: labels[0][1],
          unit: "req/s",
          higherIsBetter: true,
          result: { berth: result.b1, distribution: result.d1 },
          notes: [
            "Distribution: one process per replica on a bucket of its own; Berth's replicas share one PostgreSQL database and one bucket",
          ],
        }),
        makeRow({
          id: labels[1][0],
          label: labels[1][1],
          unit: "req/s",
          higherIsBetter: true,
          result: { berth: result.b2, distribution: result.d2 },
          notes: [
            `two ab processes at once, 32 connections each, one per replica, summed; 2 replicas / 1 replica: Berth ${scaling("b2", "b1")}, Distribution ${scaling("d2", "d1")}`,
            "this machine has 2 cores shared by the replicas, both ab processes and PostgreSQL: the second replica can only add what CPU is left",
          ],
        }),
      ];
    } finally {
      for (const server of started) await stopExtra(ctx, server);
    }
  },
};
