// Metric 11: adopting a registry:2 data directory in place (issue 12). A Distribution 2.8 tree of
// opts.repos repositories with 10 tagged manifests each (100,000 manifests at the default 10,000
// repositories) is written file by file once (bench/lib/distribution-tree.mjs, cached); Berth is started on
// it, and the time until it answers GET /v2/ (adoption included) is measured.
// Distribution needs no adoption; for scale, its time to list one catalog page of the same tree is given.
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { writeSyntheticTree } from "../lib/distribution-tree.mjs";
import { request } from "../lib/http.mjs";
import { makeRow } from "../lib/report.mjs";
import { startServer, stopServer } from "../lib/servers.mjs";
import { errorMessage, log, median } from "../lib/util.mjs";

const TREE_VERSION = "adopt-v1";
const MANIFESTS_PER_REPOSITORY = 10;

async function prepareTree(ctx, repositories) {
  const name = `${TREE_VERSION}-${repositories}x${MANIFESTS_PER_REPOSITORY}`;
  const cached = path.join(ctx.opts.cacheDir, "trees", name);
  if (existsSync(path.join(cached, "complete.json"))) return cached;
  const tmp = `${cached}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const t0 = performance.now();
  log(
    `adopt: writing a registry:2 tree of ${repositories} repositories x ${MANIFESTS_PER_REPOSITORY} manifests`,
  );
  await writeSyntheticTree(path.join(tmp, "data"), {
    repositories,
    manifestsPerRepository: MANIFESTS_PER_REPOSITORY,
    onProgress: (done) => {
      if (done % 2000 === 0) log(`adopt: ${done}/${repositories} repositories written`);
    },
  });
  writeFileSync(
    path.join(tmp, "complete.json"),
    `${JSON.stringify({ seconds: (performance.now() - t0) / 1000 })}\n`,
  );
  rmSync(cached, { recursive: true, force: true });
  mkdirSync(path.dirname(cached), { recursive: true });
  renameSync(tmp, cached);
  return cached;
}

export default {
  id: "adopt",
  title: "Adopting a registry:2 directory",
  async run(ctx) {
    const repositories = ctx.opts.repos;
    const manifests = repositories * MANIFESTS_PER_REPOSITORY;
    const tree = await prepareTree(ctx, repositories);
    const result = { berth: { samples: [], details: [] }, distribution: { samples: [], details: [] } };
    const notes = [];
    const reps = Math.min(ctx.opts.reps, 2);
    // Served from the cached tree itself: adoption only reads registry:2's files and writes Berth's own under
    // berth/, which is removed before and after; nothing is pushed or deleted, and in this tree every blob is
    // referenced, so a background collection would find nothing to take. (A copy of ~600,000 files and
    // ~300,000 folders takes longer than the adoption.)
    const data = path.join(tree, "data");
    const berthDir = path.join(data, "berth");
    for (let i = 0; i < reps; i++) {
      rmSync(berthDir, { recursive: true, force: true });
      const t0 = performance.now();
      let server;
      try {
        server = await startServer({
          key: "berth",
          impl: ctx.implFor("berth"),
          dataDir: data,
          workDir: path.join(ctx.opts.workDir, "adopt"),
          extraArgs: ctx.opts.berthArgs,
          readyTimeoutMs: 600_000,
        });
        const seconds = (performance.now() - t0) / 1000;
        const res = await request(`${server.baseUrl}/v2/_catalog?n=100`, { response: "json" });
        if (res.status !== 200 || res.json?.repositories?.length !== Math.min(100, repositories))
          throw new Error(`after adoption GET /v2/_catalog?n=100 answered ${res.status}`);
        result.berth.samples.push(seconds);
        log(
          `adopt: Berth answered after ${seconds.toFixed(1)} s (${Math.round(manifests / seconds)} manifests/s)`,
        );
      } catch (err) {
        result.berth.error = errorMessage(err);
        break;
      } finally {
        if (server) await stopServer(server);
        rmSync(berthDir, { recursive: true, force: true });
      }
    }
    result.berth.value = result.berth.samples.length > 0 ? median(result.berth.samples) : null;

    // Distribution on the same tree (only read): one catalog page.
    const distDir = data;
    let dist;
    try {
      dist = await startServer({
        key: "distribution",
        dataDir: distDir,
        workDir: path.join(ctx.opts.workDir, "adopt"),
      });
      const times = [];
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        const res = await request(`${dist.baseUrl}/v2/_catalog?n=100`, { response: "discard" });
        if (res.status !== 200) throw new Error(`GET /v2/_catalog?n=100 answered ${res.status}`);
        times.push((performance.now() - t0) / 1000);
      }
      result.distribution.samples = times;
      result.distribution.value = median(times);
      notes.push(
        `distribution: no adoption; its value is one GET /v2/_catalog?n=100 of the same tree (${(median(times) * 1000).toFixed(0)} ms)`,
      );
    } catch (err) {
      result.distribution.error = errorMessage(err);
    } finally {
      if (dist) await stopServer(dist);
    }
    notes.push(
      `berth: time from start to the first answer, adoption of ${manifests.toLocaleString("en-US")} manifests included`,
    );
    return [
      makeRow({
        id: "adopt",
        label: `15. Adopt registry:2 data: ${repositories.toLocaleString("en-US")} repositories, ${manifests.toLocaleString("en-US")} manifests`,
        unit: "s",
        higherIsBetter: false,
        result,
        target: { kind: "berth", max: 60 },
        notes,
      }),
    ];
  },
};
