import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http2 from "node:http2";
import path from "node:path";
import Fastify, { type FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ConfigInput, configSchema } from "../../src/config/schema.js";
import { tlsServerOptions, watchTls } from "../../src/http/tls.js";
import { CLI, freePort, startBerth } from "../helpers/server.js";
import { http2Request, httpsRequest, makePki, type Pki, tmp, waitFor } from "./auth-fixtures.js";

let pki: Pki;
beforeAll(() => {
  pki = makePki();
});

async function serve(
  http: ConfigInput["http"],
): Promise<{ app: FastifyInstance; url: string; stop: () => void }> {
  const config = configSchema.parse({ http });
  const options = tlsServerOptions(config);
  expect(options).toBeDefined();
  const app = Fastify(options as object) as unknown as FastifyInstance;
  app.get("/v2/", async (request) => ({ http: request.raw.httpVersion }));
  const port = await freePort();
  await app.listen({ host: "127.0.0.1", port });
  const stop = watchTls(app, config);
  return { app, url: `https://127.0.0.1:${port}`, stop };
}

describe("tlsServerOptions", () => {
  it("is undefined without a certificate, and refuses half a pair or a mismatched key", () => {
    expect(tlsServerOptions(configSchema.parse({}))).toBeUndefined();
    expect(() =>
      tlsServerOptions(configSchema.parse({ http: { tls: { certificate: pki.serverCert } } })),
    ).toThrow(/both/);
    expect(() =>
      tlsServerOptions(
        configSchema.parse({ http: { tls: { certificate: pki.serverCert, key: pki.clientKey } } }),
      ),
    ).toThrow(/does not match/);
    expect(() =>
      tlsServerOptions(
        configSchema.parse({ http: { tls: { certificate: "/nope.crt", key: pki.serverKey } } }),
      ),
    ).toThrow(/cannot read TLS certificate \/nope.crt/);
    expect(() =>
      tlsServerOptions(
        configSchema.parse({
          http: { tls: { certificate: pki.serverChain, key: pki.serverKey, minimumtls: "ssl3" } },
        }),
      ),
    ).toThrow(/minimumtls/);
  });

  it("asks for client certificates only with clientcas", () => {
    const plain = tlsServerOptions(
      configSchema.parse({ http: { tls: { certificate: pki.serverChain, key: pki.serverKey } } }),
    )!;
    expect(plain.https.requestCert).toBe(false);
    expect(plain.http2).toBe(true);
    expect(plain.https.allowHTTP1).toBe(true);
    expect(plain.https.minVersion).toBe("TLSv1.2");
    const mutual = tlsServerOptions(
      configSchema.parse({
        http: { tls: { certificate: pki.serverChain, key: pki.serverKey, clientcas: [pki.clientCaCert] } },
      }),
    )!;
    expect(mutual.https.requestCert).toBe(true);
    expect(mutual.https.rejectUnauthorized).toBe(true);
  });
});

