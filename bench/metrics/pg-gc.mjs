// PostgreSQL row: `berth gc` of BENCH_PG_GC_BLOBS unreferenced blobs (100,000 in a full run, 10,000
// with --quick) while ab GETs a manifest with 8 keep-alive connections; Berth on PostgreSQL beside
// Berth on SQLite, each on a fresh server with its scheduled collector off.
//
// Seeding goes through the API: tiny distinct blobs pushed as monolithic POST ?digest= uploads from
// one curl process, 16 in flight, spread over 100 repositories; no manifest refers to them. Then ab
// runs for a few seconds with no collection (the baseline p99), then again from just before
// `berth gc --grace-period 0s` starts until it exits; ab's report gives the p99 (whole ms).
// Distribution is not measured: it collects only offline (see the gc row).
import { createHash } from "node:crypto";
import path from "node:path";
import { runAb, startAb } from "../lib/ab.mjs";
import { curlBatch } from "../lib/curl.mjs";
import { OCI_MANIFEST } from "../lib/registry.mjs";
import { makeRow } from "../lib/report.mjs";
import {
  NO_SCHEDULED_GC,
  newDatabase,
  pgSkip,
  skippedRows,
  startExtra,
  stopExtra,
} from "../lib/scaleout.mjs";
import { BERTH_MAIN } from "../lib/servers.mjs";
import { ensureSmallImage, SMALL_REPO, SMALL_TAG } from "../lib/small-image.mjs";
import { errorMessage, log, median, run, sleep } from "../lib/util.mjs";

const CLIENTS = 8;
const KEYS = ["pg", "sqlite"];
const LABEL = "PG-5. berth gc of unreferenced blobs";
const OFFLINE = "not measured: Distribution collects only offline, with the registry stopped (see row 9)";

function blobBody(key, i) {
  return `berth-bench pg-gc ${key} ${i}`;
}

async function seed(ctx, server, key, count) {
  const requests = [];
  for (let i = 0; i < count; i++) {
    const body = blobBody(key, i);
    const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
    requests.push({
      url: `${server.baseUrl}/v2/gc/junk-${i % 100}/blobs/uploads/?digest=${digest}`,
      method: "POST",
      headers: ["Content-Type: application/octet-stream"],
      data: body,
    });
  }
  const { seconds } = await curlBatch(path.join(ctx.opts.workDir, "pg-gc", `${key}-seed.curl`), requests, {
    expect: [201],
  });
  return seconds;
}

async function measure(ctx, server, count) {
  const url = `${server.baseUrl}/v2/${SMALL_REPO}/manifests/${SMALL_TAG}`;
  const abOptions = { concurrency: CLIENTS, headers: [`Accept: ${OCI_MANIFEST}`] };
  await runAb(url, { ...abOptions, requests: 2000 });
  const baseline = startAb(url, abOptions);
  await sleep(ctx.opts.mode === "quick" ? 2000 : 5000);
  const base = await baseline.stop();
  const load = startAb(url, abOptions);
  await sleep(500);
  const t0 = performance.now();
  let gc;
  let during;
  try {
    gc = await run(
      process.execPath,
      [
        BERTH_MAIN,
        "gc",
        "--config",
        server.configFile,
        "--data-dir",
        server.dataDir,
        "--grace-period",
        "0s",
        "--json",
        "--no-list",
      ],
      { timeoutMs: 60 * 60_000 },
    );
  } finally {
    during = await load.stop();
  }
  const seconds = (performance.now() - t0) / 1000;
  const report = JSON.parse(gc.stdout);
  const removed = report.blobs?.length ?? null;
  if (removed !== null && removed < count)
    throw new Error(`berth gc removed ${removed} blobs, expected ${count}`);
  return {
    value: seconds,
    p99: during.percentilesMs["99"],
    p50: during.percentilesMs["50"],
    requests: during.complete,
    baselineP99: base.percentilesMs["99"],
    removed,
    collectMs: report.durationMs,
    transactions: report.transactions,
    longestTransactionMs: report.longestTransactionMs,
  };
}

