// Metric 9: garbage collection over 100,000 blobs of which half are garbage (issue 6).
//
// Both registries get the same store, pushed over HTTP and cached: IMAGES images of a config, two
// layers and the manifest itself (4 blobs each, all unique), spread over 100 repositories; then
// every other image is deleted by digest, leaving half of the blobs unreferenced.
//
// Berth collects online: `berth gc --grace-period 0s` runs beside the serving registry while 8
// keep-alive clients GET manifests of kept images; the row reports the wall time of the collection
// and the p99 latency of the manifest GETs served meanwhile (beside the p99 of the same load with no
// collection running). Distribution 2.8 can only collect offline: `docker-registry garbage-collect
// config.yml` with the registry stopped; its wall time is reported beside Berth's, and no GET is
// served meanwhile.
//
// BENCH_GC_BLOBS overrides the number of blobs (default 100,000; 20,000 with --quick).
import { readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pseudoRandomBytes, sha256Digest } from "../lib/blobdata.mjs";
import { preparePopulatedDataDir } from "../lib/datacache.mjs";
import { keepAliveAgent, request } from "../lib/http.mjs";
import { OCI_CONFIG, OCI_MANIFEST, pushSmallBlob, putManifest } from "../lib/registry.mjs";
import { makeRow } from "../lib/report.mjs";
import { BERTH_MAIN, DISTRIBUTION_BIN, SERVER_KEYS, startServer, stopServer } from "../lib/servers.mjs";
import { errorMessage, log, mapLimit, median, percentile, run, sleep } from "../lib/util.mjs";

const GC_DATA_VERSION = "gc-v1";
const REPOS = 100;
const GET_CLIENTS = 8;
const WARMUP_MS = 2000;
const BASELINE_MS = 5000;

function gcRepo(i) {
  return `gc/repo-${String(i % REPOS).padStart(3, "0")}`;
}

function gcTag(i) {
  return `t${i}`;
}

/** Image i: a config and two layers of a few hundred bytes, unique to it. */
function gcImage(i) {
  const layers = [0, 1].map((l) => pseudoRandomBytes(`gc-layer-${i}-${l}`, 200 + ((i * 7 + l * 13) % 400)));
  const config = Buffer.from(
    JSON.stringify({ architecture: "amd64", os: "linux", config: { Env: [`GC_IMAGE=${i}`] } }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha256Digest(config), size: config.length },
      layers: layers.map((l) => ({
        mediaType: "application/vnd.oci.image.layer.v1.tar",
        digest: sha256Digest(l),
        size: l.length,
      })),
    }),
  );
  return { config, layers, manifest, digest: sha256Digest(manifest) };
}

async function populate(server, images, concurrency) {
  const t0 = performance.now();
  let done = 0;
  await mapLimit(
    Array.from({ length: images }, (_, i) => i),
    concurrency,
    async (i) => {
      const img = gcImage(i);
      const repo = gcRepo(i);
      await pushSmallBlob(server, repo, img.config);
      for (const layer of img.layers) await pushSmallBlob(server, repo, layer);
      await putManifest(server, repo, gcTag(i), img.manifest);
      if (++done % 2500 === 0) {
        log(
          `gc: ${server.label} has ${done}/${images} images (${(done / ((performance.now() - t0) / 1000)).toFixed(0)} images/s)`,
        );
      }
    },
  );
  // Half becomes garbage: every odd image is deleted by digest.
  await mapLimit(
    Array.from({ length: Math.floor(images / 2) }, (_, k) => 2 * k + 1),
    concurrency,
    async (i) => {
      const res = await request(`${server.baseUrl}/v2/${gcRepo(i)}/manifests/${gcImage(i).digest}`, {
        method: "DELETE",
      });
      if (res.status !== 202) throw new Error(`DELETE ${gcRepo(i)}@${gcImage(i).digest}: HTTP ${res.status}`);
    },
  );
}

function countBlobFiles(dataDir) {
  const root = path.join(dataDir, "docker", "registry", "v2", "blobs", "sha256");
  let n = 0;
  for (const fan of readdirSync(root)) n += readdirSync(path.join(root, fan)).length;
  return n;
}

