import { randomBytes } from "node:crypto";
import Fastify, {
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
  LogController,
} from "fastify";
// [auth wiring, issue 3] registerAuth: identity once per request, before any route.
import { registerAuth } from "./access.js";
import { API_BODY_LIMIT, closeForStrangers, keepBodiesUnread } from "./bodies.js";
import { connectionLimits, guardConnections, headerTimeoutOptions } from "./connections.js";
import type { AppContext } from "./context.js";
import { answerError, errorBody, handleClientError, sendError } from "./errors.js";
import { wireProxy } from "./proxy.js";
import { registerApiRoutes } from "./routes/api.js";
import { registerEventRoutes } from "./routes/events.js"; // [events, issue 14]
import { registerOpsRoutes } from "./routes/ops.js";
import { registerTokenRoutes } from "./routes/token.js";
import { registerUiRoutes } from "./routes/ui.js";
import { API_VERSION, registerV2Routes } from "./routes/v2/index.js";
import { originFormUrl, prefixOf } from "./urls.js";

const idPrefix = `${randomBytes(3).toString("hex")}${process.pid.toString(36)}`;
let idCounter = 0;

/** X-Request-Id when the caller sent a sane one, else a per-process prefix and a counter (cheap and unique). */
function requestId(headerValue: unknown): string {
  if (typeof headerValue === "string" && /^[A-Za-z0-9._-]{1,64}$/.test(headerValue)) return headerValue;
  idCounter = (idCounter + 1) % Number.MAX_SAFE_INTEGER;
  return `${idPrefix}-${idCounter.toString(36)}`;
}

/** Fastify's compiler factory for route schemas, which Berth does not use. */
function noSchemas(): () => never {
  return () => {
    throw new Error("Berth's routes declare no JSON schemas");
  };
}

/** Builds the whole HTTP application for one process. `serverOptions` carries TLS/HTTP2 settings. */
export async function buildApp(
  ctx: AppContext,
  serverOptions: Partial<FastifyServerOptions> = {},
): Promise<FastifyInstance> {
  const v2Root = `${prefixOf(ctx.config)}/v2`;
  const limits = connectionLimits(ctx.config);
  const app = Fastify({
    loggerInstance: ctx.log,
    // Fastify's own two lines per request are replaced by the one access-log line below.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: (req) => requestId(req.headers["x-request-id"]),
    // Absolute-form targets (from some proxies) are routed like origin-form ones.
    rewriteUrl: (req) => originFormUrl(req),
    // Bodies that end early and malformed requests get the spec's error body, not Fastify's.
    clientErrorHandler: handleClientError,
    // What the router refuses before any route runs (a malformed percent-escape in the path, a segment
    // too long) gets the spec's error body too, not Fastify's own.
    frameworkErrors: (err: Error, request: FastifyRequest, reply: FastifyReply) => {
      if (request.url.startsWith(`${v2Root}/`) || request.url === v2Root) {
        reply.header("Docker-Distribution-API-Version", API_VERSION);
      }
      sendError(err, request, reply);
    },
    // Big layers take as long as they take: no limit on a request's total time (an idle body is cut by
    // guardConnections below). No parser reads a body before its route authenticates (src/http/bodies.ts);
    // the few parsers that exist (the token endpoint's form) read small bodies.
    requestTimeout: 0,
    connectionTimeout: 0,
    keepAliveTimeout: 75_000,
    // Plain HTTP/1.1: the request head has http.headertimeout to arrive (see src/http/connections.ts).
    http: headerTimeoutOptions(limits),
    bodyLimit: API_BODY_LIMIT,
    return503OnClosing: true,
    forceCloseConnections: "idle",
    // No route declares a JSON schema: keep Fastify from loading ajv and fast-json-stringify
    // (their code costs start-up time and a few MB in every worker).
    schemaController: { compilersFactory: { buildValidator: noSchemas, buildSerializer: noSchemas } },
    ...serverOptions,
  } as FastifyServerOptions) as unknown as FastifyInstance;

  if (!ctx.config.log.accesslog.disabled) {
    // The client's address, read when the request arrives: over HTTP/2 the stream and its socket are gone
    // by onResponse, and request.ip with them.
    const remotes = new WeakMap<object, string | undefined>();
    app.addHook("onRequest", async (request) => {
      remotes.set(request, request.ip);
    });
    // One line per request: method, path, status, bytes, duration, request id.
    app.addHook("onResponse", async (request, reply) => {
      const length = reply.getHeader("content-length");
      request.log.info(
        {
          method: request.method,
          path: request.url,
          status: reply.statusCode,
          bytes: request.method === "HEAD" ? 0 : Number(length ?? 0),
          bytesIn: Number(request.headers["content-length"] ?? 0),
          ms: Math.round(reply.elapsedTime * 100) / 100,
          remote: remotes.get(request) ?? request.ip,
        },
        "request",
      );
    });
  }

  guardConnections(app, limits, ctx.log);
  keepBodiesUnread(app);
  app.addHook("onSend", closeForStrangers);
  app.setErrorHandler(answerError);
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).header("content-type", "application/json; charset=utf-8");
    return reply.send(
      request.method === "HEAD" ? undefined : errorBody("NOT_FOUND", "not found", { path: request.url }),
    );
  });

  wireProxy(ctx); // [pull-through cache, issue 13]
  await registerAuth(app, ctx); // [auth wiring, issue 3]
  await registerOpsRoutes(app, ctx);
  await registerTokenRoutes(app, ctx);
  await registerV2Routes(app, ctx);
  await registerApiRoutes(app, ctx);
  await registerEventRoutes(app, ctx); // [events, issue 14]
  await registerUiRoutes(app, ctx);
  return app;
}
