import type { Config } from "../config/schema.js";
import { holderIsDead, newHolder } from "../metadata/gc-queries.js";
import type { MetadataStore } from "../metadata/store.js";
import type { RepositoryUsage, UsageSummary } from "../metadata/usage-queries.js";
import type { BlobStore } from "../storage/blob-store.js";
import {
  collectGarbage,
  type GcLogger,
  type GcOptions,
  type GcReport,
  Lease,
  type LockSource,
  purgeUploads,
  summarize,
} from "./gc.js";
import { Counter, Gauge, Histogram, meterNamed } from "./meters.js";
import type { PullThroughCache } from "./proxy/cache.js";
import { expireCache } from "./proxy/expiry.js";
import { applyRetention, compilePolicies, type RetentionReport } from "./retention.js";

/**
 * The background jobs (issue 6): garbage collection, retention and upload purging, each on its own
 * interval, in one process at a time; with a pull-through cache, the expiry of what it holds (proxy.ttl).
 *
 * Every worker process starts the scheduler; a job runs only in the process that takes its lease, a
 * row `job:<name>` in `locks`. After a run the row rests as `idle:` until the next run is due, so the
 * interval holds across all processes and machines that share the database, and a job whose process
 * died is taken over when its lease expires (at once on the same host). `berth gc` and
 * `berth retention` take the same leases, so they never run beside a scheduled run.
 */

export interface JobsRuntime {
  meta: MetadataStore;
  storage: BlobStore;
  /** registry:2's link files are kept in step (the store is kept readable by registry:2). */
  distributionLinks?: boolean;
  /** The pull-through cache, when there is one: its content expires by proxy.ttl. */
  registry?: { proxy: PullThroughCache | null };
}

export type JobName = "gc" | "retention" | "uploadpurging" | "relocate" | "proxyexpiry" | "usage";

export const JOB_LOCK: Record<JobName, string> = {
  gc: "job:gc",
  retention: "job:retention",
  uploadpurging: "job:uploadpurging",
  relocate: "job:relocate",
  proxyexpiry: "job:proxyexpiry",
  usage: "job:usage",
};

/** How often blobs uploaded in parts are moved to Distribution's keys (link files kept, on S3). */
const RELOCATE_INTERVAL_MS = 60_000;
/** How long a moved blob's first copy stays, for reads that found it before the move. */
const RELOCATE_RETIRE_MS = 3_600_000;

/** How often the cache's expiry runs: a quarter of the shortest TTL, between a second and an hour. */
export function proxyExpiryInterval(shortestTtlMs: number): number {
  return Math.min(60 * 60_000, Math.max(1_000, Math.floor(shortestTtlMs / 4)));
}

/** Pause between the usage job's steps, so that requests in the same process get their turn. */
const USAGE_PAUSE_MS = 20;

/** The collector's options from the configuration (flags may override some). */
export function gcOptionsFromConfig(config: Config, overrides: Partial<GcOptions> = {}): GcOptions {
  const purging = config.storage.maintenance.uploadpurging;
  return {
    graceMs: config.gc.graceperiod,
    batchSize: config.gc.batchsize,
    pauseMs: config.gc.pause,
    untagged: { enabled: config.gc.untagged.enabled, olderThanMs: config.gc.untagged.olderthan },
    uploads: purging.enabled ? { enabled: true, ageMs: purging.age } : null,
    dryRun: false,
    lease: null,
    ...overrides,
  };
}

interface Job {
  name: JobName;
  intervalMs: number;
  run(lease: Lease, signal: AbortSignal): Promise<void>;
}

const FIRST_RUN_DELAY_MS = 5_000;
const RUN_CHECK_MS = 5_000;
const RETRY_AFTER_ERROR_MS = 5 * 60_000;

/**
 * Starts the scheduler in this process. Returns a function that stops it: the job running here stops
 * after its current batch, releases its lease, and the returned promise resolves.
 * Call it in every worker after the server listens (src/cli/serve.ts, runWorker).
 */
