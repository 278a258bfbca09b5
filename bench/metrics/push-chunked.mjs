// Metric 2: push of the same-size blob in 64 MiB chunks (POST, PATCH × n with Content-Range, PUT ?digest=).
import { blobDigest } from "../lib/blobdata.mjs";
import { treeCpuSeconds } from "../lib/proc.mjs";
import { pushBlobChunked } from "../lib/registry.mjs";
import { cpuNote, makeRow } from "../lib/report.mjs";

export const CHUNK_BYTES = 64 * 1024 * 1024;

export default {
  id: "push-chunked",
  title: "Chunked blob push",
  async run(ctx) {
    const pair = await ctx.servers();
    const size = ctx.opts.blobBytes;
    const result = await ctx.alternate(
      pair,
      ctx.opts.reps,
      async (server, rep) => {
        const seed = `chunked-${rep}`;
        const blob = { seed, size, digest: blobDigest(seed, size) };
        await ctx.sync();
        const cpu0 = treeCpuSeconds(server.pid);
        const push = await pushBlobChunked(server, `bench/push-chunked-${rep}`, blob, CHUNK_BYTES);
        const cpuSeconds = treeCpuSeconds(server.pid) - cpu0;
        return { value: size / 1e6 / (push.ms / 1000), ms: push.ms, patches: push.patches, cpuSeconds };
      },
      { label: "push-chunked" },
    );
    return [
      makeRow({
        id: "push-chunked",
        label: `2. Push ${ctx.opts.blobLabel} blob, 64 MiB chunks`,
        unit: "MB/s",
        higherIsBetter: true,
        result,
        target: { kind: "ratio", min: 2 },
        notes: cpuNote(result, size),
      }),
    ];
  },
};
