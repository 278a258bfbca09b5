// Pieces of the ACME support (issue 15) that need no CA: reading a real ClientHello, classifying
// failures, renewal and backoff times, and the configuration checks.
import net from "node:net";
import tls from "node:tls";
import { describe, expect, it } from "vitest";
import { acmeHosts, tlsProblems } from "../../src/config/sections/tls.js";
import { backoffMs, classify, type Letsencrypt, renewalTime } from "../../src/http/acme.js";
import { parseClientHello } from "../../src/http/managed-tls.js";

/** The bytes a real Node TLS client sends first. */
function captureClientHello(options: tls.ConnectionOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      socket.once("data", (chunk) => {
        resolve(chunk);
        socket.destroy();
        server.close();
      });
    });
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      const client = tls.connect({ host: "127.0.0.1", port, ...options });
      client.on("error", () => {});
    });
    server.on("error", reject);
  });
}

const LE: Letsencrypt = {
  hosts: ["registry.example.com"],
  directoryurl: "https://acme.example/dir",
  challenges: ["http-01", "tls-alpn-01"],
  httpaddr: ":80",
  directorycas: [],
};

describe("parseClientHello", () => {
  it("reads SNI and ALPN from a real ClientHello, byte by byte as it arrives", async () => {
    const hello = await captureClientHello({ servername: "reg.example.com", ALPNProtocols: ["acme-tls/1"] });
    expect(parseClientHello(hello)).toEqual({ servername: "reg.example.com", alpn: ["acme-tls/1"] });
    for (const cut of [0, 3, 5, 40, hello.length - 1])
      expect(parseClientHello(hello.subarray(0, cut))).toBe("more");
    const plain = await captureClientHello({
      servername: "reg.example.com",
      ALPNProtocols: ["h2", "http/1.1"],
    });
    expect(parseClientHello(plain)).toEqual({ servername: "reg.example.com", alpn: ["h2", "http/1.1"] });
  });

  it("is not fooled by what is not a ClientHello", () => {
    expect(parseClientHello(Buffer.from("GET / HTTP/1.1\r\n\r\n"))).toBeNull();
    // A handshake record whose lengths point past its end.
    expect(parseClientHello(Buffer.from([0x16, 3, 1, 0, 6, 1, 0, 0, 2, 3, 3]))).toBeNull();
    const lying = Buffer.from([0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]);
    expect(parseClientHello(lying)).toBeNull();
  });
});

describe("failure causes", () => {
  const problem = (type: string, status = 400, retryAfterMs?: number) => ({
    type: `urn:ietf:params:acme:error:${type}`,
    detail: `detail of ${type}`,
    status,
    retryAfterMs,
  });
  it("names DNS, unreachable ports, rate limits and an untrusted directory", () => {
    expect(classify(new Error("x"), "http-01", problem("dns")).cause).toBe("dns");
    expect(classify(new Error("x"), "http-01", problem("connection")).cause).toBe("port-80-unreachable");
    expect(classify(new Error("x"), "http-01", problem("connection")).message).toMatch(/port 80 unreachable/);
    expect(classify(new Error("x"), "tls-alpn-01", problem("connection")).cause).toBe("port-443-unreachable");
    const limited = classify(new Error("x"), "http-01", problem("rateLimited", 429, 3_600_000));
    expect(limited.cause).toBe("rate-limit");
    expect(limited.retryAfterMs).toBe(3_600_000);
    expect(classify(new Error("x"), "http-01", { type: "", detail: "", status: 429 }).cause).toBe(
      "rate-limit",
    );
    const untrusted = Object.assign(new Error("self-signed certificate in certificate chain"), {
      code: "SELF_SIGNED_CERT_IN_CHAIN",
    });
    expect(classify(untrusted, "http-01", undefined).cause).toBe("directory-untrusted");
    const refused = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
    expect(classify(refused, "http-01", undefined).cause).toBe("directory-unreachable");
    expect(classify(new Error("x"), "http-01", problem("caa")).cause).toBe("rejected");
  });
});

describe("renewal and backoff", () => {
  const day = 86_400_000;
  it("renews a 90-day certificate 30 days before expiry, or renewbefore", () => {
    const cert = { notBefore: 0, notAfter: 90 * day };
    expect(renewalTime(LE, cert)).toBe(60 * day);
    expect(renewalTime({ ...LE, renewbefore: 10 * day }, cert)).toBe(80 * day);
    // A renewbefore longer than the lifetime must not order in a loop.
    expect(renewalTime({ ...LE, renewbefore: 365 * day }, cert)).toBe(9 * day);
  });
  it("backs off exponentially up to 12 hours", () => {
    expect([1, 2, 3, 4].map(backoffMs)).toEqual([60_000, 120_000, 240_000, 480_000]);
    expect(backoffMs(30)).toBe(12 * 3_600_000);
  });
});

describe("http.tls.letsencrypt checks", () => {
  const config = (le: Partial<Letsencrypt>, extra: Record<string, unknown> = {}) => ({
    http: { tls: { letsencrypt: { ...LE, ...le } }, ...extra },
  });
  it("accepts a sound configuration, and takes the host from http.host when hosts is empty", () => {
    expect(tlsProblems(config({}))).toEqual([]);
    expect(acmeHosts(config({ hosts: [] }, { host: "https://Reg.Example.com:8443" }))).toEqual([
      "reg.example.com",
    ]);
  });
  it("names each problem", () => {
    expect(tlsProblems(config({ hosts: [] }))[0]).toContain("http.tls.letsencrypt.hosts");
    expect(tlsProblems(config({ hosts: ["10.0.0.1"] }))[0]).toContain("no addresses");
    expect(tlsProblems(config({ hosts: ["*.example.com"] }))[0]).toContain("no wildcards");
    expect(tlsProblems(config({ directoryurl: "http://acme.example/dir" }))[0]).toContain("directoryurl");
    expect(tlsProblems(config({ httpaddr: "80" }))[0]).toContain("httpaddr");
    expect(tlsProblems(config({ email: "nobody" }))[0]).toContain("email");
    expect(tlsProblems(config({ challenges: [] }))[0]).toContain("challenges");
    const both = { http: { tls: { certificate: "/c.pem", key: "/k.pem", letsencrypt: LE } } };
    expect(tlsProblems(both)[0]).toContain("not both");
  });
});
