import pino from "pino";
import { distributionLinksWanted } from "../config/data-dir.js";
import type { Config } from "../config/schema.js";
import { sqlitePath } from "../metadata/db.js";
import { SqliteBulkImport } from "../metadata/distribution-bulk.js";
import { DistributionQueries } from "../metadata/distribution-queries.js";
import type { SqlMetadataStore } from "../metadata/store.js";
import {
  type AdoptionProgress,
  type AdoptionReport,
  adoptDistribution,
  PROBLEM_TEXT,
  summaryLines,
} from "../registry/adopt.js";
import { DistributionSync } from "../registry/distribution-sync.js";
import { waitForLease } from "../registry/gc.js";
import type { DistributionTree } from "../storage/distribution-layout.js";
import { adoptWorkerFile } from "./adopt-worker-file.js";

/**
 * Start-up for a data directory or a bucket shared with registry:2 (issues 12 and 20), called by openRuntime:
 *   1. adopt its repositories when the database has not done so yet (only the process allowed to migrate);
 *   2. decide whether link files are kept in step: `storage.filesystem.distributionlinks`, or, when unset,
 *      on for an adopted directory and off for a new one;
 *   3. when switched on for a directory that already holds Berth's rows, write every link first;
 *   4. apply what a crash left in the journal, and flush the journal after every commit.
 * A directory without `docker/registry/v2/repositories` and without the key costs one stat.
 */

export interface DistributionHandle {
  sync: DistributionSync;
  close(): Promise<void>;
}