export function startBackgroundJobs(
  runtime: JobsRuntime,
  config: Config,
  log: GcLogger,
): () => Promise<void> {
  const target = { meta: runtime.meta, store: runtime.storage };
  const meta = runtime.meta;
  if (config.metrics?.enabled !== false) registerMaintenanceMetrics(runtime.meta);
  // Registry-wide storage usage (the UI's storage page): computed here, never by a request.
  const jobs: Job[] = [
    {
      name: "usage",
      intervalMs: config.ui.usageinterval,
      async run(_lease, signal) {
        const started = Date.now();
        const snapshot = await meta.usage.computeUsageSnapshot({ pauseMs: USAGE_PAUSE_MS, signal });
        if (!snapshot) return;
        await meta.usage.saveUsageSnapshot(snapshot);
        log.debug?.(
          { job: "usage", repositories: snapshot.repositories.length, ms: Date.now() - started },
          "usage: computed",
        );
      },
    },
  ];
  const readOnly = config.storage.maintenance.readonly.enabled;
  if (readOnly) log.info({}, "background jobs: only usage (read-only mode: nothing is deleted)");
  if (config.gc.enabled && !readOnly) {
    jobs.push({
      name: "gc",
      intervalMs: config.gc.interval,
      async run(lease, signal) {
        // Upload purging has its own schedule (storage.maintenance.uploadpurging.interval).
        const report = await collectGarbage(
          target,
          gcOptionsFromConfig(config, { lease, signal, log, uploads: null }),
        );
        recordRun("gc", report);
        log.info({ job: "gc", ...summarize(report) }, "gc: collection finished");
      },
    });
  }
  const retention = config.retention;
  if (retention.enabled && retention.policies.length > 0 && !readOnly) {
    const policies = compilePolicies(retention.policies);
    jobs.push({
      name: "retention",
      intervalMs: retention.interval,
      async run(lease, signal) {
        const report = await applyRetention(target, {
          policies,
          graceMs: config.gc.graceperiod,
          batchSize: config.gc.batchsize,
          pauseMs: config.gc.pause,
          dryRun: retention.dryrun,
          lease,
          signal,
          log,
        });
        recordRetention(report);
        for (const repo of report.repositories) {
          log.info(
            {
              job: "retention",
              dryRun: report.dryRun,
              repository: repo.repository,
              policy: repo.policy,
              tags: repo.tags,
              manifests: repo.manifests.length,
            },
            report.dryRun ? "retention (dry run): would remove" : "retention: removed",
          );
        }
        log.info(
          {
            job: "retention",
            dryRun: report.dryRun,
            aborted: report.aborted,
            durationMs: report.durationMs,
            tags: report.tagsRemoved,
            manifests: report.manifestsRemoved,
          },
          "retention: finished",
        );
      },
    });
  }
  const purging = config.storage.maintenance.uploadpurging;
  if (purging.enabled && !readOnly) {
    jobs.push({
      name: "uploadpurging",
      intervalMs: purging.interval,
      async run(lease, signal) {
        const report = await purgeUploads(target, {
          ageMs: purging.age,
          batchSize: config.gc.batchsize,
          pauseMs: config.gc.pause,
          dryRun: purging.dryrun,
          lease,
          signal,
          log,
        });
        recordRun("uploadpurging", report);
        if (report.uploads.length > 0 || report.aborted) {
          log.info(
            { job: "uploadpurging", ...summarize(report) },
            purging.dryrun ? "upload purging (dry run) finished" : "upload purging finished",
          );
        }
      },
    });
  }
  const relocate = runtime.storage.relocateForDistribution?.bind(runtime.storage);
  if (relocate && runtime.distributionLinks) {
    // [issue 20] registry:2 reads blobs at its own keys only: what was uploaded in parts is copied there.
    jobs.push({
      name: "relocate",
      intervalMs: RELOCATE_INTERVAL_MS,
      async run(_lease, signal) {
        const report = await relocate({ retireAfterMs: RELOCATE_RETIRE_MS, signal });
        if (report.moved > 0 || report.retired > 0)
          log.info({ job: "relocate", ...report }, "registry:2 keys: blobs uploaded in parts copied to them");
      },
    });
  }
  const proxy = runtime.registry?.proxy ?? null;
  const shortestTtl = proxy?.shortestTtlMs ?? null;
  if (proxy && shortestTtl !== null) {
    jobs.push({
      name: "proxyexpiry",
      intervalMs: proxyExpiryInterval(shortestTtl),
      async run(lease, signal) {
        const report = await expireCache(target, {
          ttlOf: (name) => proxy.ttlOf(name),
          graceMs: config.gc.graceperiod,
          batchSize: config.gc.batchsize,
          pauseMs: config.gc.pause,
          lease,
          signal,
          log,
        });
        if (report.tags.length > 0 || report.manifests.length > 0 || report.aborted) {
          log.info(
            {
              job: "proxyexpiry",
              aborted: report.aborted,
              durationMs: report.durationMs,
              tags: report.tags.length,
              manifests: report.manifests.length,
            },
            "proxy: expiry finished",
          );
        }
      },
    });
  }
  if (jobs.length === 0) return async () => {};

  const controller = new AbortController();
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<void> = Promise.resolve();
  const tickMs = Math.min(30_000, Math.max(250, Math.min(...jobs.map((j) => j.intervalMs)) / 4));
  // The scheduler sleeps until the earliest moment a job falls due (a resting lease's end, or a running
  // one's expiry if its process dies), not on a fixed tick: an idle registry wakes rarely. It still
  // looks at least every MAX_SLEEP_MS, in case another process moved a schedule earlier.
  const MAX_SLEEP_MS = 10 * 60_000;
  /** When each job's run in another process is next looked at (see runDue). */
  const checkedRun = new Map<string, number>();

  /** Runs the jobs that are due; returns when the next one falls due (ms since the epoch). */
  const runDue = async (): Promise<number> => {
    let nextDue = Date.now() + MAX_SLEEP_MS;
    for (const job of jobs) {
      if (stopped) return nextDue;
      const name = JOB_LOCK[job.name];
      // Read first: most ticks find the job resting and need no write at all.
      const row = await meta.locks.readLock(name);
      if (row && row.expires_at >= Date.now()) {
        // Resting until its next run: sleep until then. Running in another process: look again every
        // few seconds, as Lease.acquire takes over at once a run whose process died on this host;
        // elsewhere it is taken when the lease runs out.
        const lookAgain = row.holder.startsWith("run:") ? (checkedRun.get(name) ?? 0) : Infinity;
        if (Date.now() < lookAgain) {
          nextDue = Math.min(nextDue, row.expires_at, lookAgain);
          continue;
        }
        checkedRun.set(name, Date.now() + RUN_CHECK_MS);
      }
      const lease = await Lease.acquire(meta, name);
      if (!lease) {
        // Another process took it just now: look again after a tick.
        nextDue = Math.min(nextDue, Date.now() + tickMs);
        continue;
      }
      let next = Date.now() + job.intervalMs;
      const started = Date.now();
      try {
        await job.run(lease, controller.signal);
        next = Date.now() + job.intervalMs;
      } catch (err) {
        next = Date.now() + Math.min(job.intervalMs, RETRY_AFTER_ERROR_MS);
        jobErrors.inc({ job: job.name });
        log.warn({ job: job.name, err, ms: Date.now() - started }, `${job.name}: failed; trying again later`);
      } finally {
        // Stopped midway: free the lease at once, so another process picks the job up.
        await lease.release(stopped ? 0 : next).catch(() => {});
      }
      nextDue = Math.min(nextDue, next);
    }
    return nextDue;
  };
  const schedule = (delay: number) => {
    if (stopped) return;
    timer = setTimeout(() => {
      let nextDue = Date.now() + tickMs;
      running = runDue()
        .then((due) => {
          nextDue = due;
        })
        .catch((err: unknown) => log.warn({ err }, "background jobs: scheduling failed"))
        // A little after the due time, spread so that workers do not all wake at once.
        .finally(() =>
          schedule(Math.max(250, nextDue - Date.now()) + Math.random() * Math.min(tickMs, 5_000)),
        );
    }, delay);
    timer.unref();
  };
  schedule(Math.min(FIRST_RUN_DELAY_MS, tickMs) * (0.5 + Math.random()));
  log.info?.(
    { jobs: jobs.map((j) => ({ job: j.name, intervalMs: j.intervalMs })) },
    "background jobs: scheduled",
  );

  return async () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    controller.abort();
    await running;
  };
}

