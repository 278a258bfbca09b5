// Metric 1: push of one large blob in a single request (POST, then PUT ?digest= with the whole body).
// The same pushes feed metric 8 (peak RSS of the server's process tree while it receives the blob).
import { blobDigest } from "../lib/blobdata.mjs";
import { startRssSampler, treeCpuSeconds } from "../lib/proc.mjs";
import { pushBlobMonolithic } from "../lib/registry.mjs";
import { cpuNote, makeRow } from "../lib/report.mjs";

export function monoBlob(ctx, rep) {
  const size = ctx.opts.blobBytes;
  const seed = `mono-${rep}`;
  return { seed, size, digest: blobDigest(seed, size), repo: `bench/push-mono-${rep}` };
}

/** Runs (once per bench run) the alternating monolithic pushes, sampling RSS during each. */
export function monolithicPushes(ctx) {
  return ctx.once("monolithic-pushes", async () => {
    const pair = await ctx.servers();
    return ctx.alternate(
      pair,
      ctx.opts.reps,
      async (server, rep) => {
        const blob = monoBlob(ctx, rep);
        await ctx.sync();
        const sampler = startRssSampler(server.pid, 50);
        await sampler.ready;
        const cpu0 = treeCpuSeconds(server.pid);
        let push;
        let rss;
        try {
          push = await pushBlobMonolithic(server, blob.repo, blob);
        } finally {
          rss = await sampler.stop();
        }
        const cpuSeconds = treeCpuSeconds(server.pid) - cpu0;
        return {
          value: blob.size / 1e6 / (push.ms / 1000),
          ms: push.ms,
          cpuSeconds,
          peakRssBytes: rss.peak,
          peakOneRssBytes: rss.peakOne,
          idleRssBytes: rss.first,
          rssSamples: rss.samples,
          processes: rss.maxProcs,
          repo: blob.repo,
          digest: blob.digest,
        };
      },
      { label: "push-mono" },
    );
  });
}

export default {
  id: "push-mono",
  title: "Monolithic blob push",
  async run(ctx) {
    const result = await monolithicPushes(ctx);
    return [
      makeRow({
        id: "push-mono",
        label: `1. Push ${ctx.opts.blobLabel} blob, monolithic`,
        unit: "MB/s",
        higherIsBetter: true,
        result,
        target: { kind: "ratio", min: 2 },
        notes: cpuNote(result, ctx.opts.blobBytes),
      }),
    ];
  },
};
