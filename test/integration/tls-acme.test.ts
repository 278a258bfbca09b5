// ACME (issue 15) against a real ACME CA: Debian's pebble on loopback, its validation ports pointed
// at Berth's. HTTP-01, TLS-ALPN-01, renewal of a short-lived certificate seen by a client without a
// restart, the 301 redirect on the HTTP port, and failures that name their cause.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, CLI, freePort, startBerth, tempDir } from "../helpers/server.js";
import { makePki, type Pki } from "./auth-fixtures.js";

/** Calls fn until it returns without throwing; throws its last error after timeoutMs. */
async function waitFor<T>(fn: () => Promise<T> | T, options: { timeoutMs: number }): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

let pki: Pki;
const cleanups: (() => Promise<unknown> | unknown)[] = [];

beforeAll(() => {
  const found = spawnSync("sh", ["-c", "command -v pebble"], { encoding: "utf8" });
  if (found.status !== 0) throw new Error("pebble is not installed (apt-get install -y pebble)");
  pki = makePki();
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

interface Pebble {
  directory: string;
  /** The root that signs what pebble issues (pebble makes a new one at each start). */
  root: string;
  logs: string[];
}

/** Starts pebble with its validation ports pointed at Berth's, and the given certificate lifetime. */
async function startPebble(options: {
  httpPort: number;
  tlsPort: number;
  validitySeconds: number;
}): Promise<Pebble> {
  const dir = tempDir("berth-pebble-");
  const port = await freePort();
  const mgmt = await freePort();
  const config = path.join(dir, "pebble.json");
  fs.writeFileSync(
    config,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${port}`,
        managementListenAddress: `127.0.0.1:${mgmt}`,
        certificate: pki.serverChain,
        privateKey: pki.serverKey,
        httpPort: options.httpPort,
        tlsPort: options.tlsPort,
        ocspResponderURL: "",
        externalAccountBindingRequired: false,
        certificateValidityPeriod: options.validitySeconds,
      },
    }),
  );
  const child: ChildProcess = spawn("pebble", ["-config", config], {
    env: { ...process.env, PEBBLE_VA_NOSLEEP: "1", PEBBLE_WFE_NONCEREJECT: "0", PEBBLE_AUTHZREUSE: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: string[] = [];
  child.stdout?.on("data", (c: Buffer) => logs.push(...c.toString().split("\n").filter(Boolean)));
  child.stderr?.on("data", (c: Buffer) => logs.push(...c.toString().split("\n").filter(Boolean)));
  cleanups.push(() => {
    child.kill("SIGTERM");
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const ca = fs.readFileSync(pki.caCert);
  const root = await waitFor(async () => fetchText(`https://127.0.0.1:${mgmt}/roots/0`, ca), {
    timeoutMs: 15_000,
  });
  return { directory: `https://127.0.0.1:${port}/dir`, root, logs };
}

function fetchText(url: string, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca, agent: false }, (res) => {
        let body = "";
        res.on("data", (c) => {
          body += c;
        });
        res.on("end", () =>
          res.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: ${res.statusCode}`)),
        );
      })
      .on("error", reject);
  });
}

/** The certificate Berth presents to a client that trusts pebble's root, and the ALPN protocol it chose. */
function peer(
  port: number,
  root: string,
  alpn = ["h2", "http/1.1"],
): Promise<{ serial: string; issuer: string; alpn: string | false }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      { host: "127.0.0.1", port, servername: "localhost", ca: root, ALPNProtocols: alpn },
      () => {
        const cert = socket.getPeerCertificate();
        resolve({
          serial: cert.serialNumber,
          issuer: String(cert.issuer.CN),
          alpn: socket.alpnProtocol ?? false,
        });
        socket.end();
      },
    );
    socket.on("error", reject);
  });
}

function plainRequest(
  port: number,
  method: string,
  pathname: string,
  host = "localhost",
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, method, path: pathname, headers: { host }, agent: false },
      (res) => {
        let body = "";
        res.on("data", (c) => {
          body += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end(method === "PUT" ? "{}" : undefined);
  });
}

function acmeConfig(dir: string, directory: string, extra: Record<string, unknown>): string {
  const file = path.join(dir, "berth.yml");
  const le = {
    hosts: ["localhost"],
    email: "ops@example.com",
    directoryurl: directory,
    directorycas: [pki.caCert],
    ...extra,
  };
  fs.writeFileSync(file, JSON.stringify({ http: { tls: { letsencrypt: le } } }));
  return file;
}

async function startAcmeBerth(
  port: number,
  config: string,
  workers = 1,
  flags: string[] = [],
): Promise<Berth> {
  const berth = await startBerth({ port, args: ["-c", config, ...flags], scheme: "https", workers });
  cleanups.push(() => berth.cleanup());
  return berth;
}

describe("ACME with pebble", () => {
  it("HTTP-01: issues a certificate, renews it before expiry without a restart, and the HTTP port only redirects", async () => {
    const port = await freePort();
    const httpPort = await freePort();
    // 30 s certificates: renewal is due when a third of the lifetime is left, 20 s after issuance.
    const pebble = await startPebble({ httpPort, tlsPort: await freePort(), validitySeconds: 30 });
    const dir = tempDir("berth-acme-http-");
    const config = acmeConfig(dir, pebble.directory, {
      challenges: ["http-01"],
      httpaddr: `127.0.0.1:${httpPort}`,
    });
    const berth = await startAcmeBerth(port, config, 2);

    const first = await waitFor(() => peer(port, pebble.root), { timeoutMs: 30_000 });
    expect(first.issuer).toMatch(/Pebble/);
    expect(["h2", "http/1.1"]).toContain(first.alpn);
    expect(fs.existsSync(path.join(berth.dataDir, "tls", "acme", "certificate.pem"))).toBe(true);
    expect(
      berth.logs.some((l) => l.includes('"challenge":"http-01"') && l.includes("certificate issued")),
    ).toBe(true);

    // Plain HTTP: 301 to HTTPS for every method and path; the API is never served in plain text.
    for (const [method, p] of [
      ["GET", "/v2/"],
      ["GET", "/v2/_catalog?n=1"],
      ["HEAD", "/v2/library/app/manifests/latest"],
      ["PUT", "/v2/library/app/manifests/latest"],
      ["GET", "/api/v1/repositories"],
    ] as const) {
      const res = await plainRequest(httpPort, method, p);
      expect(res.status, `${method} ${p}`).toBe(301);
      expect(res.headers.location).toBe(`https://localhost:${port}${p}`);
      expect(res.body).toBe("");
      expect(res.headers["docker-distribution-api-version"]).toBeUndefined();
    }
    // A Host that is not ours is not echoed into the redirect.
    expect((await plainRequest(httpPort, "GET", "/v2/", "evil.example")).headers.location).toBe(
      `https://localhost:${port}/v2/`,
    );
    // Unknown challenge tokens are 404, not a redirect and not a file outside the state directory.
    expect((await plainRequest(httpPort, "GET", "/.well-known/acme-challenge/nope")).status).toBe(404);
    expect(
      (await plainRequest(httpPort, "GET", "/.well-known/acme-challenge/..%2f..%2fcertificate.pem")).status,
    ).toBe(404);

    // Renewal: the same server process presents a new certificate.
    const pid = berth.process.pid;
    const renewed = await waitFor(
      async () => {
        const now = await peer(port, pebble.root);
        if (now.serial === first.serial) throw new Error("not renewed yet");
        return now;
      },
      { timeoutMs: 60_000 },
    );
    expect(renewed.issuer).toMatch(/Pebble/);
    // Every worker serves the renewed certificate (each connection may reach either of the two).
    await waitFor(
      async () => {
        for (let i = 0; i < 8; i++) {
          if ((await peer(port, pebble.root)).serial === first.serial)
            throw new Error("a worker still serves the old one");
        }
      },
      { timeoutMs: 10_000 },
    );
    expect(berth.process.pid).toBe(pid);
    expect(berth.process.exitCode).toBeNull();
    expect(berth.logs.some((l) => l.includes("acme: certificate issued"))).toBe(true);
  }, 120_000);

  it("TLS-ALPN-01: only the TLS port is open; ordinary clients still get HTTP/2 and HTTP/1.1", async () => {
    const port = await freePort();
    const pebble = await startPebble({ httpPort: await freePort(), tlsPort: port, validitySeconds: 3600 });
    const dir = tempDir("berth-acme-alpn-");
    // Hosts, directory and HTTP listener from serve's flags rather than the file.
    const config = acmeConfig(dir, "https://unused.invalid/dir", {
      challenges: ["tls-alpn-01"],
      hosts: undefined,
    });
    const flags = ["--acme-host", "localhost", "--acme-directory", pebble.directory, "--acme-http-addr", ""];
    const berth = await startAcmeBerth(port, config, 2, flags);
    const got = await waitFor(() => peer(port, pebble.root), { timeoutMs: 30_000 });
    expect(got.issuer).toMatch(/Pebble/);
    expect(
      berth.logs.some((l) => l.includes('"challenge":"tls-alpn-01"') && l.includes("certificate issued")),
    ).toBe(true);
    // Both workers serve it, over both protocols.
    for (let i = 0; i < 6; i++) {
      expect((await peer(port, pebble.root, ["h2"])).alpn).toBe("h2");
      expect((await peer(port, pebble.root, ["http/1.1"])).alpn).toBe("http/1.1");
    }
    // An acme-tls/1 connection when no challenge is pending gets no certificate for the name.
    await expect(peer(port, pebble.root, ["acme-tls/1"])).rejects.toThrow();
    const status = JSON.parse(
      fs.readFileSync(path.join(berth.dataDir, "tls", "acme", "status.json"), "utf8"),
    );
    expect(status.failures).toBe(0);
  }, 90_000);

  it("HTTP port taken by another program: says so, and gets the certificate by TLS-ALPN-01", async () => {
    const port = await freePort();
    const busy = http.createServer((_req, res) => res.end("another web server"));
    await new Promise<void>((r) => busy.listen(0, "127.0.0.1", () => r()));
    cleanups.push(() => new Promise((r) => busy.close(() => r(undefined))));
    const httpPort = (busy.address() as { port: number }).port;
    const pebble = await startPebble({ httpPort, tlsPort: port, validitySeconds: 3600 });
    const dir = tempDir("berth-acme-busy-");
    const config = acmeConfig(dir, pebble.directory, { httpaddr: `127.0.0.1:${httpPort}` });
    const berth = await startAcmeBerth(port, config);
    const got = await waitFor(() => peer(port, pebble.root), { timeoutMs: 30_000 });
    expect(got.issuer).toMatch(/Pebble/);
    expect(berth.logs.some((l) => l.includes("address is in use") && l.includes("only TLS-ALPN-01"))).toBe(
      true,
    );
    expect(
      berth.logs.some((l) => l.includes('"challenge":"tls-alpn-01"') && l.includes("certificate issued")),
    ).toBe(true);
  }, 60_000);

  it("names the cause of a failure in the log, status.json and `berth config check`", async () => {
    const port = await freePort();
    const closed = await freePort();
    // pebble validates HTTP-01 on a port where nothing listens: "port 80 unreachable".
    const pebble = await startPebble({ httpPort: closed, tlsPort: await freePort(), validitySeconds: 3600 });
    const dir = tempDir("berth-acme-fail-");
    const config = acmeConfig(dir, pebble.directory, {
      challenges: ["http-01"],
      httpaddr: `127.0.0.1:${await freePort()}`,
    });
    const berth = await startAcmeBerth(port, config);
    const statusFile = path.join(berth.dataDir, "tls", "acme", "status.json");
    const status = await waitFor(
      () => {
        const s = JSON.parse(fs.readFileSync(statusFile, "utf8"));
        if (!s.failures) throw new Error("no failure yet");
        return s;
      },
      { timeoutMs: 30_000 },
    );
    expect(status.lastError.cause).toBe("port-80-unreachable");
    expect(status.notBefore).toBeGreaterThan(Date.now() + 30_000); // backs off
    expect(berth.logs.some((l) => l.includes("port 80 unreachable"))).toBe(true);
    const check = spawnSync(process.execPath, [CLI, "config", "check", "-c", config], {
      encoding: "utf8",
      env: { ...process.env, REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: berth.dataDir },
    });
    expect(check.status).toBe(0);
    expect(check.stderr).toMatch(/acme: 1 failed attempt.*cause: port-80-unreachable/);

    // DNS: a host that does not resolve is reported before the CA is asked at all.
    const dns = tempDir("berth-acme-dns-");
    const dnsConfig = path.join(dns, "berth.yml");
    fs.writeFileSync(
      dnsConfig,
      JSON.stringify({
        http: {
          tls: {
            letsencrypt: {
              hosts: ["registry.berth-test.invalid"],
              directoryurl: pebble.directory,
              directorycas: [pki.caCert],
              httpaddr: "",
            },
          },
        },
      }),
    );
    const other = await startAcmeBerth(await freePort(), dnsConfig);
    const dnsStatus = await waitFor(
      () => {
        const s = JSON.parse(fs.readFileSync(path.join(other.dataDir, "tls", "acme", "status.json"), "utf8"));
        if (!s.failures) throw new Error("no failure yet");
        return s;
      },
      { timeoutMs: 30_000 },
    );
    expect(dnsStatus.lastError.cause).toBe("dns");
    expect(dnsStatus.lastError.message).toMatch(/does not resolve/);
  }, 90_000);

  it("a rate-limited CA: waits at least as long as its Retry-After", async () => {
    // A real HTTPS server in the CA's place that answers every request as a rate-limited CA does.
    const ca = https.createServer(
      { key: fs.readFileSync(pki.serverKey), cert: fs.readFileSync(pki.serverChain) },
      (req, res) => {
        req.resume();
        res.writeHead(429, { "content-type": "application/problem+json", "retry-after": "7200" });
        res.end(
          JSON.stringify({
            type: "urn:ietf:params:acme:error:rateLimited",
            detail: "too many certificates already issued",
          }),
        );
      },
    );
    await new Promise<void>((r) => ca.listen(0, "127.0.0.1", () => r()));
    cleanups.push(() => new Promise((r) => ca.close(() => r(undefined))));
    const directory = `https://127.0.0.1:${(ca.address() as { port: number }).port}/dir`;
    const dir = tempDir("berth-acme-limited-");
    const config = acmeConfig(dir, directory, { httpaddr: "", challenges: ["tls-alpn-01"] });
    const berth = await startAcmeBerth(await freePort(), config);
    const statusFile = path.join(berth.dataDir, "tls", "acme", "status.json");
    const status = await waitFor(
      () => {
        const s = JSON.parse(fs.readFileSync(statusFile, "utf8"));
        if (!s.failures) throw new Error("no failure yet");
        return s;
      },
      { timeoutMs: 30_000 },
    );
    expect(status.lastError.cause).toBe("rate-limit");
    expect(status.lastError.message).toContain("too many certificates already issued");
    // Two hours from the CA's Retry-After, not the first backoff step of one minute.
    expect(status.notBefore - status.lastError.at).toBeGreaterThanOrEqual(7_190_000);
    expect(berth.logs.some((l) => l.includes("rate limited by the CA"))).toBe(true);
  }, 60_000);

  it("refuses a configuration it cannot act on, naming the key", () => {
    const dir = tempDir("berth-acme-bad-");
    const file = path.join(dir, "berth.yml");
    fs.writeFileSync(
      file,
      "http:\n  tls:\n    letsencrypt:\n      hosts: [192.168.1.10]\n      directoryurl: http://ca.example/dir\n",
    );
    const res = spawnSync(process.execPath, [CLI, "config", "check", "-c", file], { encoding: "utf8" });
    expect(res.status).toBe(1);
    expect(res.stderr).toContain("http.tls.letsencrypt.hosts");
    expect(res.stderr).toContain("http.tls.letsencrypt.directoryurl");
  });
});
