import { createHmac } from "node:crypto";
import http from "node:http";
import os from "node:os";
import { maskUrlPassword } from "../config/provenance.js";
import type { Config } from "../config/schema.js";
import type { EndpointRow, EventRow, EventStore } from "../metadata/events-queries.js";
import { holderIsDead } from "../metadata/gc-queries.js";
import {
  accepts,
  compileFilter,
  type DistributionEvent,
  type EndpointConfig,
  type EndpointFilter,
  EVENTS_MEDIA_TYPE,
  type EventRecorder,
  enabledEndpoints,
} from "./events.js";
import { httpsModule } from "./https-module.js";
import { Counter, Gauge, Histogram, meterNamed } from "./meters.js";

/**
 * The dispatcher (issue 14): delivers the outbox to each configured endpoint, in commit order, at
 * least once. Every worker process runs one; per endpoint, only the process holding the endpoint's
 * lease (a column of its row) sends, so each event goes out from one process. The cursor moves in
 * the same transaction that checks the lease, after the receiver answered 2xx/3xx: a crash between
 * the answer and that commit sends the batch again, with the same event ids.
 *
 * Idle cost: a wake-up from this process's own commits, and one small read per endpoint every
 * second (unref'd timers) for events committed by other processes.
 */

export interface DispatchLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface DispatcherOptions {
  /** How often an idle endpoint looks for events committed by other processes. */
  pollMs?: number;
  /** Reads a file named by the configuration (`signature.secretfile`) as text: the caller knows files. */
  readFile: (file: string) => string;
}

const DEFAULT_POLL_MS = 1_000;
/** After a local commit, how long to wait for more before delivering (one request, one write for all). */
const WAKE_DELAY_MS = 20;
/**
 * While commits keep coming, deliveries they trigger are at least this far apart: each delivery is
 * a database write (and an fsync) beside the pushes, so a stream of pushes gets batched deliveries
 * rather than one per push. A backlog is still drained back to back.
 */
const WAKE_INTERVAL_MS = 250;
const PRUNE_EVERY_MS = 10 * 60_000;
const CLOUDEVENTS_TYPE_PREFIX = "io.berth.registry.";

/** The events to send, as the receiver will see them, and the body's content type. */
export function formatBody(
  format: EndpointConfig["format"],
  events: DistributionEvent[],
): { contentType: string; body: string } {
  if (format === "cloudevents") {
    const wrapped = events.map(toCloudEvent);
    return wrapped.length === 1
      ? { contentType: "application/cloudevents+json", body: JSON.stringify(wrapped[0]) }
      : { contentType: "application/cloudevents-batch+json", body: JSON.stringify(wrapped) };
  }
  return { contentType: EVENTS_MEDIA_TYPE, body: JSON.stringify({ events }) };
}

/** CloudEvents 1.0, structured JSON: the Distribution event is the `data`. */
export function toCloudEvent(e: DistributionEvent): Record<string, unknown> {
  const t = e.target;
  const subject = `${t.repository}${t.tag ? `:${t.tag}` : ""}${t.digest ? `@${t.digest}` : ""}`;
  return {
    specversion: "1.0",
    id: e.id,
    source: `//${e.source.addr}/${e.source.instanceID}`,
    type: `${CLOUDEVENTS_TYPE_PREFIX}${e.action}`,
    subject,
    time: e.timestamp,
    datacontenttype: "application/json",
    data: e,
  };
}

