import type { FastifyRequest } from "fastify";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.js";
import type { Config } from "../../src/config/schema.js";
import {
  externalBase,
  externalOrigin,
  isTrustedProxy,
  locationFor,
  parseForwarded,
} from "../../src/http/urls.js";

function config(env: Record<string, string> = {}): Config {
  return loadConfig({ env, defaultFiles: [] }).config;
}

function request(
  headers: Record<string, string>,
  socket: { remoteAddress?: string; encrypted?: boolean; localAddress?: string; localPort?: number } = {},
): FastifyRequest {
  const s = { remoteAddress: "127.0.0.1", localAddress: "127.0.0.1", localPort: 5000, ...socket };
  return { headers, raw: { socket: s }, socket: s } as unknown as FastifyRequest;
}

describe("externalBase", () => {
  it("uses the Host header and the connection's TLS state", () => {
    const c = config();
    expect(externalBase(request({ host: "localhost:5000" }, { remoteAddress: "10.1.2.3" }), c)).toBe(
      "http://localhost:5000",
    );
    expect(
      externalBase(request({ host: "r.example.com" }, { remoteAddress: "10.1.2.3", encrypted: true }), c),
    ).toBe("https://r.example.com");
  });

  it("falls back to the local address without a Host header", () => {
    expect(externalBase(request({}, { remoteAddress: "10.1.2.3" }), config())).toBe("http://127.0.0.1:5000");
  });

  it("honours X-Forwarded-* only from trusted proxies", () => {
    const c = config();
    const headers = { host: "berth:5000", "x-forwarded-proto": "https", "x-forwarded-host": "r.example.com" };
    expect(externalBase(request(headers), c)).toBe("https://r.example.com");
    expect(externalBase(request(headers, { remoteAddress: "::ffff:127.0.0.1" }), c)).toBe(
      "https://r.example.com",
    );
    expect(externalBase(request(headers, { remoteAddress: "203.0.113.9" }), c)).toBe("http://berth:5000");
  });

  it("takes the first of a list and the port from X-Forwarded-Port", () => {
    const c = config();
    expect(
      externalBase(
        request({
          host: "berth:5000",
          "x-forwarded-proto": "https, http",
          "x-forwarded-host": "r.example.com, inner",
        }),
        c,
      ),
    ).toBe("https://r.example.com");
    expect(
      externalBase(
        request({ host: "r.example.com", "x-forwarded-proto": "https", "x-forwarded-port": "8443" }),
        c,
      ),
    ).toBe("https://r.example.com:8443");
    expect(
      externalBase(
        request({ host: "r.example.com:443", "x-forwarded-proto": "https", "x-forwarded-port": "443" }),
        c,
      ),
    ).toBe("https://r.example.com");
  });

  it("prefers RFC 7239 Forwarded", () => {
    const c = config();
    const r = request({
      host: "berth:5000",
      forwarded: 'for=192.0.2.60;proto=https;host="r.example.com:8443", for=10.0.0.1',
      "x-forwarded-host": "ignored.example.com",
    });
    expect(externalBase(r, c)).toBe("https://r.example.com:8443");
  });

  it("ignores forwarded values that are not a scheme or a host", () => {
    const r = request({
      host: "berth:5000",
      "x-forwarded-proto": "javascript",
      "x-forwarded-host": "evil.com/path",
    });
    expect(externalBase(r, config())).toBe("http://berth:5000");
  });

  it("trusts CIDR ranges and *", () => {
    const c = config({ REGISTRY_HTTP_TRUSTEDPROXIES: "[10.0.0.0/8, 'fd00::/8']" });
    const headers = { host: "berth:5000", "x-forwarded-proto": "https", "x-forwarded-host": "r.example.com" };
    expect(externalBase(request(headers, { remoteAddress: "10.42.0.7" }), c)).toBe("https://r.example.com");
    expect(externalBase(request(headers, { remoteAddress: "fd00::1" }), c)).toBe("https://r.example.com");
    expect(externalBase(request(headers, { remoteAddress: "127.0.0.1" }), c)).toBe("http://berth:5000");
    expect(isTrustedProxy("198.51.100.1", ["*"])).toBe(true);
    expect(isTrustedProxy("198.51.100.1", [])).toBe(false);
  });

  it("http.host wins, and http.prefix is appended", () => {
    const c = config({ REGISTRY_HTTP_HOST: "https://registry.example.com/", REGISTRY_HTTP_PREFIX: "/reg/" });
    const r = request({ host: "berth:5000", "x-forwarded-host": "other" });
    expect(externalOrigin(r, c)).toBe("https://registry.example.com");
    expect(externalBase(r, c)).toBe("https://registry.example.com/reg");
    expect(locationFor(r, c, "/v2/a/blobs/uploads/1")).toBe(
      "https://registry.example.com/reg/v2/a/blobs/uploads/1",
    );
  });

  it("relative URLs when http.relativeurls is set", () => {
    const c = config({ REGISTRY_HTTP_RELATIVEURLS: "true" });
    expect(locationFor(request({ host: "x" }), c, "/v2/a/manifests/sha256:1")).toBe(
      "/v2/a/manifests/sha256:1",
    );
  });

  it("parses Forwarded with quotes and several elements", () => {
    expect(parseForwarded('proto=HTTPS;host="a.example:1"')).toEqual({ proto: "https", host: "a.example:1" });
    expect(parseForwarded("for=1.2.3.4")).toEqual({});
    expect(parseForwarded(undefined)).toBeUndefined();
  });
});
