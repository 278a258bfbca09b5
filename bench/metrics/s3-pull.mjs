// S3 rows (issue 11): pull of the large blob with curl into /dev/null, Berth on S3 beside
// Distribution on S3, first streamed by the registries (`storage.redirect.disable: true` for both),
// then redirected (both restarted on the same buckets with redirects on: 307 to a presigned URL,
// followed with curl -L, so the bytes come from radosgw).
import { rmSync } from "node:fs";
import path from "node:path";
import { blobDigest } from "../lib/blobdata.mjs";
import { blobFile, curlPull, curlPushMonolithic } from "../lib/curl-push.mjs";
import { request } from "../lib/http.mjs";
import { makeRow } from "../lib/report.mjs";
import { s3Pair, s3Skip, skippedRows, startS3Pair } from "../lib/scaleout.mjs";
import { log } from "../lib/util.mjs";
import { s3Reps } from "./s3-push.mjs";

const REPO = "bench/s3-pull";

export default {
  id: "s3-pull",
  title: "Blob pull on S3, streamed and redirected",
  async run(ctx) {
    const size = ctx.opts.blobBytes;
    const labels = [
      ["s3-pull", `S3-4. Pull ${ctx.opts.blobLabel} blob, streamed by the registry (curl)`, "MB/s"],
      ["s3-pull-redirect", `S3-5. Pull ${ctx.opts.blobLabel} blob, redirected to S3 (curl -L)`, "MB/s"],
    ];
    const skip = s3Skip();
    if (skip) return skippedRows(this, skip, labels);
    const seed = "s3-pull";
    const blob = {
      seed,
      size,
      digest: blobDigest(seed, size),
      file: path.join(ctx.opts.workDir, "s3-pull.bin"),
    };
    const reps = Math.max(2, s3Reps(ctx));
    const measure = (pair, follow, label) =>
      ctx.alternate(
        pair,
        reps,
        async (server) => {
          const pulled = await curlPull(server, REPO, blob.digest, { follow, size });
          if (follow && pulled.redirects < 1) throw new Error("no redirect: the blob was streamed");
          return { value: size / 1e6 / pulled.seconds, seconds: pulled.seconds, redirects: pulled.redirects };
        },
        {
          label,
          setup: async (server) => {
            const head = await request(`${server.baseUrl}/v2/${REPO}/blobs/${blob.digest}`, {
              method: "HEAD",
            });
            // A redirecting registry may answer a HEAD with its redirect too.
            if (head.status !== 200 && head.status !== 307) {
              log(`${label}: pushing the ${ctx.opts.blobLabel} blob to ${server.label} first`);
              await blobFile(blob.file, blob);
              await curlPushMonolithic(server, REPO, blob.file, blob.digest);
            }
            // One untimed pull first.
            await curlPull(server, REPO, blob.digest, { follow, size });
          },
        },
      );
    try {
      const streamed = await measure(await s3Pair(ctx), false, "s3-pull");
      // The shared pair streams; the redirecting one runs on the same buckets and data directories.
      const shared = await s3Pair(ctx);
      await ctx.stopPair(shared);
      ctx.shared.delete("s3-pair");
      const redirecting = await startS3Pair(ctx, { redirect: true });
      let redirected;
      try {
        redirected = await measure(redirecting, true, "s3-pull-redirect");
      } finally {
        await ctx.stopPair(redirecting);
      }
      return [
        makeRow({
          id: labels[0][0],
          label: labels[0][1],
          unit: "MB/s",
          higherIsBetter: true,
          result: streamed,
          target: { kind: "ratio", min: 1 },
        }),
        makeRow({
          id: labels[1][0],
          label: labels[1][1],
          unit: "MB/s",
          higherIsBetter: true,
          result: redirected,
          target: { kind: "ratio", min: 1 },
          notes: [
            "both answer 307 to a presigned radosgw URL; the time includes the redirect and the download from radosgw",
          ],
        }),
      ];
    } finally {
      rmSync(blob.file, { force: true });
    }
  },
};
