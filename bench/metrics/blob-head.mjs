// Metric 5: blob HEAD, 64 concurrent keep-alive connections (ab -i).
import { abNotes, abSeries } from "../lib/ab-metric.mjs";
import { makeRow } from "../lib/report.mjs";
import { benchSmallImage, ensureSmallImage, SMALL_REPO } from "../lib/small-image.mjs";

export default {
  id: "blob-head",
  title: "Blob HEAD",
  async run(ctx) {
    const pair = await ctx.servers();
    const { layerDigest } = benchSmallImage();
    const result = await abSeries(ctx, pair, {
      label: "blob-head",
      urlFor: (server) => `${server.baseUrl}/v2/${SMALL_REPO}/blobs/${layerDigest}`,
      abOptions: { concurrency: 64, head: true },
      setup: (server) => ensureSmallImage(ctx, server),
    });
    return [
      makeRow({
        id: "blob-head",
        label: "5. Blob HEAD, 64 connections",
        unit: "req/s",
        higherIsBetter: true,
        result,
        target: { kind: "ratio", min: 10 },
        notes: abNotes(result),
      }),
    ];
  },
};
