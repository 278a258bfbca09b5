import type { FastifyRequest } from "fastify";
import type { Config } from "../config/schema.js";

/**
 * The scheme://host[:port] clients reached Berth on, for Location headers and token realms:
 * `http.host` when configured, else X-Forwarded-* from a trusted proxy, else the Host header.
 */
export function externalBase(request: FastifyRequest, config: Config): string {
  if (config.http.host) return config.http.host.replace(/\/+$/, "");
  const encrypted = Boolean((request.raw.socket as { encrypted?: boolean }).encrypted);
  let proto = encrypted ? "https" : "http";
  let host = request.headers[":authority"] ?? request.headers.host ?? "localhost";
  if (trusted(request, config)) {
    const fProto = firstValue(request.headers["x-forwarded-proto"]);
    const fHost = firstValue(request.headers["x-forwarded-host"]);
    if (fProto === "http" || fProto === "https") proto = fProto;
    if (fHost && /^[A-Za-z0-9.\-:[\]]+$/.test(fHost)) host = fHost;
  }
  return `${proto}://${host}`;
}

function trusted(request: FastifyRequest, config: Config): boolean {
  const ip = request.socket.remoteAddress ?? "";
  const plain = ip.startsWith("::ffff:") ? ip.slice(7) : ip;
  return config.http.trustedproxies.includes(plain) || config.http.trustedproxies.includes(ip);
}

function firstValue(value: string | string[] | undefined): string | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  return v?.split(",")[0]?.trim();
}

/** A URL for a Location header: relative when `http.relativeurls` is set, else absolute. */
export function locationFor(request: FastifyRequest, config: Config, path: string): string {
  const prefix = config.http.prefix && config.http.prefix !== "/" ? config.http.prefix.replace(/\/+$/, "") : "";
  if (config.http.relativeurls) return `${prefix}${path}`;
  return `${externalBase(request, config)}${prefix}${path}`;
}
