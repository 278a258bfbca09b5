import type { FastifyReply, FastifyRequest } from "fastify";
import { RegistryError } from "../../../registry/errors.js";
import type { AppContext } from "../../context.js";

// Request bodies are read by src/http/bodies.ts, for /v2/ as for the rest of the application.
export { contentLength, hasBody, readBody, requestBody } from "../../bodies.js";

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