/** Keep-alive clients GETting manifests of kept (even) images until stopped; latencies in ms. */
function manifestLoad(server, images) {
  const agent = keepAliveAgent(GET_CLIENTS);
  const times = [];
  const errors = [];
  let stopped = false;
  const kept = Math.ceil(images / 2);
  const client = async (c) => {
    let k = c * 997;
    while (!stopped) {
      const i = 2 * (k++ % kept);
      const t0 = performance.now();
      try {
        const res = await request(`${server.baseUrl}/v2/${gcRepo(i)}/manifests/${gcTag(i)}`, {
          agent,
          response: "discard",
          headers: { Accept: OCI_MANIFEST },
        });
        times.push(performance.now() - t0);
        if (res.status !== 200) errors.push(`GET ${gcRepo(i)}:${gcTag(i)}: HTTP ${res.status}`);
      } catch (err) {
        errors.push(errorMessage(err));
      }
    }
  };
  const running = Promise.all(Array.from({ length: GET_CLIENTS }, (_, c) => client(c)));
  return {
    times,
    errors,
    async stop() {
      stopped = true;
      await running;
      agent.destroy();
    },
  };
}

/**
 * Starts Berth with its own scheduled collector off, so that only the measured `berth gc` collects
 * (in its configuration file: startServer removes REGISTRY_* variables from the environment).
 */
function startBerthWithoutSchedule(ctx, dataDir) {
  return startServer({
    key: "berth",
    impl: "berth",
    dataDir,
    workDir: path.join(ctx.opts.workDir, "gc"),
    extraArgs: ctx.opts.berthArgs,
    berthConfig: ["gc:", "  enabled: false"],
  });
}

async function berthRep(ctx, dataDir, images) {
  const server = await startBerthWithoutSchedule(ctx, dataDir);
  try {
    // Warm-up (connections, caches, the first pull marks), then the same load with no collection running.
    const warmup = manifestLoad(server, images);
    await sleep(WARMUP_MS);
    await warmup.stop();
    const baseline = manifestLoad(server, images);
    await sleep(BASELINE_MS);
    await baseline.stop();
    const load = manifestLoad(server, images);
    const t0 = performance.now();
    const gc = await run(
      process.execPath,
      [BERTH_MAIN, "gc", "--data-dir", dataDir, "--grace-period", "0s", "--json", "--no-list"],
      {
        timeoutMs: 60 * 60_000,
      },
    );
    const seconds = (performance.now() - t0) / 1000;
    await load.stop();
    const report = JSON.parse(gc.stdout);
    const expected = Math.floor(images / 2) * 4;
    if (report.blobs.length !== expected)
      throw new Error(`berth gc removed ${report.blobs.length} blobs, expected ${expected}`);
    // The kept images are intact.
    for (const i of [0, 2, images - 2 - (images % 2)]) {
      const res = await request(`${server.baseUrl}/v2/${gcRepo(i)}/manifests/${gcTag(i)}`, {
        response: "sha256",
        headers: { Accept: OCI_MANIFEST },
      });
      if (res.status !== 200 || `sha256:${res.sha256}` !== gcImage(i).digest)
        throw new Error(`kept image ${i} is damaged after gc`);
    }
    return {
      value: seconds,
      p99: percentile(load.times, 99),
      p50: median(load.times),
      baselineP99: percentile(baseline.times, 99),
      requests: load.times.length,
      errors: load.errors.length,
      firstError: load.errors[0] ?? null,
      collectMs: report.durationMs,
      transactions: report.transactions,
      longestTransactionMs: report.longestTransactionMs,
      removed: report.blobs.length,
    };
  } finally {
    await stopServer(server);
  }
}

