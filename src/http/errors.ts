import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { databaseUnavailable } from "../metadata/dialect.js";
import { type ErrorCode, isRegistryError, RegistryError } from "../registry/errors.js";
import { isStoreUnavailable } from "../storage/blob-store.js";
import { knownCaller } from "./access.js";

const STATUS: Record<ErrorCode, number> = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  TAG_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  RANGE_INVALID: 416,
  PAGINATION_NUMBER_INVALID: 400,
  NOT_FOUND: 404,
  UNAVAILABLE: 503,
};

export function statusFor(err: RegistryError): number {
  return err.status ?? STATUS[err.code] ?? 500;
}

export function errorBody(code: string, message: string, detail?: unknown): string {
  return JSON.stringify({ errors: [{ code, message, detail: detail ?? null }] });
}

/** How much of a refused request's unread body is read and dropped before the answer, and for how long at most. */
const UNREAD_BODY_LIMIT = 256 * 1024 * 1024;
const UNREAD_BODY_WAIT_MS = 30_000;

/**
 * The error handler of every route scope. An error often comes before the request's body was read (an
 * unknown or busy upload, a refused credential). On a connection that stays open Node reads and drops that
 * body after the answer. On one that closes after it (the client sent `Connection: close`, as nginx does
 * to its upstreams) closing at once resets the connection under the body the client is still sending, and
 * a proxy turns the reset into a 502 in place of the answer: there the rest of the body is read and
 * dropped first, up to UNREAD_BODY_LIMIT bytes or UNREAD_BODY_WAIT_MS, then the answer goes out.
 * Not for a caller who never authenticated: its connection closes after the answer, unread (see
 * closeForStrangers in src/http/bodies.ts).
 */
export function answerError(
  err: unknown,
  request: FastifyRequest,
  reply: FastifyReply,
): FastifyReply | Promise<void> {
  if (!closesWithBodyUnread(request.raw, reply.raw) || !knownCaller(request)) {
    return sendError(err, request, reply);
  }
  return dropUnreadBody(request.raw).then(() => {
    sendError(err, request, reply);
  });
}

function closesWithBodyUnread(raw: IncomingMessage, res: ServerResponse): boolean {
  return (
    raw.httpVersionMajor === 1 &&
    !res.shouldKeepAlive &&
    !raw.complete &&
    !raw.destroyed &&
    !raw.readableEnded &&
    raw.readableFlowing === null &&
    (raw.headers["content-length"] !== undefined || raw.headers["transfer-encoding"] !== undefined)
  );
}

function dropUnreadBody(raw: IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    let dropped = 0;
    const done = () => {
      clearTimeout(timer);
      raw.off("data", onData);
      raw.off("end", done);
      raw.off("close", done);
      raw.off("error", done);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      dropped += chunk.length;
      if (dropped > UNREAD_BODY_LIMIT) done();
    };
    const timer = setTimeout(done, UNREAD_BODY_WAIT_MS);
    raw.on("data", onData);
    raw.once("end", done);
    raw.once("close", done);
    raw.once("error", done);
  });
}

/** Turns any error into the spec's response: status, headers and `{"errors":[...]}`. Never a 500 for bad input. */
export function sendError(err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  let registryError: RegistryError;
  if (isRegistryError(err)) {
    registryError = err;
  } else if (isStoreUnavailable(err)) {
    // The blob store (S3) failed after its bounded retries: the client may try again, nothing is half-done.
    request.log.error(
      { operation: err.operation, error: err.message },
      `blob store unavailable: ${err.operation}`,
    );
    registryError = new RegistryError(
      "UNAVAILABLE",
      "the registry's blob storage is unavailable; try again later",
      { operation: err.operation },
      { "Retry-After": String(err.retryAfterSeconds) },
      503,
    );
  } else {
    registryError = fromFrameworkError(err as FastifyError);
    if (registryError.code === "UNAVAILABLE") {
      request.log.error({ err }, "request failed");
    }
  }
  const status = statusFor(registryError);
  reply.code(status);
  for (const [name, value] of Object.entries(registryError.headers)) reply.header(name, value);
  reply.header("content-type", "application/json; charset=utf-8");
  if (request.method === "HEAD") return reply.send();
  return reply.send(errorBody(registryError.code, registryError.message, registryError.detail));
}

