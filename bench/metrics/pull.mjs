// Metric 3: pull (GET) of the large blob with curl (`-o /dev/null`), a client faster than both
// servers: the Node client used before capped both near 530 MB/s. The untimed first pull goes through
// the Node client, which hashes the content, so that what is timed is known to be right.
import { request } from "../lib/http.mjs";
import { treeCpuSeconds } from "../lib/proc.mjs";
import { pullBlob, pushBlobMonolithic } from "../lib/registry.mjs";
import { cpuNote, makeRow } from "../lib/report.mjs";
import { log, run } from "../lib/util.mjs";

/** GET with curl into /dev/null: { ms, bytes } from curl's own timing. */
async function curlPull(server, repo, digest) {
  const res = await run(
    "curl",
    [
      "-s",
      "-f",
      "-o",
      "/dev/null",
      "-w",
      "%{speed_download} %{size_download} %{time_total}",
      `${server.baseUrl}/v2/${repo}/blobs/${digest}`,
    ],
    { timeoutMs: 30 * 60_000 },
  );
  const [, bytes, seconds] = res.stdout.trim().split(" ").map(Number);
  return { ms: seconds * 1000, bytes };
}

import { monoBlob } from "./push-monolithic.mjs";

export default {
  id: "pull",
  title: "Blob pull",
  async run(ctx) {
    const pair = await ctx.servers();
    // The blob of the first monolithic push; pushed here (untimed) when that metric did not run.
    const blob = monoBlob(ctx, 0);
    const result = await ctx.alternate(
      pair,
      ctx.opts.reps,
      async (server) => {
        const cpu0 = treeCpuSeconds(server.pid);
        const pulled = await curlPull(server, blob.repo, blob.digest);
        const cpuSeconds = treeCpuSeconds(server.pid) - cpu0;
        if (pulled.bytes !== blob.size)
          throw new Error(`GET returned ${pulled.bytes} bytes, expected ${blob.size}`);
        return { value: blob.size / 1e6 / (pulled.ms / 1000), ms: pulled.ms, cpuSeconds };
      },
      {
        label: "pull",
        setup: async (server) => {
          const head = await request(`${server.baseUrl}/v2/${blob.repo}/blobs/${blob.digest}`, {
            method: "HEAD",
          });
          if (head.status !== 200) {
            log(
              `pull: pushing the ${ctx.opts.blobLabel} blob to ${server.label} first (HEAD said ${head.status})`,
            );
            await pushBlobMonolithic(server, blob.repo, blob);
          }
          await ctx.sync();
          // One untimed pull first, so every timed pull reads the same (page-cached) data.
          await pullBlob(server, blob.repo, blob.digest);
        },
      },
    );
    return [
      makeRow({
        id: "pull",
        label: `3. Pull ${ctx.opts.blobLabel} blob`,
        unit: "MB/s",
        higherIsBetter: true,
        result,
        target: { kind: "ratio", min: 0.9 },
        notes: cpuNote(result, blob.size),
      }),
    ];
  },
};
