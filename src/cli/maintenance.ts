import { loadConfig } from "../config/load.js";
import type { Config, ConfigInput } from "../config/schema.js";
import { parseDuration } from "../config/sections/core.js";
import { collectGarbage, type GcLogger, type GcReport, waitForLease } from "../registry/gc.js";
import { gcOptionsFromConfig, JOB_LOCK } from "../registry/jobs.js";
import {
  applyRetention,
  compilePolicies,
  formatDuration,
  type RetentionReport,
} from "../registry/retention.js";
import { formatBytes } from "./format-bytes.js";
import type { Runtime } from "./runtime.js";

/**
 * Maintenance commands (issue 6): `berth gc`, `berth retention`, `berth repo rm`, `berth usage`.
 * They open the same data directory as a running `berth serve` and are safe beside it: deletions run
 * in the same bounded, lease-guarded transactions as the server's own background jobs.
 */

export interface CommonFlags {
  config?: string;
  dataDir?: string;
}

function loadFor(flags: CommonFlags): Config {
  const input: Record<string, unknown> = {};
  if (flags.dataDir) input.storage = { filesystem: { rootdirectory: flags.dataDir } };
  const { config } = loadConfig({
    file: flags.config,
    flags: input as ConfigInput,
    flagNames: { "storage.filesystem.rootdirectory": "--data-dir" },
  });
  return config;
}

async function withRuntime<T>(config: Config, fn: (runtime: Runtime) => Promise<T>): Promise<T> {
  const { openRuntime } = await import("./runtime.js");
  const runtime = await openRuntime(config);
  try {
    return await fn(runtime);
  } finally {
    await runtime.close();
  }
}

function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

function err(line: string): void {
  process.stderr.write(`${line}\n`);
}

function durationFlag(value: string, name: string): number {
  const ms = parseDuration(value);
  if (ms === null)
    throw new Error(`${name}: expected a duration such as "30s", "10m" or "1h", got "${value}"`);
  return ms;
}

const stderrLog: GcLogger = {
  info: () => {},
  warn: (obj, msg) => err(`warning: ${msg ?? ""} ${JSON.stringify(obj)}`),
};

/** "1 tag", "2 tags", "0 repositories" (a consonant and y: ies). */
export function plural(count: number, word: string): string {
  if (count === 1) return `${count} ${word}`;
  return `${count} ${/[^aeiou]y$/.test(word) ? `${word.slice(0, -1)}ies` : `${word}s`}`;
}

// ------------------------------------------------------------------------------------------------

export interface GcFlags extends CommonFlags {
  dryRun?: boolean;
  untagged?: boolean;
  gracePeriod?: string;
  wait?: string;
  json?: boolean;
  list?: boolean;
  iKnowTheStoreIsMine?: boolean;
}

function printGcReport(report: GcReport, list: boolean): void {
  const verb = report.dryRun ? "would remove" : "removed";
  if (report.manifests.length > 0) {
    out(`${verb} ${plural(report.manifests.length, "manifest")}:`);
    if (list)
      for (const m of report.manifests)
        out(`  ${m.repository}@${m.digest}  ${formatBytes(m.size)}  (${m.reason})`);
  }
  out(
    `${verb} ${plural(report.blobs.length, "blob")}, ${formatBytes(report.blobBytes)}${report.blobs.length > 0 && list ? ":" : ""}`,
  );
  if (list) for (const blob of report.blobs) out(`  ${blob.digest}  ${formatBytes(blob.size)}`);
  if (!report.dryRun && report.links > 0)
    out(`removed ${plural(report.links, "stale repository link")} (blobs other repositories still use)`);
  if (report.orphans.length > 0) {
    out(
      `${verb} ${plural(report.orphans.length, "orphan file")} (no database row), ${formatBytes(report.orphanBytes)}${list ? ":" : ""}`,
    );
    if (list) for (const o of report.orphans) out(`  ${o.digest}  ${formatBytes(o.size)}`);
  }
  if (report.uploads.length > 0) {
    out(
      `${verb} ${plural(report.uploads.length, "abandoned upload")}, ${formatBytes(report.uploadBytes)}${list ? ":" : ""}`,
    );
    if (list)
      for (const u of report.uploads)
        out(`  ${u.id}  ${formatBytes(u.size)}${u.kind === "file" ? "  (file without a session)" : ""}`);
  }
  const total = report.blobBytes + report.orphanBytes + report.uploadBytes;
  out(
    `${report.dryRun ? "would free" : "freed"} ${formatBytes(total)} in ${(report.durationMs / 1000).toFixed(2)} s` +
      (report.dryRun
        ? ""
        : ` (${plural(report.transactions, "transaction")}, the longest ${report.longestTransactionMs} ms)`),
  );
  for (const note of report.notes) out(`note: ${note}`);
}

