import path from "node:path";
import { loadConfig } from "../config/load.js";
import type { ConfigInput } from "../config/schema.js";
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
import { DistributionLayout, hasDistributionRepositories } from "../storage/distribution-layout.js";
import { adoptWorkerFile } from "./adopt-worker-file.js";
import { adoptDirectory, pace } from "./distribution.js";

/**
 * `berth import <dir>` (issue 12): adopts a registry:2 data directory in place, as `berth serve` does at
 * start-up, with a progress bar on a terminal; `--dry-run` reads everything and writes nothing (not even
 * the database).
 */

export interface ImportFlags {
  dryRun?: boolean;
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

export async function runImport(dir: string, flags: ImportFlags): Promise<void> {
  const { config } = loadConfig({
    file: flags.config,
    flags: { storage: { filesystem: { rootdirectory: dir } } } as ConfigInput,
    flagNames: { "storage.filesystem.rootdirectory": "<dir>" },
  });
  const root = path.resolve(dir);
  if (!(await hasDistributionRepositories(root))) {
    throw new Error(`${root} holds no registry:2 repositories (no docker/registry/v2/repositories folder)`);
  }
  const layout = new DistributionLayout(root);
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
          `${root} was adopted already${when}; Berth has kept its link files since, so it is not imported again ` +
            `(to start over from what registry:2 wrote, stop Berth and ${
              metadata.dialect === "postgres" ? "give it an empty database" : "move berth/berth.db away"
            })\n`,
        );
        return;
      }
      report = await adoptDirectory(queries, meta, layout, {
        linksWanted: config.storage.filesystem.distributionlinks,
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
    process.stdout.write(`${root} was adopted by another process meanwhile\n`);
    return;
  }
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  for (const line of summaryLines(report)) process.stdout.write(`${line}\n`);
}
