// S3 rows (issue 11): push of one large blob (1 GiB in a full run) with curl, monolithic and in
// 5 MiB chunks, Berth on S3 beside Distribution 2.8 on S3, both on the run's Ceph radosgw (a bucket
// each), and the commit time: from the last chunk's 202 to the 201 of the closing PUT ?digest=.
// Each repetition pushes a new blob (written to a file first, untimed) into a new repository.
import { rmSync } from "node:fs";
import path from "node:path";
import { blobDigest } from "../lib/blobdata.mjs";
import { blobFile, chunkFiles, curlPushChunked, curlPushMonolithic } from "../lib/curl-push.mjs";
import { makeRow } from "../lib/report.mjs";
import { s3Pair, s3Skip, skippedRows } from "../lib/scaleout.mjs";
import { MiB, median } from "../lib/util.mjs";

export const S3_CHUNK = 5 * MiB;

export function s3Reps(ctx) {
  return ctx.opts.mode === "quick" ? 1 : Math.min(ctx.opts.reps, 3);
}

export default {
  id: "s3-push",
  title: "Blob push on S3, monolithic and in 5 MiB chunks",
  async run(ctx) {
    const size = ctx.opts.blobBytes;
    const labels = [
      ["s3-push-mono", `S3-1. Push ${ctx.opts.blobLabel} blob, monolithic (curl)`, "MB/s"],
      ["s3-push-chunked", `S3-2. Push ${ctx.opts.blobLabel} blob, 5 MiB chunks (curl)`, "MB/s"],
      ["s3-commit", `S3-3. Commit of the ${ctx.opts.blobLabel} chunked push, last byte → 201`, "s"],
    ];
    const skip = s3Skip();
    if (skip) return skippedRows(this, skip, labels);
    const pair = await s3Pair(ctx);
    const reps = s3Reps(ctx);
    const dir = path.join(ctx.opts.workDir, "s3-blobs");
    const blobs = Array.from({ length: reps }, (_, rep) => {
      const seed = `s3-push-${rep}`;
      return { seed, size, digest: blobDigest(seed, size), file: path.join(dir, `${seed}.bin`) };
    });
    try {
      const mono = await ctx.alternate(
        pair,
        reps,
        async (server, rep) => {
          const blob = blobs[rep];
          await blobFile(blob.file, blob);
          await ctx.sync();
          const push = await curlPushMonolithic(server, `bench/s3-mono-${rep}`, blob.file, blob.digest);
          return { value: size / 1e6 / push.seconds, seconds: push.seconds };
        },
        { label: "s3-push-mono" },
      );
      const chunked = await ctx.alternate(
        pair,
        reps,
        async (server, rep) => {
          const blob = blobs[rep];
          await blobFile(blob.file, blob);
          const chunks = await chunkFiles(blob.file, path.join(dir, "chunks"), S3_CHUNK);
          await ctx.sync();
          const push = await curlPushChunked(server, `bench/s3-chunked-${rep}`, chunks, blob.digest);
          return {
            value: size / 1e6 / push.seconds,
            seconds: push.seconds,
            commitSeconds: push.commitSeconds,
            patches: push.patches,
          };
        },
        { label: "s3-push-chunked" },
      );
      const commit = {};
      for (const key of ["berth", "distribution"]) {
        const d = chunked[key].details;
        commit[key] = {
          samples: d.map((x) => x.commitSeconds),
          value: d.length > 0 ? median(d.map((x) => x.commitSeconds)) : null,
          error: chunked[key].error,
          details: d,
        };
      }
      const patches = chunked.berth.details[0]?.patches ?? chunked.distribution.details[0]?.patches;
      return [
        makeRow({
          id: labels[0][0],
          label: labels[0][1],
          unit: "MB/s",
          higherIsBetter: true,
          result: mono,
          target: { kind: "ratio", min: 1.5 },
          notes: [
            `${reps} repetition(s); Berth's metadata in SQLite; one bucket per registry on the same radosgw`,
          ],
        }),
        makeRow({
          id: labels[1][0],
          label: labels[1][1],
          unit: "MB/s",
          higherIsBetter: true,
          result: chunked,
          target: { kind: "ratio", min: 1.5 },
          notes: [
            `${patches} PATCH requests, one curl process each (the same start-up cost for both servers)`,
          ],
        }),
        makeRow({
          id: labels[2][0],
          label: labels[2][1],
          unit: "s",
          higherIsBetter: false,
          result: commit,
          target: { kind: "berth", max: 1 },
        }),
      ];
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
