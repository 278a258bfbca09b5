import net from "node:net";
import type { FastifyRequest } from "fastify";
import type { Config } from "../config/schema.js";

/**
 * The origin clients reached Berth on, "http(s)://host[:port]", for Location headers and token realms:
 *  1. `http.host` when configured (its scheme, host and port; a path in it is kept too);
 *  2. else, when the connection comes from one of `http.trustedproxies`, the proxy's `Forwarded`
 *     (RFC 7239) header, or `X-Forwarded-Proto`/`X-Forwarded-Host`/`X-Forwarded-Port`;
 *  3. else the Host header and whether this connection is TLS.
 * Headers that do not look like a scheme or a host are ignored, so that nothing odd reaches a
 * Location header.
 */
export function externalOrigin(request: FastifyRequest, config: Config): string {
  const configured = configuredHost(config);
  if (configured) return configured;

  const socket = request.raw.socket as net.Socket & { encrypted?: boolean };
  let proto = socket?.encrypted ? "https" : "http";
  let host =
    validHost(headerValue(request.headers[":authority"])) ?? validHost(headerValue(request.headers.host));
  if (!host) {
    const port = socket?.localPort;
    const addr = socket?.localAddress ?? "localhost";
    host = `${addr.includes(":") ? `[${addr}]` : addr}${port ? `:${port}` : ""}`;
  }

  if (isTrustedProxy(socket?.remoteAddress, config.http.trustedproxies)) {
    const forwarded = parseForwarded(headerValue(request.headers.forwarded));
    if (forwarded && (forwarded.proto || forwarded.host)) {
      if (forwarded.proto) proto = forwarded.proto;
      if (forwarded.host) host = forwarded.host;
    } else {
      const xProto = first(headerValue(request.headers["x-forwarded-proto"]))?.toLowerCase();
      const xHost = validHost(first(headerValue(request.headers["x-forwarded-host"])));
      const xPort = first(headerValue(request.headers["x-forwarded-port"]));
      if (xProto === "http" || xProto === "https") proto = xProto;
      if (xHost) {
        host = xHost;
        if (xPort && /^\d{1,5}$/.test(xPort) && !hasPort(xHost)) host = `${xHost}:${xPort}`;
      } else if (xPort && /^\d{1,5}$/.test(xPort)) {
        host = `${stripPort(host)}:${xPort}`;
      }
    }
  }
  return `${proto}://${withoutDefaultPort(host, proto)}`;
}

/**
 * A request target in absolute form (`GET http://host:port/v2/... HTTP/1.1`, RFC 9112 §3.2.2, sent by some
 * proxies) becomes the origin form every route expects. As RFC 9112 §3.2.2 asks, the target's authority
 * takes the place of the Host header, so that Location headers name the host the client asked for.
 * Origin-form targets (the usual case) are returned untouched at the cost of one character comparison.
 */
