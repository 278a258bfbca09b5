// Shared shape of the ab-driven request-rate metrics: a warm-up run that also sizes -n so each
// measured run lasts about opts.abSeconds, then alternating measured runs.
import { runAb } from "./ab.mjs";
import { log } from "./util.mjs";

const MIN_REQUESTS = 2000;
const MAX_REQUESTS = 2_000_000;

/**
 * urlFor(server) → URL; abOptions: { head, headers, concurrency }.
 * Returns the Context.alternate result with value = requests/second.
 */
export async function abSeries(ctx, pair, { label, urlFor, abOptions, setup, keys }) {
  const sized = new Map();
  return ctx.alternate(
    pair,
    ctx.opts.reps,
    async (server) => {
      const report = await runAb(urlFor(server), { ...abOptions, requests: sized.get(server) });
      return {
        value: report.rps,
        requests: report.complete,
        seconds: report.seconds,
        keepAlive: report.keepAlive,
        p50ms: report.percentilesMs["50"] ?? null,
        p99ms: report.percentilesMs["99"] ?? null,
      };
    },
    {
      label,
      keys,
      setup: async (server) => {
        await setup(server);
        const warm = await runAb(urlFor(server), { ...abOptions, requests: MIN_REQUESTS });
        const n = Math.round(Math.min(MAX_REQUESTS, Math.max(MIN_REQUESTS, warm.rps * ctx.opts.abSeconds)));
        sized.set(server, n);
        log(`${label} ${server.key}: warm-up ${warm.rps.toFixed(0)} req/s → -n ${n}`);
        if (warm.keepAlive < warm.complete) {
          log(
            `${label} ${server.key}: only ${warm.keepAlive} of ${warm.complete} responses kept the connection alive`,
          );
        }
      },
    },
  );
}

/** Notes for a row: keep-alive misses and latency percentiles, per server. */
export function abNotes(result) {
  const notes = [];
  for (const [key, r] of Object.entries(result)) {
    const d = r.details ?? [];
    if (d.length === 0) continue;
    const ka = d.reduce((s, x) => s + x.keepAlive, 0);
    const total = d.reduce((s, x) => s + x.requests, 0);
    if (ka < total) notes.push(`${key}: only ${ka} of ${total} responses were keep-alive`);
  }
  return notes;
}
