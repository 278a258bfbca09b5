// Metric 8: peak RSS of the server's whole process tree (primary + forked workers), sampled every
// 50 ms from /proc/<pid>/status VmRSS while it receives the monolithic blob push of metric 1.
// Reported value: the highest peak over the repetitions (a peak, so not a median).
import { makeRow } from "../lib/report.mjs";
import { SERVER_KEYS } from "../lib/servers.mjs";
import { monolithicPushes } from "./push-monolithic.mjs";

export default {
  id: "rss",
  title: "Peak RSS during the monolithic push",
  async run(ctx) {
    const pushes = await monolithicPushes(ctx);
    const result = {};
    const notes = [];
    for (const key of SERVER_KEYS) {
      const details = pushes[key].details;
      const peaks = details.map((d) => d.peakRssBytes / 1e6);
      result[key] = {
        samples: peaks,
        value: peaks.length > 0 ? Math.max(...peaks) : null,
        error: peaks.length === 0 ? pushes[key].error : null,
        details: details.map((d) => ({
          peakRssMB: d.peakRssBytes / 1e6,
          idleRssMB: d.idleRssBytes / 1e6,
          processes: d.processes,
        })),
      };
      if (details.length > 0) {
        const idle = Math.min(...details.map((d) => d.idleRssBytes / 1e6));
        notes.push(
          `${key}: ${details[0].processes} process(es), ${idle.toFixed(0)} MB before the first push`,
        );
      }
    }
    // The largest single process (a Berth worker; Distribution's only process) during the same pushes.
    const one = {};
    for (const key of SERVER_KEYS) {
      const peaks = pushes[key].details.map((d) => d.peakOneRssBytes / 1e6).filter(Number.isFinite);
      one[key] = {
        samples: peaks,
        value: peaks.length > 0 ? Math.max(...peaks) : null,
        error: peaks.length === 0 ? pushes[key].error : null,
      };
    }
    return [
      makeRow({
        id: "rss",
        label: `8. Peak RSS during the ${ctx.opts.blobLabel} monolithic push`,
        unit: "MB",
        higherIsBetter: false,
        aggregate: "max",
        result,
        target: { kind: "berth", max: 150 },
        notes,
      }),
      makeRow({
        id: "rss-worker",
        label: `8b. Peak RSS of one process during the ${ctx.opts.blobLabel} push (Berth: a worker)`,
        unit: "MB",
        higherIsBetter: false,
        aggregate: "max",
        result: one,
        target: { kind: "berth", max: 100 },
      }),
    ];
  },
};
