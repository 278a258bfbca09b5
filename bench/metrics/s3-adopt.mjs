// S3 row (issue 20): adopting a registry:2 bucket in place. A Distribution 2.8 tree of opts.repos
// repositories with one tagged image each (10,000 at the default) is written once on disk
// (bench/lib/distribution-tree.mjs, cached) and uploaded object by object into a new bucket on the run's
// radosgw, as registry:2's s3 driver lays it out; Berth is started on the bucket with a new data directory,
// and the time until it answers GET /v2/ (adoption included) is measured. Distribution needs no adoption;
// for scale, its time to list one catalog page of the same bucket is given.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { writeSyntheticTree } from "../lib/distribution-tree.mjs";
import { request } from "../lib/http.mjs";
import { makeRow } from "../lib/report.mjs";
import { newBucket, s3Skip, skippedRows } from "../lib/scaleout.mjs";
import { startServer, stopServer } from "../lib/servers.mjs";
import { errorMessage, log, median } from "../lib/util.mjs";

const TREE_VERSION = "s3-adopt-v1";
const LABEL = ["s3-adopt", "S3-10. Adopt a registry:2 bucket in place", "s"];

async function prepareTree(ctx, repositories) {
  const cached = path.join(ctx.opts.cacheDir, "trees", `${TREE_VERSION}-${repositories}x1`);
  if (existsSync(path.join(cached, "complete.json"))) return path.join(cached, "data");
  const tmp = `${cached}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  log(`s3-adopt: writing a registry:2 tree of ${repositories} repositories x 1 image`);
  await writeSyntheticTree(path.join(tmp, "data"), { repositories, manifestsPerRepository: 1 });
  writeFileSync(path.join(tmp, "complete.json"), "{}\n");
  rmSync(cached, { recursive: true, force: true });
  mkdirSync(path.dirname(cached), { recursive: true });
  renameSync(tmp, cached);
  return path.join(cached, "data");
}

/** Every file under `root`, as keys relative to it. */
function* files(root, rel = "") {
  for (const e of readdirSync(path.join(root, rel), { withFileTypes: true })) {
    const child = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) yield* files(root, child);
    else if (e.isFile()) yield child;
  }
}

/** Uploads the tree into the bucket, 64 PUTs at a time; returns how many objects. */
async function upload(s3, root) {
  const client = new S3Client({
    region: s3.region,
    endpoint: s3.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  const keys = files(root);
  let count = 0;
  try {
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        for (let next = keys.next(); !next.done; next = keys.next()) {
          const body = readFileSync(path.join(root, next.value));
          await client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: next.value, Body: body }));
          if (++count % 10_000 === 0) log(`s3-adopt: ${count} objects uploaded`);
        }
      }),
    );
  } finally {
    client.destroy();
  }
  return count;
}

export default {
  id: "s3-adopt",
  title: "Adopting a registry:2 bucket",
  async run(ctx) {
    const skip = s3Skip();
    if (skip) return skippedRows(this, skip, [LABEL]);
    const repositories = ctx.opts.repos;
    const tree = await prepareTree(ctx, repositories);
    const s3 = await newBucket(ctx, "bench-adopt");
    const t0 = performance.now();
    const objects = await upload(s3, tree);
    log(`s3-adopt: ${objects} objects in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const result = { berth: { samples: [] }, distribution: { samples: [] } };
    const notes = [];
    const workDir = path.join(ctx.opts.workDir, "s3-adopt");
    for (let i = 0; i < Math.min(ctx.opts.reps, 2); i++) {
      // A new data directory each time: an empty database, so the bucket is adopted again.
      const dataDir = path.join(workDir, `berth-data-${i}`);
      rmSync(dataDir, { recursive: true, force: true });
      let server;
      const started = performance.now();
      try {
        server = await startServer({
          key: "berth",
          impl: ctx.implFor("berth"),
          dataDir,
          workDir,
          extraArgs: ctx.opts.berthArgs,
          s3,
          readyTimeoutMs: 900_000,
        });
        const seconds = (performance.now() - started) / 1000;
        const res = await request(`${server.baseUrl}/v2/_catalog?n=100`, { response: "json" });
        if (res.status !== 200 || res.json?.repositories?.length !== Math.min(100, repositories))
          throw new Error(`after adoption GET /v2/_catalog?n=100 answered ${res.status}`);
        result.berth.samples.push(seconds);
        log(
          `s3-adopt: Berth answered after ${seconds.toFixed(1)} s (${Math.round(repositories / seconds)} repositories/s)`,
        );
      } catch (err) {
        result.berth.error = errorMessage(err);
        break;
      } finally {
        if (server) await stopServer(server);
        rmSync(dataDir, { recursive: true, force: true });
      }
    }
    result.berth.value = result.berth.samples.length > 0 ? median(result.berth.samples) : null;
    let dist;
    try {
      dist = await startServer({
        key: "distribution",
        dataDir: path.join(workDir, "distribution"),
        workDir,
        s3,
      });
      const times = [];
      for (let i = 0; i < 3; i++) {
        const t = performance.now();
        const res = await request(`${dist.baseUrl}/v2/_catalog?n=100`, { response: "discard" });
        if (res.status !== 200) throw new Error(`GET /v2/_catalog?n=100 answered ${res.status}`);
        times.push((performance.now() - t) / 1000);
      }
      result.distribution.samples = times;
      result.distribution.value = median(times);
      notes.push(
        `distribution: no adoption; its value is one GET /v2/_catalog?n=100 of the same bucket (${(median(times) * 1000).toFixed(0)} ms)`,
      );
    } catch (err) {
      result.distribution.error = errorMessage(err);
    } finally {
      if (dist) await stopServer(dist);
    }
    notes.push(
      `berth: time from start to the first answer, adoption of ${objects.toLocaleString("en-US")} objects' worth of registry:2 data included`,
    );
    return [
      makeRow({
        id: LABEL[0],
        label: `${LABEL[1]}: ${repositories.toLocaleString("en-US")} repositories`,
        unit: LABEL[2],
        higherIsBetter: false,
        result,
        target: { kind: "berth", max: 300 },
        notes,
      }),
    ];
  },
};