export async function runGc(flags: GcFlags): Promise<void> {
  const config = loadFor(flags);
  if (!flags.dryRun && config.storage.maintenance.readonly.enabled) {
    throw new Error(
      "the registry is in read-only mode (storage.maintenance.readonly.enabled): nothing is deleted; --dry-run works",
    );
  }
  const overrides = {
    ...(flags.gracePeriod !== undefined
      ? { graceMs: durationFlag(flags.gracePeriod, "--grace-period") }
      : {}),
  };
  const options = gcOptionsFromConfig(config, {
    ...overrides,
    dryRun: flags.dryRun === true,
    log: stderrLog,
  });
  if (flags.untagged) options.untagged = { ...options.untagged, enabled: true };
  if (flags.iKnowTheStoreIsMine) options.storeIsMine = true;
  await withRuntime(config, async (runtime) => {
    let report: GcReport;
    if (options.dryRun) {
      report = await collectGarbage({ meta: runtime.meta, store: runtime.storage }, options);
    } else {
      const waitMs = flags.wait !== undefined ? durationFlag(flags.wait, "--wait") : 10 * 60_000;
      const lease = await waitForLease(runtime.meta, JOB_LOCK.gc, {
        takeIdle: true,
        timeoutMs: waitMs,
        onWait: (holder) => err(`another collection is ${holder}; waiting for it to finish`),
      });
      if (!lease)
        throw new Error(
          `another collection is still running after ${formatDuration(waitMs)}; try again later`,
        );
      const abort = new AbortController();
      const onSignal = () => abort.abort();
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
      try {
        report = await collectGarbage(
          { meta: runtime.meta, store: runtime.storage },
          { ...options, lease, signal: abort.signal },
        );
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
        // A run on demand counts as a run: the schedule starts over from now.
        await lease.release(config.gc.enabled ? Date.now() + config.gc.interval : 0);
      }
    }
    if (flags.json) out(JSON.stringify(report, null, 2));
    else printGcReport(report, flags.list !== false);
    if (report.aborted) process.exitCode = 1;
  });
}

// ------------------------------------------------------------------------------------------------

export interface RelocateFlags extends CommonFlags {
  retireAfter?: string;
  wait?: string;
}

/** `berth relocate` (issue 20): the background job's relocation, now, under the same lease. */
export async function runRelocate(flags: RelocateFlags): Promise<void> {
  const config = loadFor(flags);
  const retireAfterMs =
    flags.retireAfter !== undefined ? durationFlag(flags.retireAfter, "--retire-after") : 3_600_000;
  await withRuntime(config, async (runtime) => {
    const relocate = runtime.storage.relocateForDistribution?.bind(runtime.storage);
    if (!relocate) {
      out(`nothing to do: every blob on the ${runtime.storage.kind} store is where registry:2 reads it`);
      return;
    }
    const waitMs = flags.wait !== undefined ? durationFlag(flags.wait, "--wait") : 10 * 60_000;
    const lease = await waitForLease(runtime.meta, JOB_LOCK.relocate, {
      takeIdle: true,
      timeoutMs: waitMs,
      onWait: (holder) => err(`a relocation is ${holder}; waiting for it to finish`),
    });
    if (!lease)
      throw new Error(`a relocation is still running after ${formatDuration(waitMs)}; try again later`);
    try {
      const report = await relocate({ retireAfterMs });
      out(
        `copied ${plural(report.moved, "blob")} (${formatBytes(report.bytes)}) to registry:2's keys; ` +
          `deleted ${report.retired} first ${report.retired === 1 ? "copy" : "copies"} moved earlier`,
      );
    } finally {
      await lease.release(0);
    }
  });
}

// ------------------------------------------------------------------------------------------------

export interface RetentionFlags extends CommonFlags {
  dryRun?: boolean;
  repository?: string;
  json?: boolean;
}

function printRetentionReport(report: RetentionReport, policies: number): void {
  const verb = report.dryRun ? "would remove" : "removed";
  if (policies === 0) {
    out("no retention policies are configured (retention.policies): nothing to do");
    return;
  }
  for (const repo of report.repositories) {
    out(`${repo.repository}: ${repo.policy}`);
    for (const t of repo.tags) out(`  ${verb} tag ${t.tag} (${t.digest}): ${t.reason}`);
    for (const m of repo.manifests)
      out(`  ${verb} manifest ${m.digest} (${formatBytes(m.size)}): ${m.reason}`);
  }
  out(
    `${verb} ${plural(report.tagsRemoved, "tag")} and ${plural(report.manifestsRemoved, "manifest")} in ${plural(report.repositories.length, "repository")}` +
      `${report.dryRun ? "" : "; their blobs go at the next garbage collection (berth gc)"}`,
  );
  for (const note of report.notes) out(`note: ${note}`);
}

