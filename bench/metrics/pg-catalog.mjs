// PostgreSQL row: GET /v2/_catalog?n=100 over every page of opts.repos repositories (10,000 in a
// full run), Berth on PostgreSQL beside Berth on SQLite and Distribution, each on fresh servers.
//
// Seeding goes through the registries' own API, from one curl process with 16 transfers in flight:
// one small image is pushed to catalog/repo-00000, its two blobs are mounted into every other
// repository, then its manifest is PUT to each. Timing: one curl process GETs every page in turn
// (`n=100&last=<the previous page's last name>`) over one keep-alive connection, `--reps` times;
// the rows give the median and the p99 of the time per page (curl's time_total).
import { writeFileSync } from "node:fs";
import path from "node:path";
import { curlBatch, curlTimes } from "../lib/curl.mjs";
import { expectStatus, request } from "../lib/http.mjs";
import { OCI_MANIFEST, pushSmallImage, smallImage } from "../lib/registry.mjs";
import { newDatabase, pgSkip, skippedRows, startExtra, stopExtra, TRIO, trioRows } from "../lib/scaleout.mjs";
import { errorMessage, log, median, percentile } from "../lib/util.mjs";

const PAGE = 100;
const LABEL = "PG-4. GET /v2/_catalog?n=100, every page";

function repoName(i) {
  return `catalog/repo-${String(i).padStart(5, "0")}`;
}

async function seed(ctx, server, count) {
  const dir = path.join(ctx.opts.workDir, "pg-catalog");
  const image = smallImage("pg-catalog", 1024);
  const first = repoName(0);
  await pushSmallImage(server, first, "latest", image);
  const manifestFile = path.join(dir, "manifest.json");
  writeFileSync(manifestFile, image.manifest);
  const t0 = performance.now();
  const mounts = [];
  for (let i = 1; i < count; i++) {
    for (const digest of [image.configDigest, image.layerDigest]) {
      mounts.push({
        url: `${server.baseUrl}/v2/${repoName(i)}/blobs/uploads/?mount=${digest}&from=${first}`,
        data: "",
      });
    }
  }
  await curlBatch(path.join(dir, `${server.key}-mounts.curl`), mounts, { expect: [201] });
  const puts = [];
  for (let i = 1; i < count; i++) {
    puts.push({
      url: `${server.baseUrl}/v2/${repoName(i)}/manifests/latest`,
      method: "PUT",
      headers: [`Content-Type: ${OCI_MANIFEST}`],
      dataFile: manifestFile,
    });
  }
  await curlBatch(path.join(dir, `${server.key}-manifests.curl`), puts, { expect: [201] });
  return (performance.now() - t0) / 1000;
}

export default {
  id: "pg-catalog",
  title: "Catalog pages, Berth on PostgreSQL",
  async run(ctx) {
    const skip = pgSkip();
    if (skip) {
      return skippedRows(this, skip, [
        ["pg-catalog", `${LABEL}, median`, "ms"],
        ["pg-catalog-p99", `${LABEL}, p99`, "ms"],
      ]);
    }
    const count = ctx.opts.repos;
    const servers = {};
    const seeded = {};
    try {
      for (const key of TRIO) {
        try {
          const options =
            key === "distribution"
              ? { key: "distribution", impl: ctx.implFor("distribution") }
              : key === "pg"
                ? { key: "berth-pg", impl: "berth", berthConfig: await newDatabase(ctx, "bench_catalog") }
                : { key: "berth-sqlite", impl: ctx.implFor("berth") };
          servers[key] = await startExtra(ctx, "pg-catalog", options);
          seeded[key] = await seed(ctx, servers[key], count);
          log(`pg-catalog: ${key} seeded with ${count} repositories in ${seeded[key].toFixed(1)} s`);
          const res = await request(`${servers[key].baseUrl}/v2/_catalog?n=${PAGE}`, { response: "json" });
          expectStatus(res, 200, "GET /v2/_catalog");
          const got = res.json?.repositories?.length;
          if (got !== Math.min(PAGE, count)) throw new Error(`first page holds ${got} repositories`);
          if (count > PAGE && !res.headers.link) throw new Error("no Link header on the first page");
        } catch (err) {
          servers[key] = { key, error: errorMessage(err) };
          log(`pg-catalog: ${key}: ${servers[key].error}`);
        }
      }
      const urls = (server) =>
        Array.from({ length: Math.ceil(count / PAGE) }, (_, p) =>
          p === 0
            ? `${server.baseUrl}/v2/_catalog?n=${PAGE}`
            : `${server.baseUrl}/v2/_catalog?n=${PAGE}&last=${encodeURIComponent(repoName(p * PAGE - 1))}`,
        );
      const result = await ctx.alternate(
        servers,
        ctx.opts.reps,
        async (server) => {
          const times = await curlTimes(
            path.join(ctx.opts.workDir, "pg-catalog", "pages.curl"),
            urls(server),
          );
          return { value: median(times), p99: percentile(times, 99), pages: times.length };
        },
        {
          label: "pg-catalog",
          keys: TRIO,
          setup: (server) =>
            curlTimes(path.join(ctx.opts.workDir, "pg-catalog", "warm.curl"), urls(server).slice(0, 10)),
        },
      );
      const p99 = {};
      for (const key of TRIO) {
        const details = result[key].details;
        p99[key] = {
          samples: details.map((d) => d.p99),
          value: details.length > 0 ? median(details.map((d) => d.p99)) : null,
          error: result[key].error,
          details,
        };
      }
      const notes = TRIO.filter((k) => seeded[k] !== undefined).map(
        (k) =>
          `${k}: seeding ${count.toLocaleString("en-US")} repositories through the API took ${seeded[k].toFixed(1)} s`,
      );
      const title = `${LABEL} of ${count.toLocaleString("en-US")} repositories`;
      return [
        ...trioRows(result, {
          id: "pg-catalog",
          label: `${title}, median`,
          unit: "ms",
          higherIsBetter: false,
          target: { kind: "berth", max: 10 },
          notes,
        }),
        ...trioRows(p99, {
          id: "pg-catalog-p99",
          label: `${title}, p99`,
          unit: "ms",
          higherIsBetter: false,
          target: null,
        }),
      ];
    } finally {
      for (const key of TRIO) await stopExtra(ctx, servers[key]);
    }
  },
};