/** `sha256=<hex>`: HMAC-SHA256 of the body with the endpoint's secret. */
export function signature(secret: Buffer, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

/** The endpoint's secret, from the configuration or its file (trailing newline dropped). */
export function endpointSecret(e: EndpointConfig, readFile: (file: string) => string): Buffer | null {
  if (!e.signature) return null;
  if (e.signature.secret !== undefined) return Buffer.from(e.signature.secret, "utf8");
  const file = e.signature.secretfile as string;
  return Buffer.from(readFile(file).replace(/\r?\n$/, ""), "utf8");
}

export function batchSizeOf(e: EndpointConfig): number {
  return e.batchsize ?? (e.format === "cloudevents" ? 1 : 100);
}

/** The delay before attempt `failures + 1`: `backoff` doubled per failure, at most `maxbackoff`. */
export function backoffDelay(e: EndpointConfig, failures: number): number {
  const base = Math.max(1, e.backoff);
  return Math.min(Math.max(base, e.maxbackoff), base * 2 ** Math.min(Math.max(failures - 1, 0), 30));
}

function leaseTtl(e: EndpointConfig): number {
  return Math.max(30_000, 2 * e.timeout + 10_000);
}

const HOLDER = `${os.hostname()}:${process.pid}:${Math.random().toString(16).slice(2, 10)}`;

const NETWORK_ERRORS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "name lookup failed",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ETIMEDOUT: "connection timed out",
  EPIPE: "connection closed",
  DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed certificate",
  CERT_HAS_EXPIRED: "certificate expired",
};

export interface SendResult {
  status: number | null;
  error: string | null;
  ok: boolean;
  ms: number;
}

/** Keep-alive connections to the receivers, a few per endpoint (one request at a time per endpoint). */
const AGENTS: { http: http.Agent; https?: http.Agent } = {
  http: new http.Agent({ keepAlive: true, maxSockets: 4 }),
};
const httpsAgent = () => {
  AGENTS.https ??= new (httpsModule().Agent)({ keepAlive: true, maxSockets: 4 });
  return AGENTS.https;
};

class DeliveryTimeout extends Error {}

/**
 * POSTs `body` and resolves with the status once the answer has been read. node:http rather than
 * fetch: fetch refuses the "bad ports" of browsers (6000, 6666, 10080, ...), which an operator's
 * receiver may well use. Redirects are not followed (3xx counts as delivered, as in registry:2).
 */
function post(
  url: URL,
  headers: Record<string, string | string[]>,
  body: Buffer,
  timeoutMs: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const tls = url.protocol === "https:";
    const req = (tls ? httpsModule() : http).request(url, {
      method: "POST",
      headers: { ...headers, "content-length": String(body.length) },
      agent: tls ? httpsAgent() : AGENTS.http,
    });
    const timer = setTimeout(() => req.destroy(new DeliveryTimeout()), timeoutMs);
    req.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.on("response", (res) => {
      res.on("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      res.on("end", () => {
        clearTimeout(timer);
        resolve(res.statusCode ?? 0);
      });
      res.on("close", () => {
        clearTimeout(timer);
        if (!res.complete) reject(Object.assign(new Error("connection closed"), { code: "ECONNRESET" }));
      });
      res.resume();
    });
    req.end(body);
  });
}

/** One POST to the endpoint. Never throws; the error text holds no header, secret or URL password. */
export async function send(
  e: EndpointConfig,
  secret: Buffer | null,
  events: DistributionEvent[],
): Promise<SendResult> {
  const started = performance.now();
  const { contentType, body } = formatBody(e.format, events);
  const headers: Record<string, string | string[]> = {};
  const lower = new Set<string>();
  for (const [name, values] of Object.entries(e.headers ?? {})) {
    headers[name] = values;
    lower.add(name.toLowerCase());
  }
  const set = (name: string, value: string) => {
    for (const key of Object.keys(headers)) if (key.toLowerCase() === name) delete headers[key];
    headers[name] = value;
  };
  set("content-type", contentType);
  // user:password in the URL means HTTP basic authentication (as Go's client does for registry:2).
  const url = new URL(e.url);
  if (url.username || url.password) {
    if (!lower.has("authorization")) {
      const credentials = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
      set("authorization", `Basic ${Buffer.from(credentials).toString("base64")}`);
    }
    url.username = "";
    url.password = "";
  }
  if (!lower.has("user-agent")) set("user-agent", "berth-notifications");
  if (secret && e.signature) set(e.signature.header.toLowerCase(), signature(secret, body));
  try {
    const status = await post(url, headers, Buffer.from(body, "utf8"), e.timeout);
    const ok = status >= 200 && status < 400;
    return {
      status,
      ok,
      error: ok ? null : `receiver answered ${status}`,
      ms: performance.now() - started,
    };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const text =
      err instanceof DeliveryTimeout
        ? `no answer within ${e.timeout} ms`
        : code && NETWORK_ERRORS[code]
          ? `${NETWORK_ERRORS[code]} (${code})`
          : (code ?? (err as Error).message);
    return {
      status: null,
      ok: false,
      error: maskUrlPassword(String(text)).slice(0, 300),
      ms: performance.now() - started,
    };
  }
}