// ------------------------------------------------------------------------------------------------
// The serving processes

/**
 * Every serving process holds a lease `serve:rw:<host>:<pid>:<nonce>` (`serve:ro:...` in read-only
 * mode) in `locks` from before it listens until it stops, renewed by a heartbeat every third of
 * SERVER_LEASE_TTL_MS: whoever shares the database can tell that a server writes it (`berth db
 * migrate-to` refuses to copy under one that takes pushes). A clean stop ends it at once; a process
 * that died is known as such at once on its own host, elsewhere when its lease runs out.
 */
export const SERVER_LOCK_PREFIX = "serve:";
export const SERVER_LEASE_TTL_MS = 90_000;
/** Rows of servers that ended longer ago than this are removed when another server starts. */
const SERVER_ROW_KEEP_MS = 24 * 3_600_000;

/** Takes this process's server lease; the function returned ends it (at stop). */
export async function holdServerLease(
  meta: LockSource,
  options: { readOnly: boolean },
): Promise<() => Promise<void>> {
  await meta.locks.dropLocks(SERVER_LOCK_PREFIX, Date.now() - SERVER_ROW_KEEP_MS).catch(() => {});
  const mode = options.readOnly ? "ro" : "rw";
  const lease = await Lease.acquire(meta, `${SERVER_LOCK_PREFIX}${mode}:${newHolder()}`, {
    ttlMs: SERVER_LEASE_TTL_MS,
  });
  return async () => {
    await lease?.release(Date.now()).catch(() => {});
  };
}

