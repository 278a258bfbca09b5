import { randomBytes } from "node:crypto";
import { constants as fsc } from "node:fs";
import fs from "node:fs/promises";
import type net from "node:net";
import path from "node:path";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { safeEqual } from "../../auth/credentials.js";
import type { Config } from "../../config/schema.js";
import { requireAdmin } from "../access.js";
import type { AppContext } from "../context.js";
import { contentType, metricsEndpoint, processMetrics, scrape, setMetricsSource } from "../metrics.js";
import { sendfileBytes } from "../sendfile.js";
import { prefixOf } from "../urls.js";

/**
 * Operations, registered on the root instance (hooks here apply to every route, 404s included):
 *  - `http.headers` on every response, and CORS preflight (OPTIONS on any path) answered before
 *    any authentication;
 *  - per-request metrics (count, latency, bytes in and out) and `/metrics`;
 *  - `/healthz` (the process answers) and `/readyz` (storage writable, database answering).
 */
export async function registerOpsRoutes(app: FastifyInstance, ctx: AppContext): Promise<void> {
  // Metrics first, so that preflights answered by the header hook are counted too.
  registerMetrics(app, ctx);
  registerHeaders(app, ctx.config);
  registerHealth(app, ctx);
}

// ---------------------------------------------------------------------------------------------
// Headers and CORS

/** Headers whose several configured values are one comma-separated list. */
const LIST_HEADERS = new Set([
  "access-control-allow-methods",
  "access-control-allow-headers",
  "access-control-expose-headers",
  "vary",
  "cache-control",
]);

interface HeaderPlan {
  /** Set on every response as configured. */
  fixed: [string, string | string[]][];
  /** Configured Access-Control-Allow-Origin values ("*" or origins). */
  origins: string[] | undefined;
  credentials: boolean;
}

function planHeaders(config: Config): HeaderPlan {
  const fixed: [string, string | string[]][] = [];
  let origins: string[] | undefined;
  let credentials = false;
  for (const [name, values] of Object.entries(config.http.headers)) {
    const lower = name.toLowerCase();
    if (values.length === 0) continue;
    if (lower === "access-control-allow-origin") {
      origins = values.flatMap((v) => v.split(/[\s,]+/)).filter(Boolean);
      continue;
    }
    if (lower === "access-control-allow-credentials")
      credentials = values.some((v) => v.trim().toLowerCase() === "true");
    if (LIST_HEADERS.has(lower) || values.length === 1) fixed.push([name, values.join(", ")]);
    else fixed.push([name, values]);
  }
  return { fixed, origins, credentials };
}

/**
 * The Access-Control-Allow-Origin to send for this request's Origin: browsers accept one origin
 * (or "*"), so a configured list is matched against the request.
 */
function allowOrigin(plan: HeaderPlan, origin: string | undefined): string | undefined {
  if (!plan.origins || plan.origins.length === 0) return undefined;
  const any = plan.origins.includes("*");
  if (!origin) return plan.origins.length === 1 ? plan.origins[0] : any ? "*" : undefined;
  if (plan.origins.some((o) => o.replace(/\/+$/, "").toLowerCase() === origin.toLowerCase())) return origin;
  // "*" with credentials is refused when the configuration loads (src/config/load.ts): never echo any Origin.
  if (any) return "*";
  return undefined;
}

