// Metric 7: GET /v2/_catalog?n=100 on registries holding opts.repos repositories; median latency.
// Runs on its own pair of servers whose data directories are populated once (and cached).
import path from "node:path";
import { preparePopulatedDataDir } from "../lib/datacache.mjs";
import { expectStatus, keepAliveAgent, request } from "../lib/http.mjs";
import { mountBlob, pushSmallImage, putManifest, smallImage } from "../lib/registry.mjs";
import { makeRow } from "../lib/report.mjs";
import { SERVER_KEYS } from "../lib/servers.mjs";
import { errorMessage, log, mapLimit, median, percentile } from "../lib/util.mjs";

const CATALOG_DATA_VERSION = "catalog-v1";
const PAGE = 100;

export function catalogRepo(i) {
  return `catalog/repo-${String(i).padStart(5, "0")}`;
}

/** Pushes one tiny image, then mounts its two blobs into count-1 more repositories and tags each. */
async function populate(server, count, concurrency) {
  const image = smallImage("catalog", 1024);
  const first = catalogRepo(0);
  await pushSmallImage(server, first, "latest", image);
  let done = 1;
  const t0 = performance.now();
  await mapLimit(
    Array.from({ length: count - 1 }, (_, i) => i + 1),
    concurrency,
    async (i) => {
      const repo = catalogRepo(i);
      await mountBlob(server, repo, image.configDigest, first, image.config);
      await mountBlob(server, repo, image.layerDigest, first, image.layer);
      await putManifest(server, repo, "latest", image.manifest);
      done++;
      if (done % 1000 === 0) {
        const rate = done / ((performance.now() - t0) / 1000);
        log(`catalog: ${server.label} has ${done}/${count} repositories (${rate.toFixed(0)} repos/s)`);
      }
    },
  );
}

export default {
  id: "catalog",
  title: "Catalog listing",
  async run(ctx) {
    const count = ctx.opts.repos;
    const population = {};
    const dataDirs = {};
    const failed = {};
    for (const key of SERVER_KEYS) {
      const impl = ctx.implFor(key);
      // Entries for the same server, data layout and size but another server version are stale.
      const prefix = `${impl}-${key}-${CATALOG_DATA_VERSION}-${count}-`;
      const cacheKey = `${prefix}${ctx.versionKey(impl)}`;
      dataDirs[key] = path.join(ctx.opts.workDir, "catalog", `${key}-data`);
      try {
        population[key] = await preparePopulatedDataDir(ctx, {
          key,
          impl,
          cacheKey,
          prefix,
          targetDir: dataDirs[key],
          // The catalog servers are only read from, so Distribution's tree may be hard-linked.
          linkCopy: true,
          populate: (server) => populate(server, count, ctx.opts.populateConcurrency),
        });
        if (!population[key].cached) {
          log(
            `catalog: populated ${key} with ${count} repositories in ${population[key].seconds.toFixed(1)} s`,
          );
        }
      } catch (err) {
        failed[key] = `populating ${count} repositories: ${errorMessage(err)}`;
        log(`catalog: ${key}: ${failed[key]}`);
      }
    }
    const pair = await ctx.startPair("catalog", { dataDirs, errors: failed });
    const agent = keepAliveAgent(1);
    const pages = {};
    try {
      const result = await ctx.alternate(
        pair,
        ctx.opts.reps,
        async (server) => {
          const url = `${server.baseUrl}/v2/_catalog?n=${PAGE}`;
          const times = [];
          const started = performance.now();
          while (
            times.length < ctx.opts.catalogRequests &&
            (times.length < 5 || performance.now() - started < ctx.opts.catalogSeconds * 1000)
          ) {
            const t0 = performance.now();
            const res = await request(url, { agent, response: "json" });
            times.push(performance.now() - t0);
            expectStatus(res, 200, `GET /v2/_catalog?n=${PAGE}`);
            if (times.length === 1) {
              const repos = res.json?.repositories;
              if (!Array.isArray(repos))
                throw new Error(`GET /v2/_catalog?n=${PAGE}: no "repositories" array`);
              pages[server.key] = { returned: repos.length, link: res.headers.link ?? null, first: repos[0] };
            }
          }
          return { value: median(times), p95: percentile(times, 95), requests: times.length };
        },
        {
          label: "catalog",
          setup: async (server) => {
            // Warm-up: a few requests before timing (caches, JIT, connection).
            for (let i = 0; i < 5; i++) {
              const res = await request(`${server.baseUrl}/v2/_catalog?n=${PAGE}`, {
                agent,
                response: "discard",
              });
              expectStatus(res, 200, `GET /v2/_catalog?n=${PAGE} (warm-up)`);
            }
          },
        },
      );
      const notes = [];
      for (const key of SERVER_KEYS) {
        const page = pages[key];
        if (page && page.returned !== Math.min(PAGE, count)) {
          notes.push(
            `${key} returned ${page.returned} repositories for n=${PAGE} (expected ${Math.min(PAGE, count)})`,
          );
        }
        if (page && count > PAGE && !page.link) notes.push(`${key} sent no Link header for the next page`);
        if (population[key] && !population[key].cached) {
          notes.push(`${key}: populating ${count} repositories took ${population[key].seconds.toFixed(1)} s`);
        }
        const details = result[key].details;
        if (details.length > 0) {
          notes.push(
            `${key}: p95 ${median(details.map((d) => d.p95)).toFixed(2)} ms over ${details.map((d) => d.requests).join("/")} requests`,
          );
        }
      }
      return [
        makeRow({
          id: "catalog",
          label: `7. GET /v2/_catalog?n=100, ${count.toLocaleString("en-US")} repositories`,
          unit: "ms",
          higherIsBetter: false,
          result,
          target: { kind: "berth", max: 5 },
          notes,
        }),
      ];
    } finally {
      agent.destroy();
      await ctx.stopPair(pair);
    }
  },
};