export interface ServerLease {
  /** The row's name (unique per process run). */
  name: string;
  host: string;
  pid: number;
  /** Started in read-only mode: it takes no pushes and no deletes. */
  readOnly: boolean;
  /** Running now: the lease is held and current, and its process is not known to be gone. */
  running: boolean;
  /** When it runs out (running), or when it ended (a clean stop) or would have (a process that died). */
  until: number;
}

/** The server leases in the database, running or ended (until they are cleaned up a day later). */
export async function serverLeases(meta: LockSource, now = Date.now()): Promise<ServerLease[]> {
  const rows = await meta.locks.locksNamed(SERVER_LOCK_PREFIX);
  return rows.map((row) => {
    const [, host = "", pid = "0"] = /^(?:run|idle):(.*):(\d+):[^:]*$/.exec(row.holder) ?? [];
    const held = row.holder.startsWith("run:");
    return {
      name: row.name,
      host,
      pid: Number(pid),
      readOnly: row.name.startsWith(`${SERVER_LOCK_PREFIX}ro:`),
      running: held && row.expires_at >= now && !holderIsDead(row.holder.slice(4)),
      until: row.expires_at,
    };
  });
}

// ------------------------------------------------------------------------------------------------
// Metrics

/**
 * Counters for the jobs, and storage usage gauges computed from the database when scraped (cached for
 * a minute). They live in prom-client's default registry; gauges aggregate across workers with `max`
 * (every worker reads the same database), counters with `sum`.
 */
function counter(name: string, help: string, labelNames: string[]): Counter<string> {
  const existing = meterNamed(name);
  if (existing) return existing as Counter<string>;
  return new Counter({ name, help, labelNames });
}

function gauge(
  name: string,
  help: string,
  labelNames: string[],
  collect?: (this: Gauge<string>) => Promise<void>,
): Gauge<string> {
  const existing = meterNamed(name);
  if (existing) return existing as Gauge<string>;
  return new Gauge({ name, help, labelNames, aggregator: "max", ...(collect ? { collect } : {}) });
}

const jobRuns = counter(
  "berth_gc_runs_total",
  "Background job runs (gc, retention, uploadpurging) finished in this process.",
  ["job", "result"],
);
const jobErrors = counter("berth_gc_errors_total", "Background job runs that failed.", ["job"]);
const removedItems = counter("berth_gc_removed_total", "Items removed by garbage collection and retention.", [
  "kind",
]);
const removedBytes = counter(
  "berth_gc_removed_bytes_total",
  "Bytes freed by garbage collection and upload purging.",
  ["kind"],
);
const lastRun = gauge("berth_gc_last_run_timestamp_seconds", "When a background job last finished.", ["job"]);
const lastDuration = gauge(
  "berth_gc_last_duration_seconds",
  "How long the last run of a background job took.",
  ["job"],
);

