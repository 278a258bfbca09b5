import fs from "node:fs";
import path from "node:path";
import Fastify, { type FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ConfigInput, configSchema } from "../../src/config/schema.js";
import { tlsServerOptions, watchTls } from "../../src/http/tls.js";
import { freePort } from "../helpers/server.js";
import { http2Request, httpsRequest, makePki, type Pki, tmp, waitFor } from "./auth-fixtures.js";

let pki: Pki;
beforeAll(() => {
  pki = makePki();
});

async function serve(http: ConfigInput["http"]): Promise<{ app: FastifyInstance; url: string; stop: () => void }> {
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
    expect(() => tlsServerOptions(configSchema.parse({ http: { tls: { certificate: pki.serverCert } } }))).toThrow(/both/);
    expect(() =>
      tlsServerOptions(configSchema.parse({ http: { tls: { certificate: pki.serverCert, key: pki.clientKey } } })),
    ).toThrow(/does not match/);
    expect(() => tlsServerOptions(configSchema.parse({ http: { tls: { certificate: "/nope.crt", key: pki.serverKey } } }))).toThrow(
      /cannot read TLS certificate \/nope.crt/,
    );
    expect(() =>
      tlsServerOptions(configSchema.parse({ http: { tls: { certificate: pki.serverChain, key: pki.serverKey, minimumtls: "ssl3" } } })),
    ).toThrow(/minimumtls/);
  });

  it("asks for client certificates only with clientcas", () => {
    const plain = tlsServerOptions(configSchema.parse({ http: { tls: { certificate: pki.serverChain, key: pki.serverKey } } }))!;
    expect(plain.https.requestCert).toBe(false);
    expect(plain.http2).toBe(true);
    expect(plain.https.allowHTTP1).toBe(true);
    expect(plain.https.minVersion).toBe("TLSv1.2");
    const mutual = tlsServerOptions(
      configSchema.parse({ http: { tls: { certificate: pki.serverChain, key: pki.serverKey, clientcas: [pki.clientCaCert] } } }),
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
    server = await serve({ tls: { certificate: pki.serverChain, key: pki.serverKey, clientcas: [pki.clientCaCert] } });
  });
  afterAll(async () => {
    server.stop();
    await server.app.close();
  });

  it("serves a client with a certificate from the client CA, over HTTP/1.1 and HTTP/2", async () => {
    const creds = { ca: fs.readFileSync(pki.caCert), cert: fs.readFileSync(pki.clientCert), key: fs.readFileSync(pki.clientKey) };
    expect((await httpsRequest(`${server.url}/v2/`, creds)).status).toBe(200);
    expect((await http2Request(`${server.url}/v2/`, creds)).status).toBe(200);
  });

  it("refuses a client without a certificate, or with one from another CA", async () => {
    const ca = fs.readFileSync(pki.caCert);
    await expect(httpsRequest(`${server.url}/v2/`, { ca })).rejects.toThrow();
    await expect(
      httpsRequest(`${server.url}/v2/`, { ca, cert: fs.readFileSync(pki.strangerCert), key: fs.readFileSync(pki.strangerKey) }),
    ).rejects.toThrow();
  });
});