export async function runRetention(flags: RetentionFlags): Promise<void> {
  const config = loadFor(flags);
  const dryRun = flags.dryRun === true;
  if (!dryRun && config.storage.maintenance.readonly.enabled) {
    throw new Error(
      "the registry is in read-only mode (storage.maintenance.readonly.enabled): nothing is deleted; --dry-run works",
    );
  }
  const policies = compilePolicies(config.retention.policies);
  await withRuntime(config, async (runtime) => {
    const target = { meta: runtime.meta, store: runtime.storage };
    const base = {
      policies,
      graceMs: config.gc.graceperiod,
      batchSize: config.gc.batchsize,
      pauseMs: config.gc.pause,
      dryRun,
      repository: flags.repository,
      log: stderrLog,
    };
    let report: RetentionReport;
    if (dryRun || policies.length === 0) {
      report = await applyRetention(target, { ...base, dryRun: true, lease: null });
    } else {
      const lease = await waitForLease(runtime.meta, JOB_LOCK.retention, {
        takeIdle: true,
        timeoutMs: 10 * 60_000,
        onWait: (holder) => err(`retention is ${holder}; waiting for it to finish`),
      });
      if (!lease) throw new Error("retention is still running elsewhere after 10m; try again later");
      try {
        report = await applyRetention(target, { ...base, lease });
      } finally {
        await lease.release(config.retention.enabled ? Date.now() + config.retention.interval : 0);
      }
    }
    if (flags.json) out(JSON.stringify(report, null, 2));
    else printRetentionReport(report, policies.length);
    if (report.aborted) process.exitCode = 1;
  });
}

// ------------------------------------------------------------------------------------------------

export interface UsageFlags extends CommonFlags {
  json?: boolean;
  repository?: string;
}

export async function runUsage(flags: UsageFlags): Promise<void> {
  const config = loadFor(flags);
  await withRuntime(config, async (runtime) => {
    const usageOf = runtime.meta.usage;
    if (flags.repository !== undefined) {
      const usage = await usageOf.usageOfRepository(flags.repository);
      if (!usage) throw new Error(`repository ${flags.repository} not found`);
      if (flags.json) out(JSON.stringify(usage, null, 2));
      else
        out(
          `${usage.name}: ${formatBytes(usage.bytes)} in ${plural(usage.blobs, "blob")}; unique ${formatBytes(usage.unique)}, shared ${formatBytes(usage.shared)}`,
        );
      return;
    }
    const summary = await usageOf.usageSummary();
    const repositories = await usageOf.repositoryUsage();
    if (flags.json) {
      out(JSON.stringify({ ...summary, repositories }, null, 2));
      return;
    }
    const rows = repositories.map((r) => [
      r.name,
      formatBytes(r.bytes),
      formatBytes(r.unique),
      formatBytes(r.shared),
      String(r.blobs),
    ]);
    const header = ["REPOSITORY", "SIZE", "UNIQUE", "SHARED", "BLOBS"];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
    const line = (cells: string[]) =>
      cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join("  ");
    out(line(header));
    for (const r of rows) out(line(r));
    if (rows.length > 0) out();
    out(
      `total: ${formatBytes(summary.total.bytes)} in ${plural(summary.total.blobs, "blob")} (each stored once)`,
    );
    out(
      `shared by two or more repositories: ${formatBytes(summary.shared.bytes)} in ${plural(summary.shared.blobs, "blob")}`,
    );
    out(
      `linked by no repository (the next collection frees it): ${formatBytes(summary.unlinked.bytes)} in ${plural(summary.unlinked.blobs, "blob")}`,
    );
  });
}

// ------------------------------------------------------------------------------------------------

export interface RepoRmFlags extends CommonFlags {
  json?: boolean;
}

export async function runRepoRm(name: string, flags: RepoRmFlags): Promise<void> {
  const config = loadFor(flags);
  await withRuntime(config, async (runtime) => {
    const repo = await runtime.meta.gc.repositoryByName(name);
    if (!repo) throw new Error(`repository ${name} not found`);
    const counts = await runtime.meta.gc.repositoryCounts(repo.id);
    const usage = await runtime.meta.usage.usageOfRepository(name);
    await runtime.registry.deleteRepository(name);
    const result = { repository: name, ...counts, uniqueBytes: usage?.unique ?? 0 };
    if (flags.json) {
      out(JSON.stringify(result, null, 2));
      return;
    }
    out(
      `removed repository ${name}: ${plural(counts.tags, "tag")}, ${plural(counts.manifests, "manifest")}, ${plural(counts.uploads, "upload")} in progress`,
    );
    out(
      `${formatBytes(result.uniqueBytes)} no other repository uses will be freed by the next garbage collection (berth gc)`,
    );
  });
}
