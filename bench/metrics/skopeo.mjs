// Metric 6: `skopeo copy` of a five-layer (~100 MB) image, in both directions:
//   push: oci:<layout>:bench → docker://<registry>/bench/skopeo-push-<rep>:latest (a new image each rep,
//         so no blob is already there and nothing can be mounted)
//   pull: docker://<registry>/bench/skopeo-src:latest → oci:<fresh dir>:bench
// Wall-clock seconds of the skopeo process, including its start-up and its https→http probe.
import { rmSync } from "node:fs";
import path from "node:path";
import { buildOciLayout, pushOciLayout, REF_NAME } from "../lib/oci-layout.mjs";
import { makeRow } from "../lib/report.mjs";
import { formatBytes, log, run } from "../lib/util.mjs";

const SKOPEO = process.env.BENCH_SKOPEO_BIN ?? "skopeo";

export function layout(ctx, seed) {
  const { skopeoLayers, skopeoLayerBytes } = ctx.opts;
  const dir = path.join(ctx.opts.cacheDir, "images", `${seed}-${skopeoLayers}x${skopeoLayerBytes}`);
  return buildOciLayout(dir, { seed, layers: skopeoLayers, layerBytes: skopeoLayerBytes });
}

export async function skopeoCopy(src, dest, flags) {
  const t0 = performance.now();
  await run(SKOPEO, ["copy", "--quiet", ...flags, src, dest], { timeoutMs: 10 * 60_000 });
  return (performance.now() - t0) / 1000;
}

export default {
  id: "skopeo",
  title: "skopeo copy of a five-layer image",
  async run(ctx) {
    const pair = await ctx.servers();
    const reps = ctx.opts.skopeoReps;
    const source = layout(ctx, "skopeo-src");
    const pushImages = Array.from({ length: reps }, (_, rep) => layout(ctx, `skopeo-push-${rep}`));
    log(`skopeo: image of ${ctx.opts.skopeoLayers} layers, ${formatBytes(source.totalBytes)}`);

    const push = await ctx.alternate(
      pair,
      reps,
      async (server, rep) => {
        await ctx.sync();
        const seconds = await skopeoCopy(
          `oci:${pushImages[rep].dir}:${REF_NAME}`,
          `docker://${server.addr}/bench/skopeo-push-${rep}:latest`,
          ["--dest-tls-verify=false"],
        );
        return { value: seconds };
      },
      { label: "skopeo-push" },
    );

    const pull = await ctx.alternate(
      pair,
      reps,
      async (server, rep) => {
        const dest = path.join(ctx.opts.workDir, `skopeo-pull-${server.key}-${rep}`);
        rmSync(dest, { recursive: true, force: true });
        await ctx.sync();
        const seconds = await skopeoCopy(
          `docker://${server.addr}/bench/skopeo-src:latest`,
          `oci:${dest}:${REF_NAME}`,
          ["--src-tls-verify=false"],
        );
        rmSync(dest, { recursive: true, force: true });
        return { value: seconds };
      },
      {
        label: "skopeo-pull",
        setup: (server) => pushOciLayout(server, "bench/skopeo-src", "latest", source.dir),
      },
    );

    const size = `${ctx.opts.skopeoLayers}-layer ${Math.round(source.totalBytes / 1e6)} MB image`;
    return [
      makeRow({
        id: "skopeo-push",
        label: `6a. skopeo copy ${size}, OCI layout → registry`,
        unit: "s",
        higherIsBetter: false,
        result: push,
      }),
      makeRow({
        id: "skopeo-pull",
        label: `6b. skopeo copy ${size}, registry → OCI layout`,
        unit: "s",
        higherIsBetter: false,
        result: pull,
      }),
    ];
  },
};
