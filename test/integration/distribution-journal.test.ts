/**
 * The registry:2 link-file journal and the adoption's bulk rows (issue 12), at the database: run by both
 * projects, so the SQLite triggers and the PostgreSQL trigger functions of migration 0005 must write the
 * same journal rows for the same changes, and DistributionQueries.importBatch the same rows.
 */
import { rmSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { DistributionQueries, type ImportBatch } from "../../src/metadata/distribution-queries.js";
import { openTestDb, type TestDb } from "../helpers/metadata-db.js";
import { tempDir } from "../helpers/server.js";

const cleanups: (() => void | Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function database(): Promise<TestDb> {
  const dir = tempDir("berth-journal-");
  const db = await openTestDb(dir);
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  cleanups.push(() => db.close());
  return db;
}

const BYTE = Buffer.from([0]);

describe("the link-file journal", () => {
  it("journals tags, revisions, blob links and deleted repositories only while links are on", async () => {
    const db = await database();
    const run = (text: string, ...params: unknown[]) => db.run(text, ...params);
    const tag = (repo: number, name: string, digest: string) =>
      run(
        "insert into tags (repository_id, name, digest, created_at, updated_at) values (?, ?, ?, 1, 1) " +
          "on conflict (repository_id, name) do update set digest = excluded.digest",
        repo,
        name,
        digest,
      );
    const manifest = (repo: number, digest: string) =>
      run(
        "insert into manifests (repository_id, digest, media_type, size, content, created_at) " +
          "values (?, ?, 'x', 1, ?, 1) on conflict do nothing",
        repo,
        digest,
        BYTE,
      );
    await run("insert into repositories (name, created_at, updated_at) values ('a/b', 1, 1), ('c', 1, 1)");
    const ids = Object.fromEntries(
      (await db.all<{ id: number; name: string }>("select id, name from repositories")).map((r) => [
        r.name,
        Number(r.id),
      ]),
    );
    const ab = ids["a/b"]!;
    const c = ids.c!;
    // Never switched on: nothing.
    await tag(ab, "before", "sha256:0");
    await run("insert into distribution_state (id, links, updated_at) values (1, 'on', 1)");
    await tag(ab, "t1", "sha256:1");
    await tag(c, "t2", "sha256:1");
    await tag(9999, "orphan", "sha256:1"); // no repository row: nothing
    await tag(ab, "t1", "sha256:2"); // moved: the update path of the upsert
    await run("update tags set updated_at = 5 where name = 't2'"); // not its digest: nothing
    await manifest(ab, "sha256:m");
    await manifest(ab, "sha256:m"); // already there: nothing
    await run(
      "insert into repository_blobs (repository_id, digest, created_at) values (?, 'sha256:l', 1)",
      c,
    );
    await run("delete from repository_blobs");
    await run("delete from manifests");
    await run("delete from tags where repository_id = ?", c);
    await run("delete from repositories where name = 'c'");
    await run("update distribution_state set links = 'exporting'");
    await run("delete from tags where name = 'before'");
    await run("update distribution_state set links = 'off'");
    await run("delete from tags");
    await tag(ab, "after", "sha256:3");
    const rows = await db.all<{ repository: string; kind: string; key: string }>(
      "select repository, kind, key from distribution_journal order by id",
    );
    expect(rows.map((r) => `${r.kind} ${r.repository} ${r.key}`)).toEqual([
      "tag a/b t1",
      "tag c t2",
      "tag a/b t1",
      "revision a/b sha256:m",
      "layer c sha256:l",
      "layer c sha256:l",
      "revision a/b sha256:m",
      "tag c t2",
      "repository c ",
      "tag a/b before",
    ]);
    const queries = new DistributionQueries(db.meta.db, db.meta.dialect);
    const journal = await queries.journal(100);
    expect(journal.map((e) => e.id)).toEqual([...journal.map((e) => e.id)].sort((x, y) => x - y));
    await queries.clearJournal(journal.map((e) => e.id));
    expect(await queries.hasJournal()).toBe(false);
  });
});

describe("importBatch", () => {
  it("writes batches larger than one statement, and a second run changes nothing", async () => {
    const db = await database();
    const queries = new DistributionQueries(db.meta.db, db.meta.dialect);
    const hex = (n: number) => `sha256:${n.toString(16).padStart(64, "0")}`;
    const batch: ImportBatch = { repositories: [], blobs: [] };
    for (let b = 0; b < 7000; b++) batch.blobs.push({ digest: hex(b), size: b, createdAt: 1 });
    for (let r = 0; r < 3; r++) {
      const repo: ImportBatch["repositories"][number] = {
        name: `r/${r}`,
        manifests: [],
        tags: [],
        links: [],
      };
      for (let m = 0; m < 3000; m++) {
        const digest = hex(100_000 + r * 10_000 + m);
        repo.manifests.push({
          digest,
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          content: Buffer.from(`manifest ${r} ${m}`),
          artifactType: null,
          subject: null,
          annotations: null,
          configDigest: hex(m),
          blobs: [hex(m), hex(m + 1), hex(m)],
          children: [],
          createdAt: 2,
        });
        repo.tags.push({ name: `t${m}`, digest, at: 3 });
        repo.links.push({ digest: hex(m), at: 4 });
      }
      batch.repositories.push(repo);
    }
    await queries.importBatch(batch);
    const count = async (table: string) =>
      Number((await db.get<{ n: number }>(`select count(*) as n from ${table}`))?.n);
    const counts = async () => ({
      repositories: await count("repositories"),
      blobs: await count("blobs"),
      links: await count("repository_blobs"),
      manifests: await count("manifests"),
      manifestBlobs: await count("manifest_blobs"),
      tags: await count("tags"),
    });
    const expected = {
      repositories: 3,
      blobs: 7000,
      links: 9000,
      manifests: 9000,
      manifestBlobs: 18000,
      tags: 9000,
    };
    expect(await counts()).toEqual(expected);
    const content = await db.get<{ content: Uint8Array; size: number }>(
      "select m.content, m.size from manifests m join repositories r on r.id = m.repository_id " +
        "where r.name = 'r/2' and m.digest = ?",
      hex(120_017),
    );
    expect(Buffer.from(content!.content).toString()).toBe("manifest 2 17");
    expect(Number(content!.size)).toBe("manifest 2 17".length);
    // Interrupted and run again: the same rows, no new repository ids.
    const ids = await db.all<{ id: number }>("select id from repositories order by id");
    await queries.importBatch(batch);
    expect(await counts()).toEqual(expected);
    expect(await db.all<{ id: number }>("select id from repositories order by id")).toEqual(ids);
    // A repository made after the adoption gets a fresh id.
    await db.run("insert into repositories (name, created_at, updated_at) values ('later', 1, 1)");
    const later = await db.get<{ id: number }>("select id from repositories where name = 'later'");
    expect(Number(later!.id)).toBeGreaterThan(Math.max(...ids.map((r) => Number(r.id))));
  });
});
