/**
 * Prometheus metrics across `berth serve`'s processes.
 *
 * Every worker counts its own requests in prom-client's global registry. A scrape must see all
 * workers, so the primary aggregates (prom-client's AggregatorRegistry asks each worker over the
 * cluster IPC channel and sums):
 *  - `/metrics` on the main port lands in some worker, which asks the primary for the aggregate
 *    (and answers with its own numbers alone if no primary aggregates, e.g. a single process);
 *  - `metrics.addr` (or Distribution's `http.debug.addr` with `http.debug.prometheus.enabled`) is a
 *    listener in the primary itself, and then `/metrics` is not served on the main port.
 *
 * The supervisor's side is src/http/metrics-primary.cts (it loads prom-client only when asked).
 *
 * A worker counts in meters of its own (src/registry/meters.ts) and loads prom-client only when
 * metrics are first read (a scrape, or the primary asking for this worker's numbers): then the meters
 * and Node's default metrics join prom-client's registry. The default metrics that count events (the
 * garbage collections) count from then on.
 */
import cluster from "node:cluster";
import perfHooks, { type IntervalHistogram } from "node:perf_hooks";
import { attachMeters, Counter, Gauge, Histogram } from "../registry/meters.js";
import { AGGREGATE_ENV, REQUEST, RESPONSE, setLocalMetrics } from "./metrics-primary.cjs";

type PromClient = typeof import("prom-client");

export { metricsEndpoint } from "./metrics-primary.cjs";

// ---------------------------------------------------------------------------------------------
// The metrics of one process

export interface ProcessMetrics {
  requests: Counter<"method" | "route" | "status">;
  duration: Histogram<"method" | "route">;
  bytesIn: Counter<"route">;
  bytesOut: Counter<"route">;
  inFlight: Gauge;
  uploadsInProgress: Gauge;
  storageUsed: Gauge<"kind">;
  blobs: Gauge;
}

/** Reads that several gauges need on each scrape (the database), filled in by the HTTP layer. */
export interface MetricsSource {
  uploads(): Promise<{ count: number; bytes: number }>;
  blobs(): Promise<{ count: number; bytes: number }>;
}

/** How often the event-loop delay is sampled (nodejs_eventloop_lag_* metrics), once metrics are scraped. */
const EVENT_LOOP_SAMPLE_MS = 1_000;

/**
 * prom-client's event-loop delay sampler, started at the process's first scrape instead of at start-up:
 * its timer woke an idle worker every second for ever, whether or not anything read the figures. A
 * registry that Prometheus does not scrape now runs no timer at all. The first scrape has no samples
 * yet and reports zeros (not the sampler's empty-histogram minimum of 9.2e9 s).
 */
class DelayFromFirstScrape {
  private started = false;
  constructor(private readonly real: IntervalHistogram) {}
  private sampled(): boolean {
    if (!this.started) {
      this.started = true;
      this.real.enable();
    }
    return this.real.count > 0;
  }
  enable(): boolean {
    return false;
  }
  disable(): boolean {
    this.started = false;
    return this.real.disable();
  }
  reset(): void {
    this.real.reset();
  }
  percentile(p: number): number {
    return this.sampled() ? this.real.percentile(p) : 0;
  }
  get min(): number {
    return this.sampled() ? this.real.min : 0;
  }
  get max(): number {
    return this.sampled() ? this.real.max : 0;
  }
  get mean(): number {
    return this.sampled() ? this.real.mean : 0;
  }
  get stddev(): number {
    return this.sampled() ? this.real.stddev : 0;
  }
}

