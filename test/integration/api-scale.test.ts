import { createHash } from "node:crypto";
import { rmSync } from "node:fs";
import SQLite from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSqlite, sqlitePath } from "../../src/metadata/db.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { type Client, getJson } from "./api-push.js";

/**
 * The UI's listings with 10,000 repositories (100 namespaces of 100), seeded straight into the database:
 * every page, sort and search answers quickly because paging, counting and sizing happen on the server.
 */

const NAMESPACES = 100;
const PER_NAMESPACE = 100;
const TOTAL = NAMESPACES * PER_NAMESPACE;
/** Generous for a shared 2-core CI machine; typical answers take a few tens of milliseconds. */
const BUDGET_MS = 1500;

const digestOf = (text: string) => `sha256:${createHash("sha256").update(text).digest("hex")}`;

let berth: Berth;
let c: Client;
let dataDir: string;

beforeAll(async () => {
  dataDir = tempDir("berth-api-scale-");
  const meta = await openSqlite(dataDir);
  await meta.close();
  const db = new SQLite(sqlitePath(dataDir));
  const t0 = Date.UTC(2024, 0, 1);
  const base = digestOf("base");
  const insert = db.transaction(() => {
    const repo = db.prepare("insert into repositories (name, created_at, updated_at) values (?, ?, ?)");
    const blob = db.prepare("insert or ignore into blobs (digest, size, created_at) values (?, ?, ?)");
    const link = db.prepare(
      "insert into repository_blobs (repository_id, digest, created_at) values (?, ?, ?)",
    );
    const manifest = db.prepare(
      `insert into manifests (repository_id, digest, media_type, size, content, artifact_type, subject, annotations,
        config_digest, created_at, last_pulled_at) values (?, ?, ?, ?, ?, ?, null, null, ?, ?, null)`,
    );
    const mblob = db.prepare(
      "insert into manifest_blobs (repository_id, manifest_digest, blob_digest) values (?, ?, ?)",
    );
    const tag = db.prepare(
      "insert into tags (repository_id, name, digest, created_at, updated_at) values (?, ?, ?, ?, ?)",
    );
    blob.run(base, 5_000_000, t0);
    for (let n = 0; n < NAMESPACES; n++) {
      for (let r = 0; r < PER_NAMESPACE; r++) {
        const i = n * PER_NAMESPACE + r;
        const name = `ns${String(n).padStart(3, "0")}/repo${String(r).padStart(3, "0")}`;
        const when = t0 + ((i * 7919) % TOTAL) * 60_000;
        const id = Number(repo.run(name, when, when).lastInsertRowid);
        const config = digestOf(`config-${i}`);
        const layer = digestOf(`layer-${i}`);
        const content = Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: "application/vnd.oci.image.manifest.v1+json",
            config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config, size: 500 },
            layers: [
              { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: base, size: 5_000_000 },
              { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: layer, size: 1000 + i },
            ],
          }),
        );
        const md = digestOf(content.toString());
        blob.run(config, 500, when);
        blob.run(layer, 1000 + i, when);
        blob.run(md, content.length, when);
        for (const d of [base, config, layer, md]) link.run(id, d, when);
        manifest.run(
          id,
          md,
          "application/vnd.oci.image.manifest.v1+json",
          content.length,
          content,
          "application/vnd.oci.image.config.v1+json",
          config,
          when,
        );
        for (const d of [config, base, layer]) mblob.run(id, md, d);
        tag.run(id, "latest", md, when, when);
        tag.run(id, `v${i}`, md, when, when);
      }
    }
  });
  insert();
  db.close();
  berth = await startBerth({ dataDir });
  c = { base: berth.url };
}, 300_000);

afterAll(async () => {
  await berth?.cleanup();
  rmSync(dataDir, { recursive: true, force: true });
});

async function timed(path: string) {
  const start = performance.now();
  const res = await getJson(c, path);
  const ms = performance.now() - start;
  expect(res.status, path).toBe(200);
  return { ...res, ms };
}

describe(`${TOTAL} repositories`, () => {
  it("pages, sorts and searches on the server, quickly", async () => {
    // Warm up the process (first queries compile statements and fill caches).
    await getJson(c, "/api/v1/repositories");
    const timings: Record<string, number> = {};
    const byName = await timed("/api/v1/repositories?limit=50");
    timings.name = byName.ms;
    expect(byName.body.total).toBe(TOTAL);
    expect(byName.body.items).toHaveLength(50);
    expect(byName.body.items[0]).toMatchObject({ name: "ns000/repo000", tagCount: 2, manifestCount: 1 });
    expect(byName.body.namespaces).toHaveLength(NAMESPACES);

    const last = await timed("/api/v1/repositories?limit=50&page=200");
    timings.lastPage = last.ms;
    expect(last.body.items.at(-1).name).toBe("ns099/repo099");

    const bySize = await timed("/api/v1/repositories?sort=size&limit=50");
    timings.size = bySize.ms;
    expect(bySize.body.items[0].name).toBe("ns099/repo099");
    const sizes = bySize.body.items.map((r: { size: number }) => r.size);
    expect(sizes).toEqual([...sizes].sort((a, b) => b - a));

    const byDate = await timed("/api/v1/repositories?sort=pushed&limit=50");
    timings.pushed = byDate.ms;
    const dates = byDate.body.items.map((r: { lastPush: number }) => r.lastPush);
    expect(dates).toEqual([...dates].sort((a, b) => b - a));

    const search = await timed("/api/v1/repositories?q=ns042/repo0");
    timings.search = search.ms;
    expect(search.body.total).toBe(100);

    const narrow = await timed("/api/v1/repositories?q=repo077&sort=size");
    timings.searchBySize = narrow.ms;
    expect(narrow.body.total).toBe(NAMESPACES);

    const usage = await timed("/api/v1/usage?limit=50");
    timings.usage = usage.ms;
    expect(usage.body.repositories.total).toBe(TOTAL);
    expect(usage.body.shared).toEqual({ bytes: 5_000_000, blobs: 1 });

    const tags = await timed("/api/v1/repositories/ns050/repo050/-/tags");
    timings.tags = tags.ms;
    expect(tags.body.total).toBe(2);

    console.log(
      `UI API timings with ${TOTAL} repositories (ms):`,
      Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, Math.round(v)])),
    );
    for (const [what, ms] of Object.entries(timings)) expect(ms, what).toBeLessThan(BUDGET_MS);
  });
});
