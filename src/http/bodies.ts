import type { Socket } from "node:net";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { RegistryError } from "../registry/errors.js";
import { StreamMemory } from "../storage/memory.js";
import { knownCaller } from "./access.js";
import { bodyEndedEarly } from "./errors.js";

/**
 * Request bodies, for every route: no body is read before the route has authenticated its caller.
 *
 * No content-type parser reads a body ahead of the handler (keepBodiesUnread, on the root instance and
 * again in /v2/'s scope): the handler authenticates, then streams the body (requestBody) or reads it
 * with a limit of its own (readBody, readJsonBody). A request answered before its body was read, by
 * a caller who never authenticated, closes its connection after the answer (closeForStrangers):
 * the rest of that body is neither read nor drained, so an anonymous client cannot keep a connection
 * busy by sending a body nobody asked for.
 */

/** Bodies under /api are small JSON documents. */
export const API_BODY_LIMIT = 64 * 1024;

/** Leaves every body of `scope` an unread stream: no parser buffers one, whatever its content type. */
export function keepBodiesUnread(scope: FastifyInstance): void {
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser("*", (_request, _payload, done) => done(null));
}

/** Whether part of the request's body may still be on its way (declared, and not all of it read). */
export function bodyUnread(request: FastifyRequest): boolean {
  const raw = request.raw;
  return hasBody(request) && !raw.complete && !raw.readableEnded && !raw.destroyed;
}

/**
 * An onSend hook for the root instance: an HTTP/1 answer to a caller who never authenticated, sent
 * while its body is unread, says `Connection: close`, and Node closes the connection once the answer is
 * out instead of reading and dropping the rest of the body to keep the connection open.
 */
export async function closeForStrangers(
  request: FastifyRequest,
  reply: FastifyReply,
  payload: unknown,
): Promise<unknown> {
  if (request.raw.httpVersionMajor === 1 && !knownCaller(request) && bodyUnread(request)) {
    reply.header("connection", "close");
    lingerOnClose(request.raw.socket);
  }
  return payload;
}

/** How long a connection closed under an unread body still takes (and drops) what the client sends. */
const LINGER_MS = 2_000;
const LINGERING = Symbol("berth.lingering");

/**
 * Node closes a `Connection: close` answer's socket as soon as the answer is written; with the client
 * still sending its body, the kernel answers that data with a reset, which can reach the client before it
 * has read the answer (it then sees a reset, not the 401). So the socket ends its side (FIN) after the
 * answer and drops what still comes for LINGER_MS at most, then closes, as web servers' lingering close.
 */
function lingerOnClose(socket: Socket | null | undefined): void {
  if (!socket || (socket as { [LINGERING]?: boolean })[LINGERING]) return;
  (socket as { [LINGERING]?: boolean })[LINGERING] = true;
  socket.destroySoon = function (this: Socket) {
    this.end();
    const timer = setTimeout(() => this.destroy(), LINGER_MS);
    timer.unref();
    this.once("close", () => clearTimeout(timer));
  };
}

export function contentLength(request: FastifyRequest): number | undefined {
  const raw = request.headers["content-length"];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** Whether the request carries a body (a length above zero, or chunked transfer). */
export function hasBody(request: FastifyRequest): boolean {
  const length = contentLength(request);
  if (length !== undefined) return length > 0;
  return request.headers["transfer-encoding"] !== undefined || request.raw.httpVersionMajor === 2;
}

/**
 * The request body as it streams in. When the client ends the connection before the body is complete,
 * the stream fails at its end with BLOB_UPLOAD_INVALID rather than ending as if it were whole, so that
 * what was written from it is cut back and nothing of it is acknowledged.
 */
export async function* requestBody(request: FastifyRequest): AsyncIterable<Buffer> {
  let received = 0;
  const memory = new StreamMemory();
  for await (const chunk of request.raw as AsyncIterable<Buffer>) {
    received += chunk.length;
    memory.received(chunk.length);
    yield chunk;
  }
  if (bodyEndedEarly(request.raw)) {
    throw new RegistryError("BLOB_UPLOAD_INVALID", "the request body ended before its declared length", {
      contentLength: contentLength(request) ?? null,
      received,
    });
  }
}

/** Reads a body into memory up to `limit` bytes; beyond that 413 without reading the rest. */
export async function readBody(request: FastifyRequest, limit: number): Promise<Buffer> {
  const declared = contentLength(request);
  if (declared !== undefined && declared > limit) {
    throw new RegistryError(
      "SIZE_INVALID",
      `body is larger than the limit of ${limit} bytes`,
      { size: declared },
      {},
      413,
    );
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of requestBody(request)) {
    total += chunk.length;
    if (total > limit) {
      throw new RegistryError(
        "SIZE_INVALID",
        `body is larger than the limit of ${limit} bytes`,
        undefined,
        {},
        413,
      );
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/**
 * A JSON body (application/json or any +json type), read once the caller is authenticated, up to
 * `limit` bytes (413 beyond, without reading the rest); undefined when there is none.
 */
export async function readJsonBody(request: FastifyRequest, limit = API_BODY_LIMIT): Promise<unknown> {
  if (!hasBody(request)) return undefined;
  const type = request.headers["content-type"];
  if (type !== undefined && !/^application\/([\w.+-]+\+)?json\s*(;|$)/i.test(type)) {
    throw new RegistryError("UNSUPPORTED", "the body must be JSON (application/json)", { type }, {}, 415);
  }
  const bytes = await readBody(request, limit);
  if (bytes.length === 0) return undefined;
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new RegistryError("UNSUPPORTED", "the body is not valid JSON", undefined, {}, 400);
  }
}
