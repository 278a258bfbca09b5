// Metric 4: manifest GET by tag, 64 concurrent keep-alive connections (ab).
import { abNotes, abSeries } from "../lib/ab-metric.mjs";
import { OCI_MANIFEST } from "../lib/registry.mjs";
import { makeRow } from "../lib/report.mjs";
import { ensureSmallImage, SMALL_REPO, SMALL_TAG } from "../lib/small-image.mjs";

export default {
  id: "manifest-get",
  title: "Manifest GET by tag",
  async run(ctx) {
    const pair = await ctx.servers();
    const result = await abSeries(ctx, pair, {
      label: "manifest-get",
      urlFor: (server) => `${server.baseUrl}/v2/${SMALL_REPO}/manifests/${SMALL_TAG}`,
      abOptions: { concurrency: 64, headers: [`Accept: ${OCI_MANIFEST}`] },
      setup: (server) => ensureSmallImage(ctx, server),
    });
    return [
      makeRow({
        id: "manifest-get",
        label: "4. Manifest GET by tag, 64 connections",
        unit: "req/s",
        higherIsBetter: true,
        result,
        target: { kind: "ratio", min: 10 },
        notes: abNotes(result),
      }),
    ];
  },
};