async function distributionRep(ctx, dataDir, images) {
  const configFile = path.join(ctx.opts.workDir, "gc", "distribution-gc.yml");
  writeFileSync(
    configFile,
    [
      "version: 0.1",
      "log:",
      "  level: error",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${dataDir}`,
      "  delete:",
      "    enabled: true",
      "http:",
      "  addr: 127.0.0.1:0",
      "",
    ].join("\n"),
  );
  const before = countBlobFiles(dataDir);
  const t0 = performance.now();
  await run(DISTRIBUTION_BIN, ["garbage-collect", configFile], { timeoutMs: 60 * 60_000 });
  const seconds = (performance.now() - t0) / 1000;
  const removed = before - countBlobFiles(dataDir);
  const expected = Math.floor(images / 2) * 4;
  if (removed !== expected) throw new Error(`garbage-collect removed ${removed} blobs, expected ${expected}`);
  return { value: seconds, removed };
}

export default {
  id: "gc",
  title: "Garbage collection, half of the blobs garbage",
  async run(ctx) {
    const blobs = Number(process.env.BENCH_GC_BLOBS ?? (ctx.opts.mode === "quick" ? 20_000 : 100_000));
    const images = Math.max(4, Math.round(blobs / 4));
    const reps = ctx.opts.mode === "quick" ? 1 : 2;
    const label = `${(images * 4).toLocaleString("en-US")} blobs`;
    const result = {};
    for (const key of SERVER_KEYS) result[key] = { samples: [], details: [], error: null };
    for (let rep = 0; rep < reps; rep++) {
      for (const key of rep % 2 === 0 ? SERVER_KEYS : [...SERVER_KEYS].reverse()) {
        if (result[key].error) continue;
        const impl = ctx.implFor(key);
        const prefix = `${impl}-${key}-gc-`;
        const dataDir = path.join(ctx.opts.workDir, "gc", `${key}-data`);
        try {
          const population = await preparePopulatedDataDir(ctx, {
            key,
            impl,
            cacheKey: `${prefix}${ctx.versionKey(impl)}-${GC_DATA_VERSION}-${images}`,
            prefix,
            targetDir: dataDir,
            populate: (server) => populate(server, images, ctx.opts.populateConcurrency),
          });
          if (!population.cached)
            log(`gc: populated ${key} with ${images} images in ${population.seconds.toFixed(1)} s`);
          await ctx.sync();
          const detail =
            impl === "berth"
              ? await berthRep(ctx, dataDir, images)
              : await distributionRep(ctx, dataDir, images);
          result[key].samples.push(detail.value);
          result[key].details.push(detail);
          log(
            `gc ${key} rep ${rep + 1}/${reps}: ${detail.value.toFixed(2)} s${detail.p99 !== undefined ? `, manifest GET p99 ${detail.p99.toFixed(2)} ms` : ""}`,
          );
        } catch (err) {
          result[key].error = errorMessage(err);
          log(`gc ${key} rep ${rep + 1}/${reps} FAILED: ${result[key].error}`);
        }
      }
    }
    for (const key of SERVER_KEYS)
      result[key].value = result[key].samples.length > 0 ? median(result[key].samples) : null;

    const berthDetails = result.berth.details;
    const p99 = {
      berth: {
        samples: berthDetails.map((d) => d.p99),
        value: berthDetails.length > 0 ? median(berthDetails.map((d) => d.p99)) : null,
        error: result.berth.error,
        details: berthDetails,
      },
      distribution: { samples: [], value: null, error: null, details: [] },
    };
    const notes = [];
    for (const d of berthDetails) {
      notes.push(
        `berth: collection ${(d.collectMs / 1000).toFixed(2)} s inside the process (${d.transactions} transactions, longest ${d.longestTransactionMs} ms), ` +
          `${d.removed.toLocaleString("en-US")} blobs removed, online`,
      );
    }
    for (const d of result.distribution.details)
      notes.push(
        `distribution: ${d.removed.toLocaleString("en-US")} blobs removed, offline (the registry stopped)`,
      );
    const p99Notes = berthDetails.map(
      (d) =>
        `berth: ${d.requests.toLocaleString("en-US")} manifest GETs (${GET_CLIENTS} clients) during the collection, ${d.errors} failed` +
        `${d.firstError ? ` (${d.firstError})` : ""}; p50 ${d.p50.toFixed(2)} ms; p99 with no collection running ${d.baselineP99.toFixed(2)} ms`,
    );
    p99Notes.push(
      "distribution: serves nothing while it collects (garbage-collect needs the registry stopped or read-only)",
    );
    return [
      makeRow({
        id: "gc-time",
        label: `9. Garbage collection of ${label}, half garbage (Distribution offline)`,
        unit: "s",
        higherIsBetter: false,
        result,
        notes,
      }),
      makeRow({
        id: "gc-manifest-p99",
        label: `9b. Manifest GET p99 during that collection`,
        unit: "ms",
        higherIsBetter: false,
        result: p99,
        notes: p99Notes,
      }),
    ];
  },
};
