/**
 * Berth on PostgreSQL when the database goes away: requests in flight and new ones answer 503
 * UNAVAILABLE with Retry-After and a clear message (never a 500, never a half-written change), and
 * once PostgreSQL is back the pool reconnects without a restart of Berth. Runs in the `postgres`
 * project only (it needs a server of its own to stop and start).
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PostgresServer, startPostgres } from "../helpers/postgres.js";
import { blobOf, errorCode, RegistryClient, randomBlob } from "../helpers/registry.js";
import { type Berth, startBerth, TEST_DB, tempDir } from "../helpers/server.js";
import { makePki } from "./auth-fixtures.js";

describe.skipIf(TEST_DB !== "postgres")("PostgreSQL outage", () => {
  let pgServer: PostgresServer;
  let pgUrl: string;
  let berth: Berth;
  let client: RegistryClient;

  beforeAll(async () => {
    pgServer = await startPostgres();
    const url = await pgServer.createDatabase("outage");
    pgUrl = url;
    berth = await startBerth({
      env: { REGISTRY_DATABASE_URL: url, REGISTRY_DATABASE_CONNECTTIMEOUT: "2s" },
    });
    client = new RegistryClient(berth.url);
  });
  afterAll(async () => {
    await berth?.cleanup();
    await pgServer?.stop();
  });

  it("answers 503 with Retry-After while the database is down, and recovers when it is back", async () => {
    const before = await client.pushImage("outage/app", "v1");
    await pgServer.stopServer();
    try {
      const attempts: [string, Response][] = [
        ["tags", await client.fetch("/v2/outage/app/tags/list")],
        ["upload", await client.fetch("/v2/outage/app/blobs/uploads/", { method: "POST" })],
        ["manifest", await client.putManifest("outage/app", "v2", before.manifest)],
      ];
      for (const [what, res] of attempts) {
        expect(res.status, what).toBe(503);
        expect(res.headers.get("retry-after"), what).toMatch(/^\d+$/);
        const body = (await res.json()) as { errors: { code: string; message: string }[] };
        expect(body.errors[0]?.code, what).toBe("UNAVAILABLE");
        expect(body.errors[0]?.message, what).toMatch(/metadata database is unavailable/);
      }
      const ready = await fetch(`${berth.url}/readyz`);
      expect(ready.status).toBe(503);
    } finally {
      await pgServer.startServer();
    }
    // The pool reconnects on its own: the old image reads, a new one pushes, nothing was half-written.
    const tags = await client.fetch("/v2/outage/app/tags/list");
    expect(tags.status).toBe(200);
    expect(((await tags.json()) as { tags: string[] }).tags).toEqual(["v1"]);
    const after = await client.pushImage("outage/app", "v2", { layers: [randomBlob(2048)] });
    const get = await client.fetch(`/v2/outage/app/manifests/${after.digest}`);
    expect(get.status).toBe(200);
    expect((await fetch(`${berth.url}/readyz`)).status).toBe(200);
  });

  it("a request in flight when its connection is killed answers 503 and leaves nothing half-written", async () => {
    const image = await client.pushImage("outage/inflight", "v1");
    // Hold the repository's row so that the next PUT waits inside its transaction...
    const blocker = new pg.Client({ connectionString: pgUrl });
    blocker.on("error", () => {});
    await blocker.connect();
    await blocker.query("begin");
    await blocker.query("select id from repositories where name = 'outage/inflight' for update");
    const put = client.putManifest("outage/inflight", "v2", image.manifest);
    for (let i = 0; i < 250; i++) {
      const waiting = await blocker.query(
        "select count(*)::int as n from pg_stat_activity where application_name = 'berth' and wait_event_type = 'Lock'",
      );
      if (waiting.rows[0].n > 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    // ...then cut Berth's connections, as a database failover would.
    await blocker.query(
      "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'berth'",
    );
    const res = await put;
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await errorCode(res)).toBe("UNAVAILABLE");
    await blocker.query("rollback");
    await blocker.end();
    // The tag was not set, and the next request works on a fresh connection.
    const tags = await client.fetch("/v2/outage/inflight/tags/list");
    expect(tags.status).toBe(200);
    expect(((await tags.json()) as { tags: string[] }).tags).toEqual(["v1"]);
  });

  it("a writer whose upload lease cannot be renewed (the database down longer than the lease) stops writing and answers 503", async () => {
    const blob = randomBlob(200_000);
    const post = await client.fetch("/v2/outage/lease/blobs/uploads/", { method: "POST" });
    const location = new URL(post.headers.get("location")!).pathname;
    const first = await client.fetch(location, {
      method: "PATCH",
      body: blob.data.subarray(0, 1000),
      headers: { "content-type": "application/octet-stream", "content-range": "0-999" },
    });
    expect(first.status).toBe(202);
    // The next chunk streams 1000 bytes every 100 ms for up to 40 s, with no declared length.
    const t0 = Date.now();
    let sending = true;
    const answered = new Promise<{ status: number; at: number; body: string }>((resolve) => {
      const req = http.request(`${berth.url}${location}`, {
        method: "PATCH",
        headers: { "content-type": "application/octet-stream", "transfer-encoding": "chunked" },
      });
      req.on("response", (res) => {
        sending = false;
        const parts: Buffer[] = [];
        res.on("data", (d: Buffer) => parts.push(d));
        res.on("end", () => {
          resolve({
            status: res.statusCode ?? 0,
            at: Date.now() - t0,
            body: Buffer.concat(parts).toString(),
          });
          req.destroy();
        });
      });
      req.on("error", () => resolve({ status: 0, at: Date.now() - t0, body: "" }));
      void (async () => {
        for (let at = 1000; sending && Date.now() - t0 < 40_000; at = (at + 1000) % 190_000) {
          req.write(blob.data.subarray(at, at + 1000));
          await new Promise((r) => setTimeout(r, 100));
        }
        if (sending) req.end();
      })();
    });
    await new Promise((r) => setTimeout(r, 500));
    await pgServer.stopServer();
    let outcome: { status: number; at: number; body: string };
    try {
      outcome = await answered;
    } finally {
      await pgServer.startServer();
    }
    // Before the lease (15 s) can run out and another request may take the upload over.
    expect(outcome.status, outcome.body).toBe(503);
    expect(JSON.parse(outcome.body).errors[0].code).toBe("UNAVAILABLE");
    expect(outcome.at).toBeGreaterThan(9_000);
    expect(outcome.at).toBeLessThan(15_000);
    // Nothing of that chunk was acknowledged; the upload goes on from what was (once the lease that the
    // stopped writer could not release has run out).
    const status = await client.fetch(location);
    expect(status.headers.get("range")).toBe("0-999");
    const rest = await client.fetch(location, {
      method: "PATCH",
      body: blob.data.subarray(1000),
      headers: { "content-type": "application/octet-stream", "content-range": `1000-${blob.size - 1}` },
    });
    expect(rest.status, await rest.clone().text()).toBe(202);
    const put = await client.fetch(`${location}?digest=${blob.digest}`, { method: "PUT" });
    expect(put.status).toBe(201);
  });

  it("a restart of PostgreSQL between requests costs no request once it is up", async () => {
    await client.pushImage("outage/restart", "v1");
    await pgServer.restart();
    // Every pooled connection died with the old server; the pool drops them and opens new ones.
    for (let i = 0; i < 5; i++) {
      const res = await client.fetch("/v2/outage/restart/tags/list");
      if (res.status === 503) {
        expect(await errorCode(res)).toBe("UNAVAILABLE");
        continue;
      }
      expect(res.status).toBe(200);
    }
    const blob = blobOf("after restart");
    await client.pushBlob("outage/restart", blob);
    const head = await client.fetch(`/v2/outage/restart/blobs/${blob.digest}`, { method: "HEAD" });
    expect(head.status).toBe(200);
  });

  it("connects over TLS with sslmode verify-full, sslrootcert and a client certificate (sslcert, sslkey)", async () => {
    const pki = makePki();
    const read = (file: string) => readFileSync(file, "utf8");
    const tls = await startPostgres({
      files: {
        "server.crt": read(pki.serverChain),
        "server.key": read(pki.serverKey),
        "ca.crt": read(pki.clientCaCert),
      },
      settings: { ssl: "on", ssl_cert_file: "server.crt", ssl_key_file: "server.key", ssl_ca_file: "ca.crt" },
      // The helper's own connections come without TLS; Berth's must bring a client certificate.
      hba: "local all all trust\nhostnossl all all 127.0.0.1/32 trust\nhostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n",
    });
    const dir = tempDir("berth-pg-tls-");
    try {
      await tls.createDatabase("tls");
      const config = (rootcert: string, withClientCert: boolean) => {
        const file = path.join(dir, `config-${Math.random().toString(36).slice(2)}.yml`);
        const lines = [
          "database:",
          "  enabled: true",
          "  host: 127.0.0.1",
          `  port: ${tls.port}`,
          "  user: berth",
          "  dbname: tls",
          "  sslmode: verify-full",
          `  sslrootcert: ${rootcert}`,
          ...(withClientCert ? [`  sslcert: ${pki.clientCert}`, `  sslkey: ${pki.clientKey}`] : []),
        ];
        writeFileSync(file, `${lines.join("\n")}\n`);
        return ["--config", file];
      };
      // REGISTRY_DATABASE_URL="" unsets the URL this project's helper would give.
      const env = { REGISTRY_DATABASE_URL: "" };
      const berthTls = await startBerth({ args: config(pki.caCert, true), env });
      try {
        await new RegistryClient(berthTls.url).pushImage("tls/app", "v1");
        const rows = await tls.query<{ n: number }>(
          "select count(*)::int as n from pg_stat_ssl s join pg_stat_activity a using (pid) where a.application_name = 'berth' and s.ssl and s.client_dn is not null",
          [],
          "tls",
        );
        expect(rows[0]?.n).toBeGreaterThan(0);
      } finally {
        await berthTls.cleanup();
      }
      // A server certificate from a CA other than sslrootcert, or no client certificate: no start.
      await expect(startBerth({ args: config(pki.clientCaCert, true), env })).rejects.toThrow(/certificate/i);
      await expect(startBerth({ args: config(pki.caCert, false), env })).rejects.toThrow(/certificate/i);
    } finally {
      await tls.stop();
      rmSync(dir, { recursive: true, force: true });
      rmSync(pki.dir, { recursive: true, force: true });
    }
  });
});