class EndpointWorker {
  private timer: NodeJS.Timeout | null = null;
  private busy: Promise<void> | null = null;
  private again = false;
  private dueAt = 0;
  /** When the last step that found events started (for WAKE_INTERVAL_MS). */
  private lastRunAt = 0;
  stopped = false;
  private readonly filter: EndpointFilter;
  private readonly batch: number;

  constructor(
    private readonly outbox: EventStore,
    private readonly e: EndpointConfig,
    private readonly secret: Buffer | null,
    private readonly log: DispatchLogger,
    private readonly pollMs: number,
  ) {
    this.filter = compileFilter(e);
    this.batch = batchSizeOf(e);
  }

  get name(): string {
    return this.e.name;
  }

  /** Events were committed in this process: look soon, gathering the commits of the next few ms into one batch. */
  wake(): void {
    if (this.stopped) return;
    if (this.busy) {
      this.again = true;
      return;
    }
    const delay = this.wakeDelay();
    if (this.timer && this.dueAt <= Date.now() + delay) return;
    this.schedule(delay);
  }

  private wakeDelay(): number {
    return Math.max(WAKE_DELAY_MS, this.lastRunAt + WAKE_INTERVAL_MS - Date.now());
  }

  private schedule(delay: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.dueAt = Date.now() + delay;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.busy = this.tick()
        .then(
          (next) => next,
          (err: unknown) => {
            this.log.warn(
              { endpoint: this.e.name, err: String(err) },
              "events: dispatcher error; trying again",
            );
            return this.pollMs;
          },
        )
        .then((next) => {
          this.busy = null;
          const again = this.again;
          this.again = false;
          this.schedule(again ? Math.min(next, this.wakeDelay()) : next);
        });
    }, delay);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.busy;
    await this.outbox.releaseEndpoint(this.e.name, HOLDER).catch(() => {});
  }

  /** One step; returns the delay before the next. */
  private async tick(): Promise<number> {
    const now = Date.now();
    let row = await this.outbox.endpointRow(this.e.name);
    if (!row) return this.pollMs;
    if (row.next_attempt_at > now) return Math.min(row.next_attempt_at - now, this.pollMs);
    const held = row.lease_holder !== null && row.lease_holder !== HOLDER && (row.lease_until ?? 0) >= now;
    // A holder on this host whose process is gone (kill -9, crash) is taken over at once; were that wrong,
    // two processes would send for a while: duplicates, never a loss.
    if (held && !holderIsDead(row.lease_holder as string, HOLDER)) return this.pollMs;
    // Read before writing: an idle endpoint costs no write at all.
    const limit = Math.max(this.batch * 4, 200);
    let pending = await this.outbox.eventsAfter(row.cursor, limit);
    if (pending.length === 0) return this.pollMs;
    // The lease is written only when not ours or half gone, not once per delivery.
    const ttl = leaseTtl(this.e);
    if (row.lease_holder !== HOLDER || (row.lease_until ?? 0) - now < ttl / 2) {
      const stale = held ? row.lease_holder : null;
      if (!(await this.outbox.leaseEndpoint(this.e.name, HOLDER, ttl, stale))) return this.pollMs;
      const cursor = row.cursor;
      row = await this.outbox.endpointRow(this.e.name);
      if (!row || row.next_attempt_at > Date.now()) return this.pollMs;
      if (row.cursor !== cursor) pending = await this.outbox.eventsAfter(row.cursor, limit);
    }
    return this.deliverFrom(row, pending);
  }

  private async deliverFrom(row: EndpointRow, pending: EventRow[]): Promise<number> {
    this.lastRunAt = Date.now();
    const chosen: DistributionEvent[] = [];
    let last = row.cursor;
    let first = 0;
    for (const r of pending) {
      // The columns decide most filters; the body is parsed only for what may be sent.
      let event: DistributionEvent | null = null;
      if (accepts(this.filter, { action: r.action, repository: r.repository })) {
        event = JSON.parse(r.body) as DistributionEvent;
        const mediaType = event.target.mediaType;
        if (mediaType !== undefined && this.filter.ignoredMediaTypes.has(mediaType)) event = null;
      }
      if (event) {
        if (chosen.length === this.batch) break;
        chosen.push(event);
        if (first === 0) first = r.id;
      }
      last = r.id;
    }
    const now = Date.now();
    if (chosen.length === 0) {
      // Nothing here for this endpoint: move past what its filters leave out.
      await this.outbox.recordOutcome({
        name: this.e.name,
        holder: HOLDER,
        from: row.cursor,
        cursor: last,
        delivered: 0,
        failures: row.failures,
        nextAttemptAt: row.next_attempt_at,
        failingSince: row.failing_since,
        error: row.last_error,
        success: false,
        attempt: null,
        now,
      });
      return 0;
    }
    const result = await send(this.e, this.secret, chosen);
    const attempt = {
      first_event: first,
      last_event: last,
      events: chosen.length,
      status: result.status,
      error: result.error,
      attempted_at: now,
      duration_ms: Math.round(result.ms),
    };
    if (result.ok) {
      const kept = await this.outbox.recordOutcome({
        name: this.e.name,
        holder: HOLDER,
        from: row.cursor,
        cursor: last,
        delivered: chosen.length,
        failures: 0,
        nextAttemptAt: 0,
        failingSince: null,
        error: null,
        success: true,
        attempt,
        now: Date.now(),
      });
      if (!kept) return 0; // lost the lease, or redelivery moved the cursor: look again
      delivered().inc({ endpoint: this.e.name }, chosen.length);
      deliverySeconds().observe({ endpoint: this.e.name }, result.ms / 1000);
      if (row.failing_since !== null) {
        this.log.info(
          { endpoint: this.e.name, failingForMs: Date.now() - row.failing_since },
          "events: endpoint recovered; delivering its backlog",
        );
      }
      return 0;
    }
    const failures = row.failures + 1;
    const delay = backoffDelay(this.e, failures);
    const failing = failures >= Math.max(1, this.e.threshold);
    const failingSince = failing ? (row.failing_since ?? now) : row.failing_since;
    await this.outbox.recordOutcome({
      name: this.e.name,
      holder: HOLDER,
      from: row.cursor,
      cursor: row.cursor,
      delivered: 0,
      failures,
      nextAttemptAt: now + delay,
      failingSince,
      error: result.error,
      success: false,
      attempt,
      now,
    });
    failed().inc({ endpoint: this.e.name });
    if (failing && row.failing_since === null) {
      this.log.error(
        { endpoint: this.e.name, failures, error: result.error, retryInMs: delay },
        "events: endpoint is failing; events are kept and retried",
      );
    } else {
      this.log.warn(
        { endpoint: this.e.name, failures, error: result.error, retryInMs: delay },
        "events: delivery failed; will retry",
      );
    }
    return delay;
  }
}

