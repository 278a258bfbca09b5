// Shared set-up of the PostgreSQL (issue 10) and S3 (issue 11) rows: the database and S3 servers,
// Berth on PostgreSQL beside the main pair, registries on a bucket, and the "skipped" rows written
// when PostgreSQL or Ceph is not installed.
import path from "node:path";
import { cephUnavailable, startCeph } from "./ceph.mjs";
import { postgresUnavailable, startPostgres } from "./postgres.mjs";
import { makeRow } from "./report.mjs";
import { startServer, stopServer } from "./servers.mjs";
import { log } from "./util.mjs";

let databases = 0;

/** The run's PostgreSQL server (started on first use, stopped at the end of the run). */
export function postgres(ctx) {
  return ctx.resource("postgres", () => startPostgres(ctx.opts.workDir));
}

/** The run's Ceph radosgw (started on first use, stopped at the end of the run). */
export function ceph(ctx) {
  return ctx.resource("ceph", () => startCeph(ctx.opts.workDir));
}

/** A new empty database on the run's PostgreSQL; returns Berth's `database:` section. */
export async function newDatabase(ctx, name) {
  const pg = await postgres(ctx);
  const url = await pg.createDatabase(`${name.replace(/[^a-z0-9_]/g, "_")}_${++databases}`);
  return ["database:", `  url: ${url}`];
}

/** Berth with its scheduled collector off, so that only a measured `berth gc` collects. */
export const NO_SCHEDULED_GC = ["gc:", "  enabled: false"];

/**
 * Starts a registry that the context stops at the end of the run (or `stopServer` earlier).
 * Options as servers.startServer; `name` is the folder under the work directory.
 */
export async function startExtra(ctx, name, options) {
  const workDir = path.join(ctx.opts.workDir, name);
  const server = await startServer({
    dataDir: path.join(workDir, `${options.key}-data`),
    workDir,
    extraArgs: options.impl === "distribution" ? [] : ctx.opts.berthArgs,
    ...options,
  });
  ctx.pairs.push({ berth: server });
  return server;
}

export async function stopExtra(ctx, server) {
  if (server?.pid) await stopServer(server);
  ctx.pairs = ctx.pairs.filter((p) => p.berth !== server);
}

/**
 * The three servers of the request-rate PostgreSQL rows: Berth on PostgreSQL (started once) beside
 * the main pair (Berth on SQLite, Distribution). Keys: pg, sqlite, distribution.
 */
export function pgTrio(ctx) {
  return ctx.once("pg-trio", async () => {
    const main = await ctx.servers();
    const berthConfig = await newDatabase(ctx, "bench_main");
    const pg = await startExtra(ctx, "pg-main", { key: "berth-pg", impl: "berth", berthConfig });
    return { pg, sqlite: main.berth, distribution: main.distribution };
  });
}

export const TRIO = ["pg", "sqlite", "distribution"];

/** Result of a trio measurement as the results of two rows: PostgreSQL and SQLite, each beside Distribution. */
export function trioRows(result, { id, label, ...row }) {
  return [
    makeRow({
      id,
      label: `${label}, Berth on PostgreSQL`,
      result: { berth: result.pg, distribution: result.distribution },
      ...row,
    }),
    makeRow({
      id: `${id}-sqlite`,
      label: `${label}, Berth on SQLite (same run)`,
      result: { berth: result.sqlite, distribution: result.distribution },
      ...row,
      target: null,
      notes: [],
    }),
  ];
}

/** Why a PostgreSQL row cannot run, or null. */
export function pgSkip() {
  return postgresUnavailable();
}

/** Why an S3 row cannot run, or null (the replicas row needs PostgreSQL too). */
export function s3Skip({ needsPostgres = false } = {}) {
  return cephUnavailable() ?? (needsPostgres ? postgresUnavailable() : null);
}

/** One row per label saying the metric was skipped and why. */
export function skippedRows(metric, why, labels) {
  log(`${metric.id} skipped: ${why}`);
  const error = `skipped: ${why}`;
  return labels.map(([id, label, unit]) =>
    makeRow({
      id,
      label,
      unit,
      higherIsBetter: !["s", "ms"].includes(unit),
      result: { berth: { error }, distribution: { error: "skipped" } },
    }),
  );
}

/** A new bucket on the run's radosgw; returns the `s3` settings for servers.startServer. */
export async function newBucket(ctx, name) {
  const s3 = await ceph(ctx);
  return s3.createBucket(name);
}

/**
 * Berth and Distribution on the run's radosgw, each on a bucket of its own (the same buckets and
 * data directories every time, so that a pair restarted with `redirect` sees what the last one
 * stored). Berth keeps its metadata in SQLite in its data directory. Returns { berth, distribution },
 * a server that failed to start being { key, error }.
 */
export async function startS3Pair(ctx, { redirect = false } = {}) {
  const buckets = await ctx.once("s3-buckets", async () => ({
    berth: await newBucket(ctx, "bench-berth"),
    distribution: await newBucket(ctx, "bench-distribution"),
  }));
  const pair = {};
  for (const key of ["berth", "distribution"]) {
    try {
      pair[key] = await startServer({
        key,
        impl: ctx.implFor(key),
        dataDir: path.join(ctx.opts.workDir, "s3", `${key}-data`),
        workDir: path.join(ctx.opts.workDir, "s3"),
        extraArgs: key === "berth" ? ctx.opts.berthArgs : [],
        s3: buckets[key],
        redirect,
      });
    } catch (err) {
      pair[key] = { key, error: err instanceof Error ? err.message : String(err) };
    }
  }
  ctx.pairs.push(pair);
  return pair;
}

/** The S3 pair (streaming, no redirect) most S3 rows share, started once. */
export function s3Pair(ctx) {
  return ctx.once("s3-pair", () => startS3Pair(ctx));
}
