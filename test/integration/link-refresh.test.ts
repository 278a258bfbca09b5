import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestDb, type TestDb } from "../helpers/metadata-db.js";
import { RegistryClient, randomBlob } from "../helpers/registry.js";
import { type Berth, startBerth } from "../helpers/server.js";

// A client that HEADs a blob and skips its upload must get a whole grace period to push its manifest:
// asking for a blob whose link is old renews the link, so the collector leaves it alone.
let berth: Berth;
let client: RegistryClient;
let db: TestDb;

beforeAll(async () => {
  berth = await startBerth();
  client = new RegistryClient(berth.url);
  db = await openTestDb(berth.dataDir);
});
afterAll(async () => {
  await db?.close();
  await berth?.cleanup();
});

async function linkedAt(repo: string, digest: string): Promise<number | undefined> {
  const row = await db.get<{ t: number }>(
    "select rb.created_at as t from repository_blobs rb join repositories r on r.id = rb.repository_id where r.name = ? and rb.digest = ?",
    repo,
    digest,
  );
  return row?.t;
}

async function age(repo: string, digest: string, to: number): Promise<void> {
  await db.run(
    "update repository_blobs set created_at = ? where digest = ? and repository_id = (select id from repositories where name = ?)",
    to,
    digest,
    repo,
  );
}

describe("blob links", () => {
  it("renews an old link when the blob is asked for, and leaves a fresh one alone", async () => {
    const blob = randomBlob(100);
    await client.pushBlob("refresh/app", blob);
    const fresh = (await linkedAt("refresh/app", blob.digest))!;
    await client.fetch(`/v2/refresh/app/blobs/${blob.digest}`, { method: "HEAD" });
    expect(await linkedAt("refresh/app", blob.digest)).toBe(fresh);

    await age("refresh/app", blob.digest, 1000);
    const before = Date.now();
    const head = await client.fetch(`/v2/refresh/app/blobs/${blob.digest}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await linkedAt("refresh/app", blob.digest)).toBeGreaterThanOrEqual(before);

    await age("refresh/app", blob.digest, 1000);
    const get = await client.fetch(`/v2/refresh/app/blobs/${blob.digest}`);
    expect(get.status).toBe(200);
    await get.arrayBuffer();
    expect(await linkedAt("refresh/app", blob.digest)).toBeGreaterThanOrEqual(before);
  });

  it("answers 404 when the link went between the lookup and the renewal", async () => {
    const blob = randomBlob(100);
    await client.pushBlob("refresh/gone", blob);
    await db.run("delete from repository_blobs where digest = ?", blob.digest);
    const head = await client.fetch(`/v2/refresh/gone/blobs/${blob.digest}`, { method: "HEAD" });
    expect(head.status).toBe(404);
  });
});