/**
 * Starts delivery in this process for every enabled endpoint. Returns a function that stops it:
 * requests in flight finish (bounded by the endpoints' timeouts), leases are released.
 */
export async function startEventDispatcher(
  outbox: EventStore,
  recorder: EventRecorder,
  config: Config,
  log: DispatchLogger,
  options: DispatcherOptions,
): Promise<() => Promise<void>> {
  const endpoints = enabledEndpoints(config);
  if (endpoints.length === 0) return async () => {};
  if (config.metrics?.enabled !== false) registerEventMetrics(outbox, config);
  const pollMs = options.pollMs ?? DEFAULT_POLL_MS;
  await outbox.ensureEndpoints(endpoints.map((e) => e.name));
  const workers: EndpointWorker[] = [];
  for (const e of endpoints) {
    let secret: Buffer | null = null;
    try {
      secret = endpointSecret(e, options.readFile);
    } catch (err) {
      // Events stay in the outbox until the file is readable and Berth restarts.
      log.error(
        { endpoint: e.name, file: e.signature?.secretfile, error: (err as NodeJS.ErrnoException).code },
        "events: cannot read the endpoint's signature secret file; not delivering to it",
      );
      continue;
    }
    workers.push(new EndpointWorker(outbox, e, secret, log, pollMs));
  }
  const unsubscribe = recorder.onRecorded(() => {
    for (const w of workers) w.wake();
  });
  for (const w of workers) w.wake();
  const names = endpoints.map((e) => e.name);
  const prune = setInterval(
    () => {
      outbox
        .pruneEvents(names, Date.now() - config.notifications.events.keep)
        .catch((err: unknown) => log.warn({ err: String(err) }, "events: pruning failed"));
    },
    PRUNE_EVERY_MS * (0.75 + Math.random() * 0.5),
  );
  prune.unref();
  log.info(
    { endpoints: workers.map((w) => w.name) },
    `events: delivering to ${workers.length} endpoint${workers.length === 1 ? "" : "s"}`,
  );
  return async () => {
    clearInterval(prune);
    unsubscribe();
    await recorder.flush();
    await Promise.all(workers.map((w) => w.stop()));
  };
}

