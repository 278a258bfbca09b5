import type { FastifyRequest } from "fastify";
import type { Config } from "../config/schema.js";
import type { EventRecorder, RequestInfo } from "../registry/events.js";
import { clientAddress, getIdentity } from "./access.js";
import { externalBase } from "./urls.js";

/**
 * The facts about a request that an event carries (issue 14: `request`, `actor`, `target.url`), or
 * undefined when no endpoint is configured, so that requests pay nothing for notifications then.
 */
export function requestInfo(
  request: FastifyRequest,
  config: Config,
  events: EventRecorder,
): RequestInfo | undefined {
  if (!events.active) return undefined;
  const ua = request.headers["user-agent"];
  const host = request.headers.host ?? request.headers[":authority"];
  const actor = getIdentity(request)?.subject ?? undefined;
  const addr = clientAddress(request, config.http.trustedproxies);
  const port = request.raw.socket?.remotePort;
  return {
    id: request.id,
    addr:
      port && addr === request.raw.socket?.remoteAddress
        ? `${addr.includes(":") ? `[${addr}]` : addr}:${port}`
        : addr,
    host: typeof host === "string" ? host : "",
    method: request.method,
    useragent: typeof ua === "string" ? ua : "",
    ...(actor ? { actor } : {}),
    baseUrl: externalBase(request, config),
  };
}