interface Log {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

const PERIODIC_FLUSH_MS = 5_000;
export const ADOPT_LOCK = "job:adopt";

export async function openDistribution(
  config: Config,
  target: { dataDir: string; meta: SqlMetadataStore; tree: DistributionTree },
  options: { adopt: boolean; present: boolean; log?: Log },
): Promise<DistributionHandle | null> {
  const wanted = distributionLinksWanted(config);
  const present = options.present;
  if (!present && wanted !== true) return null;
  const log: Log = options.log ?? pino({ level: config.log.level, base: { pid: process.pid } });
  const queries = new DistributionQueries(target.meta.db, target.meta.metadata.dialect);
  const layout = target.tree;
  let state = await queries.state();

  // The links there are Berth's own once it keeps them: never adopt them again.
  if (present && state.adoption !== "done" && state.links === "off") {
    if (options.adopt)
      await adoptAtStartup(queries, target.meta, layout, log, wanted, target.dataDir, config);
    else {
      // Another process (the lead worker of `berth serve`) adopts: serve nothing until it is done, so
      // that no client sees the registry half adopted.
      while ((await queries.state()).adoption !== "done") await new Promise((r) => setTimeout(r, 250));
    }
    state = await queries.state();
  }

  const links = wanted ?? state.adoption === "done";
  if (!links) {
    if (state.links !== "off") await queries.setState({ links: "off" });
    return null;
  }
  const sync = new DistributionSync(queries, layout, log);
  if (state.links !== "on" && options.adopt) {
    // Switched on for a directory with Berth's rows: every link is written before the directory counts as kept.
    await queries.setState({ links: "exporting", ...(state.adoption === null ? { adoption: "done" } : {}) });
    if (!(await queries.isEmpty())) {
      log.info(
        { repositories: layout.repositories },
        "registry:2 link files: writing them for every repository",
      );
      const count = await sync.exportAll();
      log.info({ repositories: count }, "registry:2 link files: written");
    }
    await queries.setState({ links: "on" });
  }
  // What a crash left between a commit and its link files.
  if (await queries.hasJournal()) {
    log.info({}, "registry:2 link files: applying changes a stop left behind");
    await sync.flush();
  }
  const hook = () => sync.flushQuietly();
  target.meta.afterCommit.push(hook);
  // Changes made by other processes (berth gc, berth repo rm) that have no flush of their own after commit.
  const timer = setInterval(() => {
    void queries
      .hasJournal()
      .then((pending) => (pending ? sync.flushQuietly() : undefined))
      .catch(() => {});
  }, PERIODIC_FLUSH_MS);
  timer.unref();
  return {
    sync,
    async close() {
      clearInterval(timer);
      const i = target.meta.afterCommit.indexOf(hook);
      if (i >= 0) target.meta.afterCommit.splice(i, 1);
      await sync.flushQuietly();
    },
  };
}

/**
 * Adopts the directory under the `job:adopt` lease (so that `berth import` and `berth serve` never adopt at
 * once); the state row says "running" until the last batch is written. Null when another process finished
 * adopting while this one waited.
 */
export async function adoptDirectory(
  queries: DistributionQueries,
  meta: SqlMetadataStore,
  layout: DistributionTree,
  dataDir: string,
  maxManifestBytes: number,
  hooks: {
    linksWanted: boolean | undefined;
    onStart?: (resumed: boolean) => void;
    onListed?: (count: number) => void;
    onProgress?: (p: AdoptionProgress) => void;
    onWait?: (holder: string) => void;
  },
): Promise<AdoptionReport | null> {
  const lease = await waitForLease(meta, ADOPT_LOCK, { timeoutMs: 24 * 3_600_000, onWait: hooks.onWait });
  if (!lease) throw new Error("could not take the adoption lease");
  try {
    const before = await queries.state();
    if (before.adoption === "done" || before.links !== "off") return null;
    await queries.setState({ adoption: "running" });
    hooks.onStart?.(before.adoption === "running");
    // PostgreSQL: DistributionQueries' own multi-row INSERTs, a few statements per batch.
    if (meta.metadata.dialect === "sqlite") queries.bulk = new SqliteBulkImport(sqlitePath(dataDir));
    const report = await adoptDistribution(
      { layout, queries },
      {
        workerFile: adoptWorkerFile(),
        maxManifestBytes,
        onListed: hooks.onListed,
        onProgress: hooks.onProgress,
        // Rows per transaction; smaller only to exercise interrupted adoptions in tests.
        batchRows: Number(process.env.BERTH_ADOPT_BATCH_ROWS) || undefined,
      },
    );
    await queries.setState({
      adoption: "done",
      adoptedAt: Date.now(),
      report: JSON.stringify(report),
      links: hooks.linksWanted === false ? "off" : "on",
    });
    return report;
  } finally {
    queries.bulk?.close();
    queries.bulk = null;
    await lease.release();
  }
}

/** Adopts with progress lines in the log. */
async function adoptAtStartup(
  queries: DistributionQueries,
  meta: SqlMetadataStore,
  layout: DistributionTree,
  log: Log,
  linksWanted: boolean | undefined,
  dataDir: string,
  config: Config,
): Promise<void> {
  const report = await adoptDirectory(queries, meta, layout, dataDir, config.http.maxmanifestbytes, {
    linksWanted,
    onWait: (holder) => log.info({ holder }, `waiting for another adoption of this directory (${holder})`),
    onStart: (resumed) =>
      log.info(
        { directory: layout.repositories, resumed },
        resumed
          ? "adopting registry:2 repositories again: the last adoption was interrupted (rows already written are kept)"
          : "adopting registry:2 repositories in place (no blob is copied); the registry answers once this is done",
      ),
    onListed: (count) => log.info({ repositories: count }, `adopting: ${count} repositories found`),
    onProgress: (p) => {
      const { rate, left } = pace(p);
      log.info(
        { ...p, perSecond: Math.round(rate), etaSeconds: Math.round(left) },
        `adopting: ${p.repositories}/${p.repositoriesTotal} repositories, ${p.manifests} manifests, ` +
          `${Math.round(rate)} repositories/s, about ${Math.round(left)} s left`,
      );
    },
  });
  if (!report) return;
  const lines = summaryLines(report);
  log.info(
    {
      repositories: report.repositories,
      manifests: report.manifests,
      tags: report.tags,
      links: report.links,
      blobs: report.blobs,
      uploads: report.uploads,
      problems: report.problems.length,
      durationMs: report.durationMs,
    },
    `registry:2 data ${lines[0]}`,
  );
  for (const p of report.problems)
    log.warn(
      { problem: p.kind, path: p.path, detail: p.detail },
      `adoption: ${p.kind}: ${p.path}: ${PROBLEM_TEXT[p.kind]}`,
    );
}

/** Repositories per second so far, and seconds left at that pace. */
export function pace(p: AdoptionProgress): { rate: number; left: number } {
  const rate = p.repositories / Math.max(p.elapsedMs / 1000, 0.001);
  return { rate, left: rate > 0 ? (p.repositoriesTotal - p.repositories) / rate : 0 };
}