function registerHeaders(app: FastifyInstance, config: Config): void {
  const plan = planHeaders(config);
  const hasCors =
    plan.origins !== undefined || plan.fixed.some(([n]) => n.toLowerCase().startsWith("access-control-"));

  app.addHook("onRequest", async (request, reply) => {
    // On the raw response, so that they survive error handlers and streamed or hijacked replies.
    const raw = reply.raw;
    for (const [name, value] of plan.fixed) raw.setHeader(name, value);
    const origin = typeof request.headers.origin === "string" ? request.headers.origin : undefined;
    const allowed = allowOrigin(plan, origin);
    if (allowed) raw.setHeader("Access-Control-Allow-Origin", allowed);
    if (plan.origins && (plan.origins.length > 1 || plan.origins.includes("*")))
      raw.setHeader("Vary", "Origin");

    if (request.method === "OPTIONS") {
      // A preflight carries no credentials: answer it here, before any route or authentication.
      reply.header("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
      if (hasCors && allowed && request.headers["access-control-request-method"]) {
        // Configured Access-Control-* headers are sent as they are; what a browser needs and the
        // configuration leaves out is filled in for the origin that was allowed.
        if (!raw.hasHeader("Access-Control-Allow-Methods")) {
          reply.header("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
        }
        const asked = request.headers["access-control-request-headers"];
        if (
          !raw.hasHeader("Access-Control-Allow-Headers") &&
          typeof asked === "string" &&
          /^[\w\s,-]+$/.test(asked)
        ) {
          reply.header("Access-Control-Allow-Headers", asked);
        }
      }
      return reply.code(204).send();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Metrics

const V2_ROUTES: [RegExp, string][] = [
  [/^\/v2\/?$/, "/v2/"],
  [/^\/v2\/_catalog$/, "/v2/_catalog"],
  [/^\/v2\/.+\/blobs\/uploads\/?$/, "/v2/{name}/blobs/uploads/"],
  [/^\/v2\/.+\/blobs\/uploads\/[^/]+$/, "/v2/{name}/blobs/uploads/{uuid}"],
  [/^\/v2\/.+\/blobs\/[^/]+$/, "/v2/{name}/blobs/{digest}"],
  [/^\/v2\/.+\/manifests\/[^/]+$/, "/v2/{name}/manifests/{reference}"],
  [/^\/v2\/.+\/tags\/list$/, "/v2/{name}/tags/list"],
  [/^\/v2\/.+\/referrers\/[^/]+$/, "/v2/{name}/referrers/{digest}"],
];

/** A low-cardinality name for the route: the API endpoint's template, never a repository name. */
export function routeLabel(request: FastifyRequest, prefix = ""): string {
  const url = request.url;
  const q = url.indexOf("?");
  let p = q >= 0 ? url.slice(0, q) : url;
  if (prefix && p.startsWith(prefix)) p = p.slice(prefix.length) || "/";
  if (request.method === "OPTIONS") return "preflight";
  if (p.startsWith("/v2")) {
    for (const [re, label] of V2_ROUTES) if (re.test(p)) return label;
    return "/v2/{unknown}";
  }
  const template = request.routeOptions?.url;
  if (template && template !== "*" && template !== "/*") return template;
  return "other";
}

interface Started {
  at: bigint;
}

const started = new WeakMap<FastifyRequest, Started>();
/** Bytes already counted on each connection, so that keep-alive requests are counted once. */
const counted = new WeakMap<net.Socket, { read: number; written: number }>();

function registerMetrics(app: FastifyInstance, ctx: AppContext): void {
  const endpoint = metricsEndpoint(ctx.config);
  if (endpoint.where === "off") return;
  const m = processMetrics();
  const usage = ctx.metadata.usage;
  setMetricsSource({
    uploads: () => usage.uploadUsage(),
    async blobs() {
      const usage = await ctx.metadata.usage.totalUsage();
      return { count: usage.blobs, bytes: usage.bytes };
    },
  });
  const prefix = prefixOf(ctx.config);

  app.addHook("onRequest", async (request) => {
    started.set(request, { at: process.hrtime.bigint() });
    m.inFlight.inc();
  });

  const finish = (request: FastifyRequest, reply: FastifyReply) => {
    const start = started.get(request);
    if (!start) return;
    started.delete(request);
    m.inFlight.dec();
    const route = routeLabel(request, prefix);
    const method = request.method;
    m.requests.inc({ method, route, status: String(reply.statusCode) });
    m.duration.observe({ method, route }, Number(process.hrtime.bigint() - start.at) / 1e9);
    const socket = request.raw.socket as net.Socket | null;
    if (socket) {
      const before = counted.get(socket) ?? { read: 0, written: 0 };
      const read = socket.bytesRead ?? 0;
      const written = (socket.bytesWritten ?? 0) + sendfileBytes(socket);
      if (read > before.read) m.bytesIn.inc({ route }, read - before.read);
      if (written > before.written) m.bytesOut.inc({ route }, written - before.written);
      counted.set(socket, { read, written });
    }
  };
  app.addHook("onResponse", async (request, reply) => finish(request, reply));
  // A client that goes away mid-request never gets onResponse.
  app.addHook("onRequestAbort", async (request) => {
    if (!started.has(request)) return;
    started.delete(request);
    m.inFlight.dec();
    m.requests.inc({ method: request.method, route: routeLabel(request, prefix), status: "aborted" });
  });

  if (endpoint.where === "main") {
    app.route({
      method: ["GET", "HEAD"],
      url: endpoint.path,
      handler: async (request, reply) => {
        await requireMetricsReader(request, ctx.config);
        const text = await scrape();
        return reply
          .code(200)
          .header("Content-Type", contentType)
          .header("Cache-Control", "no-store")
          .send(text);
      },
    });
  }
}

/**
 * Metrics name repositories and their sizes: with authentication on, `/metrics` on the main port answers
 * administrators, the users of `metrics.users`, and a scraper that sends `metrics.token` as a Bearer
 * token (compared in constant time). With authentication off it is open, as in registry:2.
 */
async function requireMetricsReader(request: FastifyRequest, config: Config): Promise<void> {
  const token = config.metrics.token;
  const authorization = request.headers.authorization;
  if (token && authorization && /^bearer /i.test(authorization)) {
    if (safeEqual(authorization.slice(7).trim(), token)) return;
  }
  await requireAdmin(
    request,
    "only administrators and the readers named in metrics.users or metrics.token may read metrics",
    config.metrics.users,
  );
}

// ---------------------------------------------------------------------------------------------
// Health

const CHECK_TIMEOUT_MS = 5_000;

async function timed(
  name: string,
  check: () => Promise<void>,
): Promise<{ name: string; ok: boolean; ms: number; error?: string }> {
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      check(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS / 1000}s`)),
          CHECK_TIMEOUT_MS,
        );
      }),
    ]);
    return { name, ok: true, ms: Math.round(performance.now() - t0) };
  } catch (err) {
    return { name, ok: false, ms: Math.round(performance.now() - t0), error: (err as Error).message };
  } finally {
    clearTimeout(timer);
  }
}

/** Writes, fsyncs and removes a small file where uploads are written: the data directory works. */
async function probeWritable(dir: string): Promise<void> {
  const probeDir = path.join(dir, "berth");
  await fs.mkdir(probeDir, { recursive: true });
  const file = path.join(probeDir, `.readyz-${process.pid}-${randomBytes(4).toString("hex")}`);
  const handle = await fs.open(file, fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o600);
  try {
    await handle.writeFile("ok\n");
    await handle.sync();
  } finally {
    await handle.close();
    await fs.rm(file, { force: true });
  }
}

function registerHealth(app: FastifyInstance, ctx: AppContext): void {
  const noStore = (reply: FastifyReply) => reply.header("Cache-Control", "no-store");

  app.route({
    method: ["GET", "HEAD"],
    url: "/healthz",
    handler: async (_request, reply) => noStore(reply).code(200).send({ status: "ok" }),
  });

  app.route({
    method: ["GET", "HEAD"],
    url: "/readyz",
    handler: async (_request, reply) => {
      const readOnly = ctx.config.storage.maintenance.readonly.enabled;
      const checks = await Promise.all([
        timed(
          "storage",
          readOnly
            ? // A read-only registry may sit on a read-only mount: readable is enough.
              () => fs.access(ctx.dataDir, fsc.R_OK)
            : () => probeWritable(ctx.dataDir),
        ),
        timed("database", async () => {
          await ctx.metadata.ping();
        }),
      ]);
      const ok = checks.every((c) => c.ok);
      if (!ok) {
        ctx.log.warn({ checks: checks.filter((c) => !c.ok) }, "readiness check failed");
      }
      const body = {
        status: ok ? "ok" : "unavailable",
        readOnly,
        checks: Object.fromEntries(
          checks.map((c) => [
            c.name,
            { status: c.ok ? "ok" : "failed", ms: c.ms, ...(c.error ? { error: c.error } : {}) },
          ]),
        ),
      };
      return noStore(reply)
        .code(ok ? 200 : 503)
        .send(body);
    },
  });
}
