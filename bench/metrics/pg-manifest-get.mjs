// PostgreSQL row: manifest GET by tag, 64 connections (ab), Berth on PostgreSQL beside Berth on
// SQLite and Distribution (issue 10).
import { abNotes, abSeries } from "../lib/ab-metric.mjs";
import { OCI_MANIFEST } from "../lib/registry.mjs";
import { pgSkip, pgTrio, skippedRows, TRIO, trioRows } from "../lib/scaleout.mjs";
import { ensureSmallImage, SMALL_REPO, SMALL_TAG } from "../lib/small-image.mjs";

const LABEL = "PG-1. Manifest GET by tag, 64 connections";

export default {
  id: "pg-manifest-get",
  title: "Manifest GET by tag, Berth on PostgreSQL",
  async run(ctx) {
    const skip = pgSkip();
    if (skip) return skippedRows(this, skip, [["pg-manifest-get", LABEL, "req/s"]]);
    const trio = await pgTrio(ctx);
    const result = await abSeries(ctx, trio, {
      label: "pg-manifest-get",
      keys: TRIO,
      urlFor: (server) => `${server.baseUrl}/v2/${SMALL_REPO}/manifests/${SMALL_TAG}`,
      abOptions: { concurrency: 64, headers: [`Accept: ${OCI_MANIFEST}`] },
      setup: (server) => ensureSmallImage(ctx, server),
    });
    return trioRows(result, {
      id: "pg-manifest-get",
      label: LABEL,
      unit: "req/s",
      higherIsBetter: true,
      target: { kind: "ratio", min: 8 },
      notes: abNotes(result),
    });
  },
};