describe("a TLS server", () => {
  let server: Awaited<ReturnType<typeof serve>>;
  let certFile: string;
  let keyFile: string;
  beforeAll(async () => {
    const dir = tmp();
    certFile = path.join(dir, "tls.crt");
    keyFile = path.join(dir, "tls.key");
    fs.copyFileSync(pki.serverChain, certFile);
    fs.copyFileSync(pki.serverKey, keyFile);
    server = await serve({ tls: { certificate: certFile, key: keyFile } });
  });
  afterAll(async () => {
    server.stop();
    await server.app.close();
  });

  it("serves HTTP/1.1 and HTTP/2 with the chain (the client trusts only the root)", async () => {
    const h1 = await httpsRequest(`${server.url}/v2/`, { ca: fs.readFileSync(pki.caCert) });
    expect(h1.status).toBe(200);
    expect(JSON.parse(h1.body)).toEqual({ http: "1.1" });
    const h2 = await http2Request(`${server.url}/v2/`, { ca: fs.readFileSync(pki.caCert) });
    expect(h2.status).toBe(200);
    expect(h2.alpn).toBe("h2");
    expect(JSON.parse(h2.body)).toEqual({ http: "2.0" });
  });

  it("is not trusted by a client that does not know the CA", async () => {
    await expect(httpsRequest(`${server.url}/v2/`)).rejects.toThrow(/certificate/);
  });

  it("reloads the certificate when the files change, without a restart", async () => {
    const ca = fs.readFileSync(pki.caCert);
    expect((await httpsRequest(`${server.url}/v2/`, { ca })).peerSubject).toBe("berth-test-server");
    pki.reissueServer(certFile, keyFile, "berth-renewed");
    const after = await waitFor(
      () => httpsRequest(`${server.url}/v2/`, { ca }),
      (r) => r.peerSubject === "berth-renewed",
      10_000,
    );
    expect(after.peerSubject).toBe("berth-renewed");
    expect(after.status).toBe(200);
  });

  it("serves files renewed between the server's first read and the start of watching them", async () => {
    // A worker that starts slowly while a certificate is renewed: it read the old pair, and the watcher's
    // first look already sees the new one, so no later change would ever be noticed.
    const dir = tmp();
    const cert = path.join(dir, "tls.crt");
    const key = path.join(dir, "tls.key");
    fs.copyFileSync(pki.serverChain, cert);
    fs.copyFileSync(pki.serverKey, key);
    const config = configSchema.parse({ http: { tls: { certificate: cert, key } } });
    const app = Fastify(tlsServerOptions(config) as object) as unknown as FastifyInstance;
    app.get("/v2/", async () => ({}));
    const port = await freePort();
    await app.listen({ host: "127.0.0.1", port });
    pki.reissueServer(cert, key, "berth-renewed-before-watch");
    const stop = watchTls(app, config);
    try {
      const res = await httpsRequest(`https://127.0.0.1:${port}/v2/`, { ca: fs.readFileSync(pki.caCert) });
      expect(res.peerSubject).toBe("berth-renewed-before-watch");
    } finally {
      stop();
      await app.close();
    }
  });

  it("keeps serving the old certificate when the new files are broken", async () => {
    const ca = fs.readFileSync(pki.caCert);
    const before = (await httpsRequest(`${server.url}/v2/`, { ca })).peerSubject;
    fs.writeFileSync(certFile, "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n");
    await new Promise((r) => setTimeout(r, 2500));
    const res = await httpsRequest(`${server.url}/v2/`, { ca });
    expect(res.status).toBe(200);
    expect(res.peerSubject).toBe(before);
  });
});

describe("mutual TLS", () => {
  let server: Awaited<ReturnType<typeof serve>>;
  beforeAll(async () => {
    server = await serve({
      tls: { certificate: pki.serverChain, key: pki.serverKey, clientcas: [pki.clientCaCert] },
    });
  });
  afterAll(async () => {
    server.stop();
    await server.app.close();
  });

  it("serves a client with a certificate from the client CA, over HTTP/1.1 and HTTP/2", async () => {
    const creds = {
      ca: fs.readFileSync(pki.caCert),
      cert: fs.readFileSync(pki.clientCert),
      key: fs.readFileSync(pki.clientKey),
    };
    expect((await httpsRequest(`${server.url}/v2/`, creds)).status).toBe(200);
    expect((await http2Request(`${server.url}/v2/`, creds)).status).toBe(200);
  });

  it("refuses a client without a certificate, or with one from another CA", async () => {
    const ca = fs.readFileSync(pki.caCert);
    await expect(httpsRequest(`${server.url}/v2/`, { ca })).rejects.toThrow();
    await expect(
      httpsRequest(`${server.url}/v2/`, {
        ca,
        cert: fs.readFileSync(pki.strangerCert),
        key: fs.readFileSync(pki.strangerKey),
      }),
    ).rejects.toThrow();
  });
});