export default {
  id: "pg-gc",
  title: "berth gc of unreferenced blobs, Berth on PostgreSQL",
  async run(ctx) {
    const count = Number(process.env.BENCH_PG_GC_BLOBS ?? (ctx.opts.mode === "quick" ? 10_000 : 100_000));
    const label = `${LABEL} (${count.toLocaleString("en-US")})`;
    const skip = pgSkip();
    if (skip) {
      return skippedRows(this, skip, [
        ["pg-gc-time", label, "s"],
        ["pg-gc-p99", `${LABEL}: manifest GET p99 during it`, "ms"],
      ]);
    }
    const result = {};
    const seeded = {};
    for (const key of KEYS) {
      result[key] = { samples: [], details: [], error: null };
      let server;
      try {
        const berthConfig = [...NO_SCHEDULED_GC, ...(key === "pg" ? await newDatabase(ctx, "bench_gc") : [])];
        server = await startExtra(ctx, "pg-gc", { key: `berth-${key}`, impl: "berth", berthConfig });
        await ensureSmallImage(ctx, server);
        seeded[key] = await seed(ctx, server, key, count);
        log(`pg-gc: ${key} seeded with ${count} blobs in ${seeded[key].toFixed(1)} s`);
        await ctx.sync();
        const detail = await measure(ctx, server, count);
        result[key].samples.push(detail.value);
        result[key].details.push(detail);
        result[key].value = detail.value;
        log(
          `pg-gc ${key}: ${detail.value.toFixed(2)} s, manifest GET p99 ${detail.p99} ms (baseline ${detail.baselineP99} ms)`,
        );
      } catch (err) {
        result[key].error = errorMessage(err);
        log(`pg-gc ${key} FAILED: ${result[key].error}`);
      } finally {
        await stopExtra(ctx, server);
      }
    }
    const p99 = {};
    for (const key of KEYS) {
      const d = result[key].details;
      p99[key] = {
        samples: d.map((x) => x.p99),
        value: d.length ? median(d.map((x) => x.p99)) : null,
        error: result[key].error,
        details: d,
      };
    }
    const offline = { error: OFFLINE };
    const notes = KEYS.flatMap((key) =>
      result[key].details.map(
        (d) =>
          `${key}: ${d.removed ?? "?"} blobs removed in ${d.transactions ?? "?"} transactions (longest ${d.longestTransactionMs ?? "?"} ms); seeding took ${seeded[key].toFixed(1)} s; ` +
          `${d.requests.toLocaleString("en-US")} GETs (${CLIENTS} connections) during it, p50 ${d.p50} ms, p99 ${d.p99} ms, p99 with no collection ${d.baselineP99} ms`,
      ),
    );
    const rows = (res, { id, label: l, unit, target }) => [
      makeRowFor(
        id,
        `${l}, Berth on PostgreSQL`,
        unit,
        // Said once, in the first row; the others show n/a.
        { berth: res.pg, distribution: id === "pg-gc-time" ? offline : {} },
        target,
        id === "pg-gc-time" ? notes : [],
      ),
      makeRowFor(
        `${id}-sqlite`,
        `${l}, Berth on SQLite (same run)`,
        unit,
        { berth: res.sqlite, distribution: {} },
        null,
        [],
      ),
    ];
    return [
      ...rows(result, { id: "pg-gc-time", label, unit: "s", target: null }),
      ...rows(p99, {
        id: "pg-gc-p99",
        label: `${LABEL}: manifest GET p99 during it`,
        unit: "ms",
        target: { kind: "berth", max: 20 },
      }),
    ];
  },
};

function makeRowFor(id, label, unit, result, target, notes) {
  return makeRow({ id, label, unit, higherIsBetter: false, result, target, notes });
}
