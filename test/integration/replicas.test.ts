/**
 * Two `berth serve` processes on one metadata database and one blob directory, as replicas behind a
 * load balancer: whatever one writes, the other serves. On SQLite they share the file (one machine);
 * in the `postgres` project they share a PostgreSQL database (test/helpers/server.ts gives both the
 * database of their common data directory).
 */
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryClient, randomBlob } from "../helpers/registry.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";

describe("two replicas on one database and one blob directory", () => {
  let dir: string;
  let one: Berth;
  let two: Berth;
  let a: RegistryClient;
  let b: RegistryClient;

  beforeAll(async () => {
    dir = tempDir("berth-replicas-");
    one = await startBerth({ dataDir: dir });
    two = await startBerth({ dataDir: dir });
    a = new RegistryClient(one.url);
    b = new RegistryClient(two.url);
  });
  afterAll(async () => {
    await one?.cleanup();
    await two?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const pathOf = (res: Response, base: string) => {
    const u = new URL(res.headers.get("location")!, base);
    return u.pathname + u.search;
  };

  it("serves through one what was pushed through the other", async () => {
    const image = await a.pushImage("replicas/app", "v1");
    const manifest = await b.fetch("/v2/replicas/app/manifests/v1", {
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    });
    expect(manifest.status).toBe(200);
    expect(manifest.headers.get("docker-content-digest")).toBe(image.digest);
    const layer = await b.fetch(`/v2/replicas/app/blobs/${image.layers[0]!.digest}`);
    expect(Buffer.from(await layer.arrayBuffer()).equals(image.layers[0]!.data)).toBe(true);
    const deleted = await b.fetch(`/v2/replicas/app/manifests/${image.digest}`, { method: "DELETE" });
    expect(deleted.status).toBe(202);
    expect((await a.fetch("/v2/replicas/app/manifests/v1", { method: "HEAD" })).status).toBe(404);
  });

  it("continues on one an upload started on the other", async () => {
    const blob = randomBlob(90_000);
    const start = await a.fetch("/v2/replicas/upload/blobs/uploads/", { method: "POST" });
    expect(start.status).toBe(202);
    let location = pathOf(start, one.url);
    const parts: [RegistryClient, number, number][] = [
      [b, 0, 30_000],
      [a, 30_000, 60_000],
    ];
    for (const [client, from, to] of parts) {
      const res = await client.fetch(location, {
        method: "PATCH",
        body: blob.data.subarray(from, to),
        headers: { "content-range": `${from}-${to - 1}`, "content-type": "application/octet-stream" },
      });
      expect(res.status).toBe(202);
      location = pathOf(res, client.base);
    }
    const status = await b.fetch(location);
    expect(status.headers.get("range")).toBe("0-59999");
    const done = await b.fetch(`${location}${location.includes("?") ? "&" : "?"}digest=${blob.digest}`, {
      method: "PUT",
      body: blob.data.subarray(60_000),
      headers: { "content-range": `60000-${blob.size - 1}`, "content-type": "application/octet-stream" },
    });
    expect(done.status).toBe(201);
    const head = await a.fetch(`/v2/replicas/upload/blobs/${blob.digest}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(blob.size));
  });

  it("takes pushes to one repository through both at once and both list every tag", async () => {
    await Promise.all(
      Array.from({ length: 8 }, (_, i) => (i % 2 ? a : b).pushImage("replicas/busy", `t${i}`)),
    );
    const want = Array.from({ length: 8 }, (_, i) => `t${i}`).sort();
    for (const client of [a, b]) {
      const res = await client.fetch("/v2/replicas/busy/tags/list");
      expect(((await res.json()) as { tags: string[] }).tags.sort()).toEqual(want);
      const catalog = (await (await client.fetch("/v2/_catalog")).json()) as { repositories: string[] };
      expect(catalog.repositories).toContain("replicas/busy");
    }
  });
});
