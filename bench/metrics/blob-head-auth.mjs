// Metric 5b: blob HEAD with htpasswd auth, 64 concurrent keep-alive connections (ab -i), both servers
// reading the same bcrypt htpasswd file made by `htpasswd -Bbn`. Distribution runs bcrypt on every
// request; Berth caches a successful check for a short time.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { abNotes, abSeries } from "../lib/ab-metric.mjs";
import { makeRow } from "../lib/report.mjs";
import { benchSmallImage, ensureSmallImage, SMALL_REPO } from "../lib/small-image.mjs";

const USER = "bench";
const PASSWORD = "bench-password";

export default {
  id: "blob-head-auth",
  title: "Blob HEAD with htpasswd auth",
  async run(ctx) {
    // The image goes in through the open main pair; the authenticated pair serves the same data.
    const main = await ctx.servers();
    for (const server of Object.values(main)) if (!server.error) await ensureSmallImage(ctx, server);
    const dir = path.join(ctx.opts.workDir, "auth");
    mkdirSync(dir, { recursive: true });
    const htpasswd = path.join(dir, "htpasswd");
    writeFileSync(htpasswd, execFileSync("htpasswd", ["-Bbn", USER, PASSWORD]));
    const pair = await ctx.startPair("auth", {
      htpasswd,
      dataDirs: { berth: main.berth?.dataDir, distribution: main.distribution?.dataDir },
    });
    try {
      const { layerDigest } = benchSmallImage();
      const authorization = `Authorization: Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString("base64")}`;
      const result = await abSeries(ctx, pair, {
        label: "blob-head-auth",
        urlFor: (server) => `${server.baseUrl}/v2/${SMALL_REPO}/blobs/${layerDigest}`,
        abOptions: { concurrency: 64, head: true, headers: [authorization] },
        setup: async () => {},
      });
      return [
        makeRow({
          id: "blob-head-auth",
          label: "5b. Blob HEAD with htpasswd auth, 64 connections",
          unit: "req/s",
          higherIsBetter: true,
          result,
          target: { kind: "ratio", min: 20 },
          notes: abNotes(result),
        }),
      ];
    } finally {
      await ctx.stopPair(pair);
    }
  },
};
