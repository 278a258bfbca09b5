// PostgreSQL row: blob HEAD, 64 connections (ab -i), Berth on PostgreSQL beside Berth on SQLite and
// Distribution (issue 10).
import { abNotes, abSeries } from "../lib/ab-metric.mjs";
import { pgSkip, pgTrio, skippedRows, TRIO, trioRows } from "../lib/scaleout.mjs";
import { benchSmallImage, ensureSmallImage, SMALL_REPO } from "../lib/small-image.mjs";

const LABEL = "PG-2. Blob HEAD, 64 connections";

export default {
  id: "pg-blob-head",
  title: "Blob HEAD, Berth on PostgreSQL",
  async run(ctx) {
    const skip = pgSkip();
    if (skip) return skippedRows(this, skip, [["pg-blob-head", LABEL, "req/s"]]);
    const trio = await pgTrio(ctx);
    const { layerDigest } = benchSmallImage();
    const result = await abSeries(ctx, trio, {
      label: "pg-blob-head",
      keys: TRIO,
      urlFor: (server) => `${server.baseUrl}/v2/${SMALL_REPO}/blobs/${layerDigest}`,
      abOptions: { concurrency: 64, head: true },
      setup: (server) => ensureSmallImage(ctx, server),
    });
    return trioRows(result, {
      id: "pg-blob-head",
      label: LABEL,
      unit: "req/s",
      higherIsBetter: true,
      target: null,
      notes: abNotes(result),
    });
  },
};