describe("berth serve with TLS", () => {
  /** One HTTP/2 request with a body. */
  function h2(url: string, ca: Buffer, method: string, headers: Record<string, string> = {}, body?: Buffer) {
    return new Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }>(
      (resolve, reject) => {
        const u = new URL(url);
        const session = http2.connect(u.origin, { ca });
        session.on("error", reject);
        const req = session.request({ ":method": method, ":path": u.pathname + u.search, ...headers });
        let status = 0;
        let responseHeaders: Record<string, unknown> = {};
        req.on("response", (h) => {
          status = Number(h[":status"]);
          responseHeaders = h;
        });
        const chunks: Buffer[] = [];
        req.on("data", (c) => chunks.push(c));
        req.on("end", () => {
          session.close();
          resolve({ status, headers: responseHeaders, body: Buffer.concat(chunks) });
        });
        req.on("error", reject);
        req.end(body);
      },
    );
  }

  it("serves the registry over HTTP/2 and HTTP/1.1, and reloads the certificate in every worker", async () => {
    const dir = tmp();
    const certFile = path.join(dir, "tls.crt");
    const keyFile = path.join(dir, "tls.key");
    fs.copyFileSync(pki.serverChain, certFile);
    fs.copyFileSync(pki.serverKey, keyFile);
    const berth = await startBerth({
      args: ["--tls-cert", certFile, "--tls-key", keyFile],
      workers: 2,
      scheme: "https",
    });
    try {
      const ca = fs.readFileSync(pki.caCert);
      const data = crypto.randomBytes(300_000);
      const digest = `sha256:${crypto.createHash("sha256").update(data).digest("hex")}`;
      const pushed = await h2(
        `${berth.url}/v2/tls/app/blobs/uploads/?digest=${digest}`,
        ca,
        "POST",
        { "content-type": "application/octet-stream", "content-length": String(data.length) },
        data,
      );
      expect(pushed.status).toBe(201);
      const pulled = await h2(`${berth.url}/v2/tls/app/blobs/${digest}`, ca, "GET");
      expect(pulled.status).toBe(200);
      expect(pulled.body.equals(data)).toBe(true);
      const h1 = await httpsRequest(`${berth.url}/v2/tls/app/blobs/${digest}`, { ca, method: "HEAD" });
      expect(h1.status).toBe(200);
      expect(h1.alpn).toBe("http/1.1");

      pki.reissueServer(certFile, keyFile, "berth-serve-renewed");
      // Every fresh connection (whichever worker takes it) gets the new certificate.
      await waitFor(
        async () =>
          (await Promise.all(Array.from({ length: 6 }, () => httpsRequest(`${berth.url}/v2/`, { ca })))).map(
            (r) => r.peerSubject,
          ),
        (subjects) => subjects.every((s) => s === "berth-serve-renewed"),
        15_000,
      );
      const after = await Promise.all(
        Array.from({ length: 6 }, () => httpsRequest(`${berth.url}/v2/`, { ca })),
      );
      expect(after.map((r) => r.peerSubject)).toEqual(Array(6).fill("berth-serve-renewed"));
    } finally {
      await berth.cleanup();
    }
  });

  it("requires client certificates with http.tls.clientcas", async () => {
    const dir = tmp();
    const config = path.join(dir, "config.yml");
    fs.writeFileSync(
      config,
      [
        "http:",
        "  tls:",
        `    certificate: ${pki.serverChain}`,
        `    key: ${pki.serverKey}`,
        "    clientcas:",
        `      - ${pki.clientCaCert}`,
        "",
      ].join("\n"),
    );
    const berth = await startBerth({ args: ["--config", config], scheme: "https" });
    try {
      const ca = fs.readFileSync(pki.caCert);
      await expect(httpsRequest(`${berth.url}/v2/`, { ca })).rejects.toThrow();
      await expect(
        httpsRequest(`${berth.url}/v2/`, {
          ca,
          cert: fs.readFileSync(pki.strangerCert),
          key: fs.readFileSync(pki.strangerKey),
        }),
      ).rejects.toThrow();
      const ok = await httpsRequest(`${berth.url}/v2/`, {
        ca,
        cert: fs.readFileSync(pki.clientCert),
        key: fs.readFileSync(pki.clientKey),
      });
      expect(ok.status).toBe(200);
    } finally {
      await berth.cleanup();
    }
  });

  it("refuses to start with a key that does not match the certificate", () => {
    const result = spawnSync(
      process.execPath,
      [
        CLI,
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--data-dir",
        tmp(),
        "--workers",
        "1",
        "--tls-cert",
        pki.serverChain,
        "--tls-key",
        pki.clientKey,
      ],
      {
        encoding: "utf8",
        timeout: 30_000,
      },
    );
    expect(result.status).not.toBe(0);
    expect(result.stderr + result.stdout).toMatch(/does not match/);
  });
});
