import type { Server as HttpServer } from "node:http";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import { hasBody } from "./bodies.js";
import { writeRawError } from "./errors.js";
import { isTrustedProxy } from "./urls.js";

/**
 * What one client can hold of a worker: connections and time (issue 21, item 3).
 *  - `http.maxclientconnections`: connections one address may have open at once in this process; more
 *    are closed as they arrive. The addresses of `http.trustedproxies` are exempt (behind nginx every
 *    client has nginx's address; the proxy is where a per-client limit belongs then).
 *  - `http.headertimeout`: the request line and headers must arrive within it (Node's headersTimeout,
 *    which also closes a connection that sends nothing at all; over TLS, limitTlsHeaders).
 *  - `http.idletimeout`: a request whose body sends nothing for this long, while its handler waits for
 *    it, is cut with 408. Idle time, not total: a 10 GiB layer on a slow line goes through as long as
 *    bytes keep coming. While the handler is not reading (the storage is slow, the body waits in the
 *    buffers) the client is not idle.
 * HTTP/2 sessions that carry nothing are closed by Fastify's http2SessionTimeout.
 */

export interface ConnectionLimits {
  idleMs: number;
  headerMs: number;
  perClient: number;
  /** Addresses exempt from the per-client cap (http.trustedproxies). */
  exempt: readonly string[];
}

export function connectionLimits(config: Config): ConnectionLimits {
  return {
    idleMs: config.http.idletimeout,
    headerMs: config.http.headertimeout,
    perClient: config.http.maxclientconnections,
    exempt: config.http.trustedproxies,
  };
}

/**
 * Options for Node's HTTP/1.1 server: the header deadline, checked every half of it (so a late head is
 * cut within 1.5 times the deadline; Node's own check runs every 30 s, and a shorter one wakes an idle
 * worker more often).
 */
export function headerTimeoutOptions(limits: ConnectionLimits): {
  headersTimeout: number;
  connectionsCheckingInterval: number;
} {
  return {
    headersTimeout: limits.headerMs,
    connectionsCheckingInterval: Math.max(250, Math.min(30_000, Math.floor(limits.headerMs / 2))),
  };
}

/** How often a refusal is logged at most, per server. */
const REFUSAL_LOG_MS = 60_000;

/**
 * Closes connections beyond `limits.perClient` from one address as they arrive. `server` is any
 * net.Server (HTTP, HTTPS, HTTP/2, the ACME listener); counted on the TCP connection, before TLS.
 */
export function capConnectionsPerClient(
  server: { on(event: "connection", listener: (socket: Socket) => void): unknown },
  limits: ConnectionLimits,
  log: Pick<Logger, "warn">,
): void {
  if (limits.perClient <= 0) return;
  const open = new Map<string, number>();
  let lastLog = 0;
  let refusedSinceLog = 0;
  server.on("connection", (socket: Socket) => {
    const address = socket.remoteAddress;
    if (!address || isTrustedProxy(address, limits.exempt)) return;
    const count = open.get(address) ?? 0;
    if (count >= limits.perClient) {
      refusedSinceLog++;
      if (Date.now() - lastLog >= REFUSAL_LOG_MS) {
        log.warn(
          { remote: address, open: count, refused: refusedSinceLog },
          `closed connections from ${address}: it already has ${count} open (http.maxclientconnections)`,
        );
        lastLog = Date.now();
        refusedSinceLog = 0;
      }
      socket.destroy();
      return;
    }
    open.set(address, count + 1);
    socket.once("close", () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left <= 0) open.delete(address);
      else open.set(address, left);
    });
  });
}

interface Watched {
  request: FastifyRequest;
  /** Bytes of the body received so far. */
  received: () => number;
  last: number;
  since: number;
}

/** NGHTTP2_CANCEL, the RST_STREAM code for a stream cut by the server (not loading node:http2 for it). */
const HTTP2_CANCEL = 8;

/**
 * Cuts requests whose bodies stop coming (http.idletimeout): the requests with a body are watched from
 * their arrival until the body is complete, by one sweep a second for the whole process.
 */
