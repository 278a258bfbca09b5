#!/usr/bin/env node
// Berth vs Distribution benchmark. See docs/benchmarks.md.
//
//   npm run bench                        # full run (~10-15 min on 2 cores)
//   npm run bench -- --quick             # smaller, faster run
//   npm run bench -- --only 1,3,manifest-get
//
// Progress goes to stderr; the Markdown table goes to stdout and bench/out/results.md, the raw
// numbers to bench/out/results.json.
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { setDigestCacheFile } from "./lib/blobdata.mjs";
import { Context } from "./lib/context.mjs";
import { makeRow, writeOutputs } from "./lib/report.mjs";
import { BERTH_MAIN, DISTRIBUTION_BIN, killAllSync, REPO_ROOT } from "./lib/servers.mjs";
import { errorMessage, formatBytes, log, MiB, run } from "./lib/util.mjs";
import { METRICS } from "./metrics/index.mjs";

const USAGE = `Usage: node bench/run.mjs [options]

  --only <list>        comma-separated metric ids or numbers to run (default: all)
                       ${METRICS.map((m, i) => `${i + 1}=${m.id}`).join(", ")}
  --quick              smaller, faster run (256 MiB blob, 3 repetitions, 1,000 repositories,
                       10,000 blobs for pg-gc, one repetition of the S3 pushes)
  --reps <n>           repetitions per measurement and server (default 5, quick 3)
  --blob-mib <n>       size of the large blob in MiB (default 1024, quick 256)
  --repos <n>          repositories for the catalog metric (default 10000, quick 1000)
  --ab-seconds <s>     target duration of each ab run (default 4, quick 1.5)
  --berth-impl <impl>  "berth" (default) or "distribution" (a second Distribution stands in for
                       Berth; useful to check the bench itself: every ratio should be about 1)
  --berth-arg <arg>    extra argument for "berth serve" (repeatable)
  --no-cache           do not reuse or store populated data directories under bench/out/cache
  --keep               keep the temporary work directory (data dirs, server logs)
  --work-dir <dir>     where data directories and logs go (default: a new directory in ${os.tmpdir()})
  -h, --help           this text

The pg-* rows need PostgreSQL 15 (BENCH_PG_BIN, default /usr/lib/postgresql/15/bin), the s3-* rows Ceph
radosgw (../shared/tools/ceph-s3, or BENCH_CEPH_S3_TOOLS; s3-replicas needs both); without them they are
skipped. BENCH_PG_GC_BLOBS sets the blobs pg-gc collects (default 100000), BENCH_GC_BLOBS those of gc.
`;

function parseOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: "string" },
      quick: { type: "boolean", default: false },
      reps: { type: "string" },
      "blob-mib": { type: "string" },
      repos: { type: "string" },
      "ab-seconds": { type: "string" },
      "berth-impl": { type: "string", default: "berth" },
      "berth-arg": { type: "string", multiple: true, default: [] },
      "no-cache": { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
      "work-dir": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const quick = values.quick;
  const num = (name, fallback) => {
    if (values[name] === undefined) return fallback;
    const n = Number(values[name]);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number`);
    return n;
  };
  if (!["berth", "distribution"].includes(values["berth-impl"])) {
    throw new Error(`--berth-impl must be "berth" or "distribution"`);
  }
  let selected = METRICS;
  if (values.only) {
    const wanted = values.only
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    selected = wanted.map((w) => {
      const byNumber = /^\d+$/.test(w) ? METRICS[Number(w) - 1] : undefined;
      const metric = byNumber ?? METRICS.find((m) => m.id === w);
      if (!metric) throw new Error(`unknown metric "${w}"; known: ${METRICS.map((m) => m.id).join(", ")}`);
      return metric;
    });
    selected = METRICS.filter((m) => selected.includes(m));
  }
  const blobBytes = Math.round(num("blob-mib", quick ? 256 : 1024) * MiB);
  const outDir = path.join(REPO_ROOT, "bench", "out");
  const workDir = values["work-dir"]
    ? path.resolve(values["work-dir"])
    : path.join(os.tmpdir(), `berth-bench-${process.pid}-${Date.now().toString(36)}`);
  return {
    mode: quick ? "quick" : "full",
    metrics: selected,
    reps: Math.round(num("reps", quick ? 3 : 5)),
    blobBytes,
    blobLabel: formatBytes(blobBytes),
    repos: Math.round(num("repos", quick ? 1000 : 10_000)),
    abSeconds: num("ab-seconds", quick ? 1.5 : 4),
    skopeoReps: quick ? 2 : 3,
    skopeoLayers: 5,
    skopeoLayerBytes: (quick ? 8 : 20) * MiB,
    catalogRequests: quick ? 100 : 200,
    catalogSeconds: quick ? 1.5 : 3,
    populateConcurrency: 16,
    berthImpl: values["berth-impl"],
    berthArgs: values["berth-arg"],
    useCache: !values["no-cache"],
    keep: values.keep,
    outDir,
    cacheDir: path.join(outDir, "cache"),
    workDir,
  };
}

/** A short hash of the built Berth (every file under dist/), to key cached data directories. */
function berthBuildHash() {
  const dist = path.dirname(path.dirname(BERTH_MAIN));
  const hash = createHash("sha256");
  const walk = (dir) => {
    let entries;
    try {
      entries = readdirSync(dir).sort();
    } catch {
      return;
    }
    for (const name of entries) {
      if (name.endsWith(".map")) continue;
      const full = path.join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else hash.update(path.relative(dist, full)).update(readFileSync(full));
    }
  };
  walk(dist);
  return hash.digest("hex").slice(0, 12);
}

async function versions() {
  let commit = "unknown";
  try {
    commit = (await run("git", ["-C", REPO_ROOT, "rev-parse", "--short", "HEAD"])).stdout.trim();
  } catch {
    // Not a git checkout.
  }
  let distribution = "unknown";
  try {
    const out = (await run(DISTRIBUTION_BIN, ["--version"])).stdout.trim();
    distribution = out.split(/\s+/).pop();
  } catch (err) {
    distribution = `unavailable (${errorMessage(err)})`;
  }
  const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, "package.json"), "utf8"));
  const build = berthBuildHash();
  return { berth: `${pkg.version} (commit ${commit}, build ${build})`, berthBuild: build, distribution };
}

/**
 * Sequential write speed of the disk under the work directory, flushed with fdatasync (dd, 512 MiB):
 * the ceiling for a push that is durable when acknowledged.
 */
async function diskWriteMBps(dir) {
  const file = path.join(dir, "dd-probe");
  try {
    const res = await run("dd", ["if=/dev/zero", `of=${file}`, "bs=4M", "count=128", "conv=fdatasync"], {
      timeoutMs: 120_000,
    });
    const m = res.stderr.match(/^(\d+) bytes.*copied, ([0-9.]+) s/m);
    return m ? Number(m[1]) / 1e6 / Number(m[2]) : null;
  } catch {
    return null;
  } finally {
    rmSync(file, { force: true });
  }
}

function loadAverage() {
  return os.loadavg().map((x) => Math.round(x * 100) / 100);
}

function machine() {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    memGiB: Math.round(os.totalmem() / 1024 ** 3),
    kernel: `${os.type()} ${os.release()}`,
    node: process.versions.node,
  };
}

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  mkdirSync(opts.cacheDir, { recursive: true });
  mkdirSync(opts.workDir, { recursive: true });
  setDigestCacheFile(path.join(opts.cacheDir, "digests.json"));
  const ver = await versions();
  const ctx = new Context(opts);
  ctx.versionKey = (impl) =>
    impl === "berth"
      ? `build-${ver.berthBuild}`
      : `distribution-${ver.distribution.replace(/[^A-Za-z0-9.+_-]/g, "_")}`;

  const onSignal = (signal) => {
    log(`${signal}: stopping servers`);
    killAllSync();
    process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const startedAt = new Date().toISOString();
  const loadAtStart = loadAverage();
  const wantsDisk = opts.metrics.some((m) => ["push-mono", "push-chunked", "rss"].includes(m.id));
  const diskMBps = wantsDisk ? await diskWriteMBps(opts.workDir) : null;
  if (diskMBps !== null) log(`disk: ${diskMBps.toFixed(0)} MB/s sequential write with fdatasync`);
  log(
    `${opts.mode} run: ${opts.metrics.map((m) => m.id).join(", ")}; blob ${opts.blobLabel}, ${opts.reps} reps, ` +
      `${opts.repos} repos; Berth ${opts.berthImpl === "berth" ? ver.berth : "= Distribution stand-in"}; work dir ${opts.workDir}`,
  );
  const rows = [];
  const timings = {};
  try {
    for (const metric of opts.metrics) {
      const t0 = performance.now();
      log(`── ${metric.id}: ${metric.title}`);
      try {
        rows.push(...(await metric.run(ctx)));
      } catch (err) {
        log(`${metric.id} failed: ${err?.stack ?? err}`);
        const error = `metric failed: ${errorMessage(err)}`;
        rows.push(
          makeRow({
            id: metric.id,
            label: metric.title,
            unit: "",
            higherIsBetter: true,
            result: { berth: { error }, distribution: { error } },
          }),
        );
      }
      timings[metric.id] = Math.round((performance.now() - t0) / 100) / 10;
      log(`── ${metric.id} done in ${timings[metric.id]} s`);
    }
  } finally {
    await ctx.stopAll();
    if (!opts.keep) rmSync(opts.workDir, { recursive: true, force: true });
    else log(`work directory kept: ${opts.workDir}`);
  }

  const results = {
    mode: opts.mode,
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: {
      ...machine(),
      loadAverage: { start: loadAtStart, end: loadAverage() },
      diskWriteMBps: diskMBps,
    },
    versions: {
      berth: opts.berthImpl === "berth" ? ver.berth : `stand-in: Distribution ${ver.distribution}`,
      distribution: ver.distribution,
    },
    options: {
      metrics: opts.metrics.map((m) => m.id),
      reps: opts.reps,
      blobBytes: opts.blobBytes,
      blobLabel: opts.blobLabel,
      repos: opts.repos,
      abSeconds: opts.abSeconds,
      skopeoReps: opts.skopeoReps,
      skopeoLayers: opts.skopeoLayers,
      skopeoLayerBytes: opts.skopeoLayerBytes,
      berthImpl: opts.berthImpl,
      berthArgs: opts.berthArgs,
    },
    secondsPerMetric: timings,
    rows,
  };
  const markdown = writeOutputs(opts.outDir, results);
  process.stdout.write(`${markdown}\n`);
  log(`wrote ${path.relative(process.cwd(), path.join(opts.outDir, "results.md"))} and results.json`);
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err?.stack ?? err}\n`);
  killAllSync();
  process.exit(1);
});
