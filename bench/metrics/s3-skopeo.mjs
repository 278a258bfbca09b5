// S3 rows (issue 11): `skopeo copy` of the five-layer image (~100 MB) each way, Berth on S3 beside
// Distribution on S3 (blobs streamed by the registries, no redirect).
import { rmSync } from "node:fs";
import path from "node:path";
import { pushOciLayout, REF_NAME } from "../lib/oci-layout.mjs";
import { makeRow } from "../lib/report.mjs";
import { s3Pair, s3Skip, skippedRows } from "../lib/scaleout.mjs";
import { layout, skopeoCopy } from "./skopeo.mjs";

export default {
  id: "s3-skopeo",
  title: "skopeo copy of a five-layer image, on S3",
  async run(ctx) {
    const labels = [
      ["s3-skopeo-push", "S3-6. skopeo copy of a five-layer image, OCI layout → registry on S3", "s"],
      ["s3-skopeo-pull", "S3-7. skopeo copy of a five-layer image, registry on S3 → OCI layout", "s"],
    ];
    const skip = s3Skip();
    if (skip) return skippedRows(this, skip, labels);
    const pair = await s3Pair(ctx);
    const reps = ctx.opts.skopeoReps;
    const source = layout(ctx, "s3-skopeo-src");
    const pushImages = Array.from({ length: reps }, (_, rep) => layout(ctx, `s3-skopeo-push-${rep}`));
    const push = await ctx.alternate(
      pair,
      reps,
      async (server, rep) => {
        await ctx.sync();
        const seconds = await skopeoCopy(
          `oci:${pushImages[rep].dir}:${REF_NAME}`,
          `docker://${server.addr}/bench/s3-skopeo-push-${rep}:latest`,
          ["--dest-tls-verify=false"],
        );
        return { value: seconds };
      },
      { label: "s3-skopeo-push" },
    );
    const pull = await ctx.alternate(
      pair,
      reps,
      async (server, rep) => {
        const dest = path.join(ctx.opts.workDir, `s3-skopeo-pull-${server.key}-${rep}`);
        rmSync(dest, { recursive: true, force: true });
        const seconds = await skopeoCopy(
          `docker://${server.addr}/bench/s3-skopeo-src:latest`,
          `oci:${dest}:${REF_NAME}`,
          ["--src-tls-verify=false"],
        );
        rmSync(dest, { recursive: true, force: true });
        return { value: seconds };
      },
      {
        label: "s3-skopeo-pull",
        setup: (server) => pushOciLayout(server, "bench/s3-skopeo-src", "latest", source.dir),
      },
    );
    const mb = `${Math.round(source.totalBytes / 1e6)} MB`;
    return [
      makeRow({
        id: labels[0][0],
        label: `${labels[0][1]} (${mb})`,
        unit: "s",
        higherIsBetter: false,
        result: push,
      }),
      makeRow({
        id: labels[1][0],
        label: `${labels[1][1]} (${mb})`,
        unit: "s",
        higherIsBetter: false,
        result: pull,
      }),
    ];
  },
};