export function cutIdleBodies(app: FastifyInstance, limits: ConnectionLimits, log: Logger): void {
  const idleMs = limits.idleMs;
  if (idleMs <= 0) return;
  const watched = new Set<Watched>();
  const sweepMs = Math.max(100, Math.min(1_000, Math.floor(idleMs / 4)));
  let timer: NodeJS.Timeout | undefined;

  const sweep = () => {
    const now = Date.now();
    for (const w of watched) {
      const raw = w.request.raw;
      if (raw.complete || raw.readableEnded || raw.destroyed) {
        watched.delete(w);
        continue;
      }
      const received = w.received();
      // Bytes came, or the handler has not taken what came (then the client is not the one waiting).
      if (received !== w.last || raw.readableLength > 0) {
        w.last = received;
        w.since = now;
        continue;
      }
      if (now - w.since < idleMs) continue;
      watched.delete(w);
      cut(w.request, now - w.since);
    }
    if (watched.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
    }
  };

  const cut = (request: FastifyRequest, idle: number) => {
    const raw = request.raw;
    log.info(
      { method: request.method, path: request.url, remote: raw.socket?.remoteAddress, idleMs: idle },
      "request body idle for too long (http.idletimeout): connection closed",
    );
    const stream = (raw as { stream?: { close(code: number): void } }).stream;
    if (raw.httpVersionMajor === 2 && stream) {
      stream.close(HTTP2_CANCEL);
      return;
    }
    const socket = raw.socket;
    if (!socket) return;
    const response = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (!response?.headersSent)
      writeRawError(socket, 408, "BLOB_UPLOAD_INVALID", "the request body stopped coming");
    socket.destroy();
  };

  app.addHook("onRequest", async (request) => {
    if (!hasBody(request)) return;
    // Counted where the body enters the request stream (Node's HTTP/1.1 parser and its HTTP/2
    // compatibility layer both push into it), without reading or changing how the stream flows.
    const raw = request.raw as typeof request.raw & {
      push(chunk: unknown, encoding?: BufferEncoding): boolean;
    };
    let bytes = 0;
    const push = raw.push;
    raw.push = function (this: typeof raw, chunk: unknown, encoding?: BufferEncoding) {
      if (chunk) bytes += (chunk as Buffer).length;
      return push.call(this, chunk, encoding);
    };
    const received = () => bytes;
    watched.add({ request, received, last: received(), since: Date.now() });
    timer ??= setInterval(sweep, sweepMs);
    timer.unref();
  });
  app.addHook("onClose", async () => {
    if (timer) clearInterval(timer);
    watched.clear();
  });
}

/**
 * HTTP/1.1 over TLS: Node's headersTimeout is not enforced on the HTTP/2 server that also speaks
 * HTTP/1.1, so a connection must bring its first request's head within `limits.headerMs` of its
 * handshake, or it gets 408 and is closed (later heads on the connection are bounded by the keep-alive
 * timeout). HTTP/2 sessions are left to Fastify's http2SessionTimeout.
 */
export function limitTlsHeaders(app: FastifyInstance, limits: ConnectionLimits): void {
  const served = new WeakSet<object>();
  app.addHook("onRequest", async (request) => {
    if (request.raw.httpVersionMajor === 1 && request.raw.socket) served.add(request.raw.socket);
  });
  (app.server as unknown as NodeJS.EventEmitter).on("secureConnection", (socket: TLSSocket) => {
    if (socket.alpnProtocol === "h2") return;
    const timer = setTimeout(() => {
      if (served.has(socket) || socket.destroyed) return;
      writeRawError(socket, 408, "UNSUPPORTED", "the request took too long");
      socket.destroy();
    }, limits.headerMs);
    timer.unref();
    socket.once("close", () => clearTimeout(timer));
  });
}

/** The per-client cap and the timeouts, on the application's server. */
export function guardConnections(app: FastifyInstance, limits: ConnectionLimits, log: Logger): void {
  capConnectionsPerClient(app.server as unknown as HttpServer, limits, log);
  cutIdleBodies(app, limits, log);
  limitTlsHeaders(app, limits);
}
