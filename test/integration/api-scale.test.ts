import { createHash } from "node:crypto";
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestDb } from "../helpers/metadata-db.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { type Client, getJson, usageAfter } from "./api-push.js";

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
  // Seeded through Kysely in batches, so that SQLite and PostgreSQL (BERTH_TEST_DB) share the code.
  const { meta } = await openTestDb(dataDir);
  const t0 = Date.UTC(2024, 0, 1);
  const base = digestOf("base");
  const blobs = new Map<string, { digest: string; size: number; created_at: number }>();
  blobs.set(base, { digest: base, size: 5_000_000, created_at: t0 });
  const repos: { name: string; created_at: number; updated_at: number }[] = [];
  const perRepo: { config: string; layer: string; md: string; content: Buffer; when: number }[] = [];
  for (let n = 0; n < NAMESPACES; n++) {
    for (let r = 0; r < PER_NAMESPACE; r++) {
      const i = n * PER_NAMESPACE + r;
      const name = `ns${String(n).padStart(3, "0")}/repo${String(r).padStart(3, "0")}`;
      const when = t0 + ((i * 7919) % TOTAL) * 60_000;
      repos.push({ name, created_at: when, updated_at: when });
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
      for (const [digest, size] of [
        [config, 500],
        [layer, 1000 + i],
        [md, content.length],
      ] as const) {
        if (!blobs.has(digest)) blobs.set(digest, { digest, size, created_at: when });
      }
      perRepo.push({ config, layer, md, content, when });
    }
  }
  const chunks = <T>(items: T[], size = 500): T[][] =>
    Array.from({ length: Math.ceil(items.length / size) }, (_, k) => items.slice(k * size, (k + 1) * size));
  await meta.db.transaction().execute(async (trx) => {
    const ids: number[] = [];
    for (const part of chunks(repos)) {
      const rows = await trx.insertInto("repositories").values(part).returning("id").execute();
      ids.push(...rows.map((row) => Number(row.id)));
    }
    for (const part of chunks([...blobs.values()])) await trx.insertInto("blobs").values(part).execute();
    const links = [];
    const manifests = [];
    const mblobs = [];
    const tags = [];
    for (const [k, p] of perRepo.entries()) {
      const id = ids[k]!;
      for (const d of [base, p.config, p.layer, p.md])
        links.push({ repository_id: id, digest: d, created_at: p.when });
      manifests.push({
        repository_id: id,
        digest: p.md,
        media_type: "application/vnd.oci.image.manifest.v1+json",
        size: p.content.length,
        content: p.content,
        artifact_type: "application/vnd.oci.image.config.v1+json",
        subject: null,
        annotations: null,
        config_digest: p.config,
        created_at: p.when,
        last_pulled_at: null,
      });
      for (const d of [p.config, base, p.layer])
        mblobs.push({ repository_id: id, manifest_digest: p.md, blob_digest: d });
      tags.push({ repository_id: id, name: "latest", digest: p.md, created_at: p.when, updated_at: p.when });
      tags.push({ repository_id: id, name: `v${k}`, digest: p.md, created_at: p.when, updated_at: p.when });
    }
    for (const part of chunks(links)) await trx.insertInto("repository_blobs").values(part).execute();
    for (const part of chunks(manifests, 200)) await trx.insertInto("manifests").values(part).execute();
    for (const part of chunks(mblobs)) await trx.insertInto("manifest_blobs").values(part).execute();
    for (const part of chunks(tags)) await trx.insertInto("tags").values(part).execute();
  });
  await meta.close();
  berth = await startBerth({ dataDir, env: { REGISTRY_UI_USAGEINTERVAL: "2s" } });
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

    // The registry-wide totals come from the usage job: wait for its first run, then time the request.
    await usageAfter(c, "/api/v1/usage?limit=1", 1);
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