export function originFormUrl(req: { url?: string; headers: Record<string, unknown> }): string {
  const url = req.url ?? "/";
  if (url.startsWith("/") || url === "*") return url;
  const m = /^https?:\/\/([^/?#]*)([^#]*)/i.exec(url);
  if (!m) return url;
  const authority = m[1]!.slice(m[1]!.lastIndexOf("@") + 1);
  if (validHost(authority)) req.headers.host = authority;
  const rest = m[2]!;
  return rest.startsWith("/") ? rest : `/${rest}`;
}

/** externalOrigin plus `http.prefix` when it is not "/": what `/v2/...` paths are appended to. */
export function externalBase(request: FastifyRequest, config: Config): string {
  return `${externalOrigin(request, config)}${prefixOf(config)}`;
}

/** A URL for a Location header: relative (prefix + path) when `http.relativeurls` is set, else absolute. */
export function locationFor(request: FastifyRequest, config: Config, path: string): string {
  if (config.http.relativeurls) return `${prefixOf(config)}${path}`;
  return `${externalBase(request, config)}${path}`;
}

/** "/" → "", "/registry/" → "/registry". */
export function prefixOf(config: Config): string {
  const prefix = config.http.prefix ?? "/";
  const trimmed = prefix.replace(/\/+$/, "");
  return trimmed === "" ? "" : trimmed.startsWith("/") ? trimmed : `/${trimmed}`;
}

function configuredHost(config: Config): string | undefined {
  const host = config.http.host;
  if (!host) return undefined;
  try {
    const url = new URL(host);
    const path = url.pathname.replace(/\/+$/, "");
    return `${url.protocol}//${url.host}${path}`;
  } catch {
    return host.replace(/\/+$/, "");
  }
}

// ---------------------------------------------------------------------------------------------
// Trusted proxies

const listCache = new WeakMap<readonly string[], { all: boolean; list: net.BlockList }>();

function blockList(entries: readonly string[]): { all: boolean; list: net.BlockList } {
  let cached = listCache.get(entries);
  if (cached) return cached;
  const list = new net.BlockList();
  let all = false;
  for (const entry of entries) {
    if (entry === "*") {
      all = true;
      continue;
    }
    const [addr, bits] = entry.split("/");
    const family = addr ? net.isIP(addr) : 0;
    if (family === 0 || !addr) continue;
    const type = family === 4 ? "ipv4" : "ipv6";
    try {
      if (bits === undefined) list.addAddress(addr, type);
      else list.addSubnet(addr, Number(bits), type);
    } catch {
      // A malformed entry is refused when the configuration is loaded; ignore it here.
    }
  }
  cached = { all, list };
  listCache.set(entries, cached);
  return cached;
}

/** Whether the peer address is one of the configured proxies (IPs or CIDR ranges; "*" for all). */
export function isTrustedProxy(remote: string | undefined, entries: readonly string[]): boolean {
  if (!remote || entries.length === 0) return false;
  const { all, list } = blockList(entries);
  if (all) return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remote);
  if (mapped) return list.check(mapped[1]!, "ipv4") || list.check(remote, "ipv6");
  const family = net.isIP(remote);
  if (family === 0) return false;
  return list.check(remote, family === 4 ? "ipv4" : "ipv6");
}

// ---------------------------------------------------------------------------------------------
// Header parsing

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(",") : value;
}

/** The first element of a comma-separated list: the one the client-facing proxy added. */
function first(value: string | undefined): string | undefined {
  const v = value?.split(",")[0]?.trim();
  return v ? v : undefined;
}

const HOST = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(:\d{1,5})?$/;

function validHost(value: string | undefined): string | undefined {
  if (!value) return undefined;
  return HOST.test(value) ? value : undefined;
}

function hasPort(host: string): boolean {
  return /:\d+$/.test(host) && !/^\[[^\]]*\]$/.test(host);
}

function stripPort(host: string): string {
  return hasPort(host) ? host.replace(/:\d+$/, "") : host;
}

function withoutDefaultPort(host: string, proto: string): string {
  if ((proto === "https" && host.endsWith(":443")) || (proto === "http" && host.endsWith(":80"))) {
    return stripPort(host);
  }
  return host;
}

/** RFC 7239: the first element's proto and host (`Forwarded: for=1.2.3.4;proto=https;host=r.example.com`). */
export function parseForwarded(value: string | undefined): { proto?: string; host?: string } | undefined {
  if (!value) return undefined;
  const element = splitOutsideQuotes(value, ",")[0];
  if (!element) return undefined;
  const out: { proto?: string; host?: string } = {};
  for (const pair of splitOutsideQuotes(element, ";")) {
    const eq = pair.indexOf("=");
    if (eq < 0) continue;
    const key = pair.slice(0, eq).trim().toLowerCase();
    let val = pair.slice(eq + 1).trim();
    if (val.startsWith('"') && val.endsWith('"') && val.length >= 2)
      val = val.slice(1, -1).replace(/\\(.)/g, "$1");
    if (key === "proto") {
      const proto = val.toLowerCase();
      if (proto === "http" || proto === "https") out.proto = proto;
    } else if (key === "host") {
      const host = validHost(val);
      if (host) out.host = host;
    }
  }
  return out;
}

function splitOutsideQuotes(text: string, sep: string): string[] {
  const parts: string[] = [];
  let current = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === "\\" && quoted && i + 1 < text.length) {
      current += ch + text[i + 1];
      i++;
      continue;
    }
    if (ch === '"') quoted = !quoted;
    if (ch === sep && !quoted) {
      parts.push(current.trim());
      current = "";
      continue;
    }
    current += ch;
  }
  if (current.trim()) parts.push(current.trim());
  return parts;
}
