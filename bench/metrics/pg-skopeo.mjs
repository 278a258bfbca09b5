// PostgreSQL row: `skopeo copy` of the five-layer image (~100 MB) from an OCI layout into the
// registry, a new image each repetition; Berth on PostgreSQL beside Berth on SQLite and Distribution.
import { REF_NAME } from "../lib/oci-layout.mjs";
import { pgSkip, pgTrio, skippedRows, TRIO, trioRows } from "../lib/scaleout.mjs";
import { layout, skopeoCopy } from "./skopeo.mjs";

const LABEL = "PG-3. skopeo copy of a five-layer image, OCI layout → registry";

export default {
  id: "pg-skopeo",
  title: "skopeo push, Berth on PostgreSQL",
  async run(ctx) {
    const skip = pgSkip();
    if (skip) return skippedRows(this, skip, [["pg-skopeo-push", LABEL, "s"]]);
    const trio = await pgTrio(ctx);
    const reps = ctx.opts.skopeoReps;
    const images = Array.from({ length: reps }, (_, rep) => layout(ctx, `pg-skopeo-push-${rep}`));
    const result = await ctx.alternate(
      trio,
      reps,
      async (server, rep) => {
        await ctx.sync();
        const seconds = await skopeoCopy(
          `oci:${images[rep].dir}:${REF_NAME}`,
          `docker://${server.addr}/bench/pg-skopeo-push-${rep}:latest`,
          ["--dest-tls-verify=false"],
        );
        return { value: seconds };
      },
      { label: "pg-skopeo-push", keys: TRIO },
    );
    const mb = Math.round(images[0].totalBytes / 1e6);
    return trioRows(result, {
      id: "pg-skopeo-push",
      label: `${LABEL} (${mb} MB)`,
      unit: "s",
      higherIsBetter: false,
      target: null,
    });
  },
};