// ------------------------------------------------------------------------------------------------
// Metrics (prom-client's default registry; workers are summed by the primary, gauges take the max)

function metric<T>(name: string, make: () => T): T {
  return (meterNamed(name) as T | undefined) ?? make();
}

const delivered = () =>
  metric(
    "berth_events_delivered_total",
    () =>
      new Counter({
        name: "berth_events_delivered_total",
        help: "Events delivered to a webhook endpoint (answered 2xx or 3xx).",
        labelNames: ["endpoint"],
      }),
  );
const failed = () =>
  metric(
    "berth_events_delivery_failures_total",
    () =>
      new Counter({
        name: "berth_events_delivery_failures_total",
        help: "Delivery attempts to a webhook endpoint that failed (error status, timeout, refused).",
        labelNames: ["endpoint"],
      }),
  );
const deliverySeconds = () =>
  metric(
    "berth_events_delivery_seconds",
    () =>
      new Histogram({
        name: "berth_events_delivery_seconds",
        help: "How long a webhook endpoint took to answer a delivery.",
        labelNames: ["endpoint"],
        buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      }),
  );

/** Gauges read from the database when scraped: backlog and failing state per endpoint. */
function registerEventMetrics(outbox: EventStore, config: Config): void {
  delivered();
  failed();
  deliverySeconds();
  const names = new Set(enabledEndpoints(config).map((e) => e.name));
  let cache: { at: number; value: Promise<{ row: EndpointRow; backlog: number }[]> } | null = null;
  const snapshot = () => {
    if (!cache || Date.now() - cache.at > 5_000) {
      const value = outbox
        .endpointRows()
        .then((rows) =>
          Promise.all(
            rows
              .filter((r) => names.has(r.name))
              .map(async (row) => ({ row, backlog: await outbox.backlog(row.cursor) })),
          ),
        );
      value.catch(() => {
        cache = null;
      });
      cache = { at: Date.now(), value };
    }
    return cache.value;
  };
  metric(
    "berth_events_backlog",
    () =>
      new Gauge({
        name: "berth_events_backlog",
        help: "Events recorded but not yet delivered to a webhook endpoint (before its filters).",
        labelNames: ["endpoint"],
        aggregator: "max",
        async collect() {
          for (const s of await snapshot()) this.set({ endpoint: s.row.name }, s.backlog);
        },
      }),
  );
  metric(
    "berth_events_endpoint_failing",
    () =>
      new Gauge({
        name: "berth_events_endpoint_failing",
        help: "1 while a webhook endpoint has failed `threshold` times in a row, else 0.",
        labelNames: ["endpoint"],
        aggregator: "max",
        async collect() {
          for (const s of await snapshot()) this.set({ endpoint: s.row.name }, s.row.failing_since ? 1 : 0);
        },
      }),
  );
}