/** prom-client's default process metrics, with the event-loop sampler started at the first scrape. */
function defaultMetrics({ collectDefaultMetrics }: PromClient): void {
  const monitor = perfHooks.monitorEventLoopDelay;
  // prom-client asks node:perf_hooks for the sampler when its metrics are created, and enables it.
  perfHooks.monitorEventLoopDelay = ((options?: Parameters<typeof monitor>[0]) =>
    new DelayFromFirstScrape(monitor(options))) as unknown as typeof monitor;
  try {
    collectDefaultMetrics({ eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  } finally {
    perfHooks.monitorEventLoopDelay = monitor;
  }
}

let metrics: ProcessMetrics | undefined;
let source: MetricsSource | undefined;
let cache:
  | { at: number; uploads: { count: number; bytes: number }; blobs: { count: number; bytes: number } }
  | undefined;
const CACHE_MS = 5_000;

async function readSource(): Promise<typeof cache> {
  if (!source) return undefined;
  if (cache && Date.now() - cache.at < CACHE_MS) return cache;
  const [uploads, blobs] = await Promise.all([source.uploads(), source.blobs()]);
  cache = { at: Date.now(), uploads, blobs };
  return cache;
}

/** Tells the gauges where to read uploads and storage use (the latest call wins). */
export function setMetricsSource(s: MetricsSource | undefined): void {
  source = s;
  cache = undefined;
}

let prometheus: Promise<PromClient> | undefined;

/** prom-client, loaded when metrics are first read, with every meter and Node's default metrics in it. */
function loadPrometheus(): Promise<PromClient> {
  prometheus ??= import("prom-client").then((prom) => {
    // prom-client samples event-loop delay with a timer; at its default 10 ms resolution an idle worker
    // woke 100 times a second (about 1% of a core). Once a second still shows a blocked loop, and only
    // from the first scrape on (DelayFromFirstScrape).
    defaultMetrics(prom);
    attachMeters((meter) =>
      prom.register.registerMetric(meter as unknown as Parameters<typeof prom.register.registerMetric>[0]),
    );
    return prom;
  });
  return prometheus;
}

/** prom-client's messages between the primary's AggregatorRegistry and a worker (its cluster.js). */
const PROM_REQUEST = "prom-client:getMetricsReq";
const PROM_RESPONSE = "prom-client:getMetricsRes";

/**
 * A worker's answer to the primary's AggregatorRegistry (what prom-client's AggregatorRegistry installs
 * in a worker), loading prom-client at the first request.
 */
function answerAggregator(): void {
  process.on("message", (raw: unknown) => {
    const message = raw as { type?: string; requestId?: unknown } | undefined;
    if (message?.type !== PROM_REQUEST) return;
    loadPrometheus()
      .then((prom) => prom.register.getMetricsAsJSON())
      .then(
        (json) => process.send?.({ type: PROM_RESPONSE, requestId: message.requestId, metrics: [json] }),
        (err: Error) =>
          process.send?.({ type: PROM_RESPONSE, requestId: message.requestId, error: err.message }),
      );
  });
}

/** This process's metrics, created once. */
export function processMetrics(): ProcessMetrics {
  if (metrics) return metrics;
  if (cluster.isWorker) answerAggregator();
  // A process that serves alone and on metrics.addr: the primary's side reads this process's meters.
  else setLocalMetrics(loadPrometheus);
  metrics = {
    requests: new Counter({
      name: "berth_http_requests_total",
      help: "HTTP requests answered, by method, route and status code.",
      labelNames: ["method", "route", "status"],
    }),
    duration: new Histogram({
      name: "berth_http_request_duration_seconds",
      help: "Time from the request's arrival to the end of the response, by method and route.",
      labelNames: ["method", "route"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800],
    }),
    bytesIn: new Counter({
      name: "berth_http_request_bytes_total",
      help: "Bytes received (request lines, headers and bodies), by route.",
      labelNames: ["route"],
    }),
    bytesOut: new Counter({
      name: "berth_http_response_bytes_total",
      help: "Bytes sent (status lines, headers and bodies), by route.",
      labelNames: ["route"],
    }),
    inFlight: new Gauge({
      name: "berth_http_requests_in_flight",
      help: "Requests being answered now.",
    }),
    uploadsInProgress: new Gauge({
      name: "berth_uploads_in_progress",
      help: "Blob upload sessions started and neither finished nor cancelled.",
      aggregator: "max",
      async collect() {
        const data = await readSource().catch(() => undefined);
        if (data) this.set(data.uploads.count);
      },
    }),
    storageUsed: new Gauge({
      name: "berth_storage_used_bytes",
      help: "Bytes stored: blobs (each counted once) and unfinished uploads.",
      labelNames: ["kind"],
      aggregator: "max",
      async collect() {
        const data = await readSource().catch(() => undefined);
        if (data) {
          this.set({ kind: "blobs" }, data.blobs.bytes);
          this.set({ kind: "uploads" }, data.uploads.bytes);
        }
      },
    }),
    blobs: new Gauge({
      name: "berth_blobs",
      help: "Blobs stored (each counted once).",
      aggregator: "max",
      async collect() {
        const data = await readSource().catch(() => undefined);
        if (data) this.set(data.blobs.count);
      },
    }),
  };
  return metrics;
}

// ---------------------------------------------------------------------------------------------
// Scrapes

/** prom-client's register.contentType (Prometheus's text format 0.0.4). */
export const contentType = "text/plain; version=0.0.4; charset=utf-8";

/**
 * The text of a scrape as seen from this process: every worker's numbers when the primary
 * aggregates (see startPrimaryMetrics), this process's alone otherwise.
 */
export async function scrape(): Promise<string> {
  if (cluster.isWorker && process.env[AGGREGATE_ENV] === "1" && process.send) {
    try {
      return await askPrimary();
    } catch {
      // The primary did not answer in time: better this worker's numbers than none.
    }
  }
  return (await loadPrometheus()).register.metrics();
}

let nextId = 1;
function askPrimary(timeoutMs = 8_000): Promise<string> {
  const id = `${process.pid}:${nextId++}`;
  return new Promise((resolve, reject) => {
    const onMessage = (message: unknown) => {
      const m = message as { type?: string; id?: string; text?: string; error?: string };
      if (m?.type !== RESPONSE || m.id !== id) return;
      cleanup();
      if (m.error !== undefined || m.text === undefined) reject(new Error(m.error ?? "no metrics"));
      else resolve(m.text);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error("the primary did not answer"));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      process.off("message", onMessage);
    };
    process.on("message", onMessage);
    process.send?.({ type: REQUEST, id });
  });
}
