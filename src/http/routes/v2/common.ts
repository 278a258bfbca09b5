import type { FastifyReply, FastifyRequest } from "fastify";
import { RegistryError } from "../../../registry/errors.js";
import { StreamMemory } from "../../../storage/memory.js";
import type { AppContext } from "../../context.js";
import { bodyEndedEarly } from "../../errors.js";

export interface V2Request {
  request: FastifyRequest;
  reply: FastifyReply;
  ctx: AppContext;
  name: string;
  /** The last path segment (a digest, tag or upload id), URL-decoded; "" where there is none. */
  ref: string;
}

export type V2Handler = (r: V2Request) => Promise<unknown>;

export function queryValue(request: FastifyRequest, key: string): string | undefined {
  const value = (request.query as Record<string, string | string[] | undefined>)[key];
  return Array.isArray(value) ? value[0] : value;
}

export function queryValues(request: FastifyRequest, key: string): string[] {
  const value = (request.query as Record<string, string | string[] | undefined>)[key];
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
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

/** `n` of the pagination query: absent, or a non-negative integer. */
export function pageSize(request: FastifyRequest): number | undefined {
  const raw = queryValue(request, "n");
  if (raw === undefined || raw === "") return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RegistryError("PAGINATION_NUMBER_INVALID", "invalid number of results requested", { n: raw });
  }
  return n;
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

/** Content-Range of a chunk: "<start>-<end>" as the spec writes it, or "bytes <start>-<end>/<total>". */
export function parseContentRange(
  value: string | undefined,
): { start: number; end: number } | undefined | null {
  if (value === undefined) return undefined;
  const m = /^\s*(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?\s*$/.exec(value);
  if (!m) return null;
  return { start: Number(m[1]), end: Number(m[2]) };
}

export function uploadLocation(name: string, id: string): string {
  return `/v2/${name}/blobs/uploads/${id}`;
}