function fromFrameworkError(err: FastifyError): RegistryError {
  // Before the errno checks below: a database socket reset is not a client that went away.
  const database = databaseUnavailable(err);
  if (database) {
    return new RegistryError("UNAVAILABLE", database.message, undefined, {
      "retry-after": String(database.retryAfter),
    });
  }
  const status = err?.statusCode;
  const errno = (err as NodeJS.ErrnoException)?.code;
  if (err?.code === "FST_ERR_BAD_URL") {
    // A path with a malformed percent-escape (`/v2/<name>/manifests/%ZZ`), refused by the router.
    return new RegistryError("NAME_INVALID", "malformed path", undefined, {}, 400);
  }
  if (err?.code === "FST_ERR_MAX_PARAM_LENGTH")
    return new RegistryError("NAME_INVALID", "path segment too long", undefined, {}, 414);
  if (errno === "ECONNRESET" || errno === "ERR_STREAM_PREMATURE_CLOSE" || err?.message === "aborted") {
    // The client went away mid-body; nothing was committed. Not the server's fault.
    return new RegistryError("BLOB_UPLOAD_INVALID", "the request body ended early", undefined, {}, 400);
  }
  if (err?.code === "FST_ERR_CTP_BODY_TOO_LARGE")
    return new RegistryError("SIZE_INVALID", "request body too large", undefined, {}, 413);
  if (status === 404) return new RegistryError("NOT_FOUND", "not found");
  if (status && status >= 400 && status < 500)
    return new RegistryError("UNSUPPORTED", err.message, undefined, {}, status);
  if ((err as NodeJS.ErrnoException)?.code === "ENOSPC") {
    return new RegistryError("UNAVAILABLE", "the registry's storage is full", undefined, {}, 507);
  }
  return new RegistryError("UNAVAILABLE", "internal error", undefined, {}, 500);
}

/** Set on a request whose client ended the connection before the body reached its declared length. */
export const BODY_ENDED_EARLY = Symbol("berth.bodyEndedEarly");

/** Whether the client ended the connection before `raw`'s body was complete (see handleClientError). */
export function bodyEndedEarly(raw: unknown): boolean {
  return (raw as { [BODY_ENDED_EARLY]?: boolean })[BODY_ENDED_EARLY] === true;
}

/**
 * Node's HTTP parser reports errors that happen outside any handler here (Fastify's clientErrorHandler).
 * Two things matter:
 *  - a client that ends its side of the connection before its body is complete (Content-Length 1000,
 *    100 bytes sent, then FIN) while a handler is still reading that body: the body is ended here, so the
 *    handler sees a short body, keeps only what was acknowledged before and answers with the spec's error
 *    (BLOB_UPLOAD_INVALID or SIZE_INVALID) over the half that is still open; then the connection closes;
 *  - anything else (a malformed request, headers too large, a timeout) is answered with the spec's error
 *    body rather than Fastify's own, when the socket can still take it.
 */
export function handleClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  const req = inFlight?.req;
  if (err.code === "HPE_INVALID_EOF_STATE" && inFlight && req && !req.complete && !inFlight.headersSent) {
    // Marked complete so that ending it does not tear the socket down (Node aborts incomplete requests);
    // the mark below tells the handler (requestBody) that the body was cut short.
    (req as { [BODY_ENDED_EARLY]?: boolean })[BODY_ENDED_EARLY] = true;
    req.complete = true;
    inFlight.shouldKeepAlive = false;
    req.push(null);
    return;
  }
  let status = 400;
  let code = "UNSUPPORTED";
  let message = "malformed HTTP request";
  if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
    status = 408;
    message = "the request took too long";
  } else if (err.code === "HPE_HEADER_OVERFLOW") {
    status = 431;
    message = "the request headers are too large";
  } else if (err.code === "HPE_INVALID_EOF_STATE") {
    code = "BLOB_UPLOAD_INVALID";
    message = "the request body ended early";
  }
  if (!inFlight?.headersSent) writeRawError(socket, status, code, message);
  socket.destroy();
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  408: "Request Timeout",
  431: "Request Header Fields Too Large",
};

/**
 * Writes an HTTP/1.1 answer with the spec's error body straight to a socket that is about to be closed,
 * outside any handler (a malformed request, a body that stopped coming).
 */
export function writeRawError(socket: Socket, status: number, code: string, message: string): void {
  if (!socket.writable) return;
  const body = errorBody(code, message, null);
  socket.write(
    `HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}\r\n` +
      `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
