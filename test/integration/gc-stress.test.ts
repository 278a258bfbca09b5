/**
 * Stress: garbage collection running in a loop (the server's own scheduled collector in two worker
 * processes, and `berth gc` from the CLI beside them, all competing for the one lease) while clients
 * push (images sharing base layers, indexes, referrers), move tags, delete and pull in parallel.
 *
 * Afterwards: every image still tagged pulls byte for byte (indexes with all their children, and their
 * referrers are still there); no blob that a manifest references is missing (checked in the database
 * and on disk); no request failed because of the collector; and the collector did remove garbage.
 *
 * GC_STRESS_SECONDS sets how long the clients run (default 30).
 *
 * The workload and the checks live in gc-stress-workload.ts (the replicas test runs them too).
 */
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { openTestDb } from "../helpers/metadata-db.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { berth, sleep, writeConfig } from "./gc-helpers.js";
import {
  expectCleanLogs,
  expectNothingMissingNoGarbage,
  expectTaggedImagesWhole,
  filesystemBlobs,
  runStressWorkload,
} from "./gc-stress-workload.js";

const SECONDS = Number(process.env.GC_STRESS_SECONDS ?? 30);
const GRACE = "6s"; // pushes must PUT their manifest within half of it after their HEADs

let server: Berth;
let dir: string;
let cli: string[];

beforeAll(async () => {
  dir = tempDir("berth-gc-stress-");
  const config = writeConfig(dir, [
    "gc:",
    "  interval: 500ms",
    `  graceperiod: ${GRACE}`,
    "  batchsize: 20",
    "  pause: 5ms",
    "  untagged:",
    "    enabled: true",
    `    olderthan: ${GRACE}`,
    "storage:",
    "  delete:",
    "    enabled: true",
    "  maintenance:",
    "    uploadpurging:",
    "      age: 30s",
    "      interval: 1s",
  ]);
  mkdirSync(path.join(dir, "data"));
  server = await startBerth({ args: ["-c", config], dataDir: path.join(dir, "data"), workers: 2 });
  cli = ["-c", config, "--data-dir", server.dataDir];
});

afterAll(async () => {
  await server?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test(
  `GC in a loop while clients push, tag, delete and pull for ${SECONDS}s`,
  async () => {
    const url = server.url;
    const result = await runStressWorkload({
      urls: [url],
      seconds: SECONDS,
      collector: async () => {
        const r = await berth(
          ["gc", ...cli, "--untagged", "--grace-period", GRACE, "--no-list", "--wait", "30s"],
          { env: { REGISTRY_GC_UNTAGGED_OLDERTHAN: GRACE } },
        );
        return r.code === 0 ? null : `berth gc (CLI): exit ${r.code}: ${r.stderr}${r.stdout}`;
      },
    });
    const { counts } = result;

    // Settle: everything garbage is now older than the grace period; one more collection takes it.
    await sleep(6500);
    const final = await berth(
      ["gc", ...cli, "--untagged", "--grace-period", GRACE, "--no-list", "--json", "--wait", "60s"],
      {
        env: { REGISTRY_GC_UNTAGGED_OLDERTHAN: GRACE },
      },
    );
    expect(final.code, final.stderr).toBe(0);

    // 1. Every image still tagged pulls byte for byte; its referrers are still there.
    const tagged = await expectTaggedImagesWhole(url, result);

    // 2. No blob that a manifest references is missing: rows and files. 3. And garbage is gone: no row
    // nobody uses, no file without a row.
    const db = await openTestDb(server.dataDir);
    let referenced = 0;
    try {
      const files = filesystemBlobs(server.dataDir);
      referenced = await expectNothingMissingNoGarbage(db, files.storedSize, files.storedCount);
    } finally {
      await db.close();
    }

    // 4. No request failed, no job failed, no 5xx; and the collectors did work while clients ran.
    expect(result.failures).toEqual([]);
    expect(result.headRaces).toEqual([]);
    const { runs, blobs: removedBlobs, manifests: removedManifests } = expectCleanLogs(server.logs);
    console.log(
      `gc stress: ${SECONDS}s, ${JSON.stringify(counts)}, HEAD races ${result.headRaces.length}, ${runs} scheduled collections removed ${removedBlobs} blobs and ${removedManifests} manifests; ` +
        `at the end ${tagged} tags, ${referenced} referenced blobs`,
    );
    expect(counts.pushes).toBeGreaterThan(20);
    expect(counts.pulls).toBeGreaterThan(20);
    expect(counts.deletes).toBeGreaterThan(10);
    expect(runs + counts.collectorRuns).toBeGreaterThan(5);
    expect(removedBlobs).toBeGreaterThan(0);
    expect(removedManifests).toBeGreaterThan(0);
  },
  (SECONDS + 150) * 1000,
);