function recordRun(job: JobName, report: GcReport): void {
  jobRuns.inc({ job, result: report.aborted ? "aborted" : "done" });
  lastRun.set({ job }, Date.now() / 1000);
  lastDuration.set({ job }, report.durationMs / 1000);
  if (report.dryRun) return;
  removedItems.inc({ kind: "manifest" }, report.manifests.length);
  removedItems.inc({ kind: "blob" }, report.blobs.length);
  removedItems.inc({ kind: "orphan" }, report.orphans.length);
  removedItems.inc({ kind: "upload" }, report.uploads.length);
  removedItems.inc({ kind: "link" }, report.links);
  removedBytes.inc({ kind: "blob" }, report.blobBytes);
  removedBytes.inc({ kind: "orphan" }, report.orphanBytes);
  removedBytes.inc({ kind: "upload" }, report.uploadBytes);
}

function recordRetention(report: RetentionReport): void {
  jobRuns.inc({ job: "retention", result: report.aborted ? "aborted" : "done" });
  lastRun.set({ job: "retention" }, Date.now() / 1000);
  lastDuration.set({ job: "retention" }, report.durationMs / 1000);
  if (report.dryRun) return;
  removedItems.inc({ kind: "tag" }, report.tagsRemoved);
  removedItems.inc({ kind: "manifest" }, report.manifestsRemoved);
}

const USAGE_CACHE_MS = 60_000;
let usageSource: MetadataStore | null = null;
let usageCache: { at: number; value: Promise<UsageSnapshot> } | null = null;

interface UsageSnapshot {
  summary: UsageSummary;
  repositories: RepositoryUsage[];
}

function usageSnapshot(): Promise<UsageSnapshot> | null {
  if (!usageSource) return null;
  const meta = usageSource;
  if (!usageCache || Date.now() - usageCache.at > USAGE_CACHE_MS) {
    const value = (async () => ({
      summary: await meta.usage.usageSummary(),
      repositories: await meta.usage.repositoryUsage(),
    }))();
    usageCache = { at: Date.now(), value };
    value.catch(() => {
      usageCache = null;
    });
  }
  return usageCache.value;
}

/**
 * Registers the job counters and the storage gauges (berth_storage_bytes{kind=total|shared|unlinked},
 * berth_storage_blobs{kind}, berth_repository_storage_bytes{repository,kind=total|unique|shared}).
 * Safe to call more than once.
 */
export function registerMaintenanceMetrics(meta: MetadataStore): void {
  usageSource = meta;
  gauge(
    "berth_storage_bytes",
    "Bytes of stored blobs: total (each once), shared (linked by 2+ repositories), unlinked (garbage).",
    ["kind"],
    async function () {
      const snap = await usageSnapshot();
      if (!snap) return;
      this.set({ kind: "total" }, snap.summary.total.bytes);
      this.set({ kind: "shared" }, snap.summary.shared.bytes);
      this.set({ kind: "unlinked" }, snap.summary.unlinked.bytes);
    },
  );
  gauge(
    "berth_storage_blobs",
    "Stored blobs: total, shared (linked by 2+ repositories), unlinked (garbage).",
    ["kind"],
    async function () {
      const snap = await usageSnapshot();
      if (!snap) return;
      this.set({ kind: "total" }, snap.summary.total.blobs);
      this.set({ kind: "shared" }, snap.summary.shared.blobs);
      this.set({ kind: "unlinked" }, snap.summary.unlinked.blobs);
    },
  );
  gauge(
    "berth_repository_storage_bytes",
    "Bytes a repository links: total, unique (no other repository links them), shared.",
    ["repository", "kind"],
    async function () {
      const snap = await usageSnapshot();
      if (!snap) return;
      this.reset();
      for (const r of snap.repositories) {
        this.set({ repository: r.name, kind: "total" }, r.bytes);
        this.set({ repository: r.name, kind: "unique" }, r.unique);
        this.set({ repository: r.name, kind: "shared" }, r.shared);
      }
    },
  );
}
