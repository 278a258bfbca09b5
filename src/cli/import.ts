import path from "node:path";
import { distributionLinksWanted } from "../config/data-dir.js";
import { loadConfig } from "../config/load.js";
import type { Config, ConfigInput } from "../config/schema.js";
import { openMetadata } from "../metadata/db.js";
import { DistributionQueries } from "../metadata/distribution-queries.js";
import { SqlMetadataStore } from "../metadata/store.js";
import { databaseTarget } from "../metadata/target.js";
import {
  type AdoptionProgress,
  type AdoptionReport,
  adoptDistribution,
  summaryLines,
} from "../registry/adopt.js";
import { DistributionLayout, type DistributionTree } from "../storage/distribution-layout.js";
import { adoptWorkerFile } from "./adopt-worker-file.js";
import { adoptDirectory, pace } from "./distribution.js";
import { distributionTree } from "./runtime.js";

/**
 * `berth import <dir>` (issue 12): adopts a registry:2 data directory in place, as `berth serve` does at
 * start-up, with a progress bar on a terminal; `--dry-run` reads everything and writes nothing (not even
 * the database).
 */

export interface ImportFlags {
  dryRun?: boolean;
  /** Where the database is when the source is a bucket. */
  dataDir?: string;
  config?: string;
  json?: boolean;
}

/** A one-line progress bar on a terminal; a line every few seconds elsewhere. */
export class ProgressBar {
  private last = 0;
  private drawn = false;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly width = 30,
  ) {}

  update(p: AdoptionProgress): void {
    const { rate, left } = pace(p);
    const ratio = p.repositoriesTotal > 0 ? p.repositories / p.repositoriesTotal : 1;
    const text =
      `${p.repositories}/${p.repositoriesTotal} repositories, ${p.manifests} manifests, ` +
      `${Math.round(rate)}/s, ${p.repositories === p.repositoriesTotal ? "done" : `about ${Math.ceil(left)} s left`}`;
    if (this.stream.isTTY) {
      const full = Math.round(ratio * this.width);
      this.stream.write(`\r[${"#".repeat(full)}${".".repeat(this.width - full)}] ${text}\x1b[K`);
      this.drawn = true;
      return;
    }
    const now = Date.now();
    if (now - this.last < 2000 && p.repositories !== p.repositoriesTotal) return;
    this.last = now;
    this.stream.write(`${text}\n`);
  }

  done(): void {
    if (this.drawn) this.stream.write("\n");
    this.drawn = false;
  }
}

export async function runImport(source: string | undefined, flags: ImportFlags): Promise<void> {
  const bucket = source ? /^s3:\/\/([^/]+)(\/.*)?$/.exec(source) : null;
  const dir = source && !bucket ? source : undefined;
  if (dir && flags.dataDir && path.resolve(dir) !== path.resolve(flags.dataDir))
    throw new Error(
      "a registry:2 directory is adopted in place: it is the data directory (leave out --data-dir)",
    );
  const dataDir = dir ?? flags.dataDir;
  const { config } = loadConfig({
    file: flags.config,
    flags: (dataDir ? { storage: { filesystem: { rootdirectory: dataDir } } } : {}) as ConfigInput,
    flagNames: dataDir ? { "storage.filesystem.rootdirectory": dir ? "<dir>" : "--data-dir" } : {},
  });
  // The database lives in the data directory (or in PostgreSQL) whichever store holds the blobs.
  const root = path.resolve(config.storage.filesystem.rootdirectory);
  let layout: DistributionTree;
  let close = () => {};
  if (bucket || (!dir && config.storage.s3)) {
    const s3 = config.storage.s3;
    if (!s3)
      throw new Error(
        `${source}: the bucket's endpoint and credentials come from storage.s3 (REGISTRY_STORAGE_S3_*), which is not configured`,
      );
    const options = bucket ? { ...s3, bucket: bucket[1] as string, rootdirectory: bucket[2] ?? "" } : s3;
    const store = new (await import("../storage/s3.js")).S3BlobStore(options);
    close = () => store.close();
    layout = await distributionTree(store, root);
  } else {
    layout = new DistributionLayout(root);
  }
  try {
    if (!(await layout.present())) {
      throw new Error(`${layout.repositories} holds no registry:2 repositories`);
    }
    await importTree(layout, root, config, flags);
  } finally {
    close();
  }
}

async function importTree(
  layout: DistributionTree,
  root: string,
  config: Config,
  flags: ImportFlags,
): Promise<void> {
  const bar = new ProgressBar();
  const err = (line: string) => process.stderr.write(`${line}\n`);
  let report: AdoptionReport | null;
  if (flags.dryRun) {
    report = await adoptDistribution(
      { layout, queries: null },
      {
        dryRun: true,
        onProgress: (p) => bar.update(p),
        onListed: (n) => err(`${n} repositories found`),
        workerFile: adoptWorkerFile(),
        maxManifestBytes: config.http.maxmanifestbytes,
      },
    );
  } else {
    // The configured database: the SQLite file in the directory, or PostgreSQL (database.url).
    const metadata = await openMetadata(databaseTarget(config.database), root);
    try {
      const meta = new SqlMetadataStore(metadata);
      const queries = new DistributionQueries(meta.db, metadata.dialect);
      const state = await queries.state();
      if (state.adoption === "done" || state.links !== "off") {
        const when = state.adoptedAt ? ` on ${new Date(state.adoptedAt).toISOString()}` : "";
        process.stdout.write(
          `${layout.repositories} was adopted already${when}; Berth has kept its link files since, so it is not imported again ` +
            `(to start over from what registry:2 wrote, stop Berth and ${
              metadata.dialect === "postgres" ? "give it an empty database" : "move berth/berth.db away"
            })\n`,
        );
        return;
      }
      report = await adoptDirectory(queries, meta, layout, root, config.http.maxmanifestbytes, {
        linksWanted: distributionLinksWanted(config),
        onWait: (holder) => err(`another process is adopting this directory (${holder}); waiting`),
        onStart: (resumed) => {
          if (resumed)
            err("the last adoption was interrupted: running it again (rows already written are kept)");
        },
        onListed: (n) => err(`${n} repositories found`),
        onProgress: (p) => bar.update(p),
      });
    } finally {
      await metadata.close();
    }
  }
  bar.done();
  if (!report) {
    process.stdout.write(`${layout.repositories} was adopted by another process meanwhile\n`);
    return;
  }
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  for (const line of summaryLines(report)) process.stdout.write(`${line}\n`);
}
