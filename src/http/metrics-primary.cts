import cluster from "node:cluster";
import type http from "node:http";
import type { Config } from "../config/schema.js";

/**
 * The supervisor's side of the metrics (see src/http/metrics.ts for a worker's): it answers workers
 * that ask for every worker's numbers when `/metrics` is scraped on the main port, and serves them
 * on `metrics.addr` (or http.debug.addr) when one is set. In a single-process serve it serves that
 * process's own metrics on the address.
 *
 * This module loads only node:cluster (and node:http when metrics have an address of their own);
 * prom-client is loaded at the first scrape, so that an unscraped supervisor stays small. CommonJS,
 * as the supervisor is (src/cli/supervisor.cts).
 */

export const AGGREGATE_ENV = "BERTH_METRICS_PRIMARY";
export const REQUEST = "berth:metrics:get";
export const RESPONSE = "berth:metrics:res";

export interface PrimaryMetrics {
  /** The address metrics are served on by the primary, if any ("127.0.0.1:9090"). */
  address?: string;
  close(): Promise<void>;
}

interface Endpoint {
  where: "main" | "own" | "off";
  addr?: string;
  path: string;
}

interface InfoLogger {
  info(fields: Record<string, unknown>, msg: string): void;
}

/** Where metrics are served: on the main port (worker routes) or on an address of their own (primary). */
export function metricsEndpoint(config: Config): {
  where: "main" | "own" | "off";
  addr?: string;
  path: string;
} {
  const debug = config.http.debug;
  if (!config.metrics.enabled) return { where: "off", path: config.metrics.path };
  if (config.metrics.addr) return { where: "own", addr: config.metrics.addr, path: config.metrics.path };
  if (debug?.addr && debug.prometheus?.enabled) {
    return { where: "own", addr: debug.addr, path: debug.prometheus.path ?? "/metrics" };
  }
  return { where: "main", path: config.metrics.path };
}

type PromClient = typeof import("prom-client");

let localMetrics: (() => Promise<unknown>) | undefined;

/**
 * In a process that serves by itself: what loads its own meters into prom-client's registry
 * (src/http/metrics.ts), run before the registry is read.
 */
export function setLocalMetrics(load: () => Promise<unknown>): void {
  localMetrics = load;
}

export async function startPrimaryMetrics(endpoint: Endpoint, log?: InfoLogger): Promise<PrimaryMetrics> {
  if (endpoint.where === "off") return { close: async () => {} };
  process.env[AGGREGATE_ENV] = "1";
  let client:
    | Promise<{ prom: PromClient; aggregator: InstanceType<PromClient["AggregatorRegistry"]> }>
    | undefined;
  const load = () => {
    client ??= Promise.resolve().then(() => {
      const prom = require("prom-client") as PromClient;
      return { prom, aggregator: new prom.AggregatorRegistry() };
    });
    return client;
  };
  const collect = async (): Promise<{ text: string; contentType: string }> => {
    if (localMetrics) await localMetrics();
    const { prom, aggregator } = await load();
    const workers = Object.values(cluster.workers ?? {}).filter((w) => w?.isConnected());
    const text = workers.length === 0 ? await prom.register.metrics() : await aggregator.clusterMetrics();
    return { text, contentType: prom.register.contentType };
  };
  const onMessage = (worker: { send(message: unknown): boolean }, message: unknown) => {
    const m = message as { type?: string; id?: string };
    if (m?.type !== REQUEST) return;
    collect().then(
      ({ text }) => worker.send({ type: RESPONSE, id: m.id, text }),
      (err: Error) => worker.send({ type: RESPONSE, id: m.id, error: err.message }),
    );
  };
  if (cluster.isPrimary) cluster.on("message", onMessage);

  let server: http.Server | undefined;
  let address: string | undefined;
  if (endpoint.where === "own" && endpoint.addr) {
    const { host, port } = splitAddr(endpoint.addr);
    const { createServer } = require("node:http") as typeof http; // about 1 MB: only when used
    server = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      if ((req.method === "GET" || req.method === "HEAD") && path === endpoint.path) {
        collect().then(
          ({ text, contentType }) => {
            res.writeHead(200, { "Content-Type": contentType, "Cache-Control": "no-store" });
            res.end(req.method === "HEAD" ? undefined : text);
          },
          (err: Error) => {
            res.writeHead(503, { "Content-Type": "text/plain; charset=utf-8" });
            res.end(`metrics unavailable: ${err.message}\n`);
          },
        );
        return;
      }
      res.writeHead(404, { "Content-Type": "text/plain; charset=utf-8" });
      res.end(`not found; metrics are at ${endpoint.path}\n`);
    });
    await new Promise<void>((resolve, reject) => {
      server!.once("error", reject);
      server!.listen(port, host, () => resolve());
    });
    const bound = server.address();
    address =
      typeof bound === "object" && bound
        ? `${bound.address.includes(":") ? `[${bound.address}]` : bound.address}:${bound.port}`
        : endpoint.addr;
    log?.info({ addr: address, path: endpoint.path }, `metrics on http://${address}${endpoint.path}`);
  }
  return {
    address,
    async close() {
      if (cluster.isPrimary) cluster.off("message", onMessage);
      if (server) await new Promise<void>((resolve) => server!.close(() => resolve()));
    },
  };
}

function splitAddr(addr: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(addr.trim());
  if (!m) throw new Error(`invalid metrics address ${JSON.stringify(addr)}: expected host:port`);
  return { host: m[1] ?? (m[2] || undefined), port: Number(m[3]) };
}
