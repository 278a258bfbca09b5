/**
 * Berth on PostgreSQL when the database goes away: requests in flight and new ones answer 503
 * UNAVAILABLE with Retry-After and a clear message (never a 500, never a half-written change), and
 * once PostgreSQL is back the pool reconnects without a restart of Berth. Runs in the `postgres`
 * project only (it needs a server of its own to stop and start).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PostgresServer, startPostgres } from "../helpers/postgres.js";
import { blobOf, errorCode, RegistryClient, randomBlob } from "../helpers/registry.js";
import { type Berth, startBerth, TEST_DB } from "../helpers/server.js";

describe.skipIf(TEST_DB !== "postgres")("PostgreSQL outage", () => {
  let pg: PostgresServer;
  let berth: Berth;
  let client: RegistryClient;

  beforeAll(async () => {
    pg = await startPostgres();
    const url = await pg.createDatabase("outage");
    berth = await startBerth({
      env: { REGISTRY_DATABASE_URL: url, REGISTRY_DATABASE_CONNECTTIMEOUT: "2s" },
    });
    client = new RegistryClient(berth.url);
  });
  afterAll(async () => {
    await berth?.cleanup();
    await pg?.stop();
  });

  it("answers 503 with Retry-After while the database is down, and recovers when it is back", async () => {
    const before = await client.pushImage("outage/app", "v1");
    await pg.stopServer();
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
      await pg.startServer();
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

  it("a restart of PostgreSQL between requests costs no request once it is up", async () => {
    await client.pushImage("outage/restart", "v1");
    await pg.restart();
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
});
