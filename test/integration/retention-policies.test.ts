/**
 * Retention policies against a running Berth: every rule (keeplast, keeptags, olderthan,
 * keeppulledwithin, and a combination), first as a dry run that must say what it would remove and
 * why, then for real, which must remove exactly that; then the scheduled run.
 */
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { openTestDb } from "../helpers/metadata-db.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import {
  berth,
  berthJson,
  blob,
  bytes,
  getManifest,
  type Image,
  image,
  listTags,
  OCI_INDEX,
  pullImage,
  pushImage,
  putManifest,
  sha256,
  sleep,
  waitFor,
  writeConfig,
} from "./gc-helpers.js";

interface RetentionJson {
  dryRun: boolean;
  repositories: {
    repository: string;
    policy: string;
    tags: { tag: string; digest: string; reason: string }[];
    manifests: { digest: string; reason: string }[];
  }[];
  tagsRemoved: number;
  manifestsRemoved: number;
}

/** Age threshold of the time-based rules: long enough for a dry run and a real run to agree. */
const WINDOW = 6;

const POLICIES = [
  "retention:",
  "  enabled: false",
  "  policies:",
  '    - repositories: "keep/last"',
  "      keeplast: 2",
  '    - repositories: "keep/tags"',
  '      keeptags: ["v\\\\d+\\\\.\\\\d+\\\\.\\\\d+", "latest"]',
  '    - repositories: "keep/older"',
  `      olderthan: ${WINDOW}s`,
  '    - repositories: "keep/pulled"',
  `      keeppulledwithin: ${WINDOW}s`,
  '    - repositories: ["combo/*"]',
  "      keeplast: 1",
  '      keeptags: ["release-.*"]',
  `      olderthan: ${WINDOW}s`,
];

let server: Berth;
let dir: string;
let config: string;
let cli: string[];

const img = (seed: string): Image =>
  image(seed, [blob(bytes(`layer-${seed}`, 1000)), blob(bytes("common-base", 5000))]);
const images: Record<string, Image> = {};
const indexDigest: Record<string, string> = {};
let signature: Image;

async function tag(repo: string, name: string, seed: string): Promise<void> {
  images[seed] ??= img(seed);
  await pushImage(server.url, repo, name, images[seed]!);
  await sleep(15); // distinct push times, so "most recent" is well defined
}

beforeAll(async () => {
  dir = tempDir("berth-retention-it-");
  config = writeConfig(dir, ["gc:", "  enabled: false", "  graceperiod: 0s", ...POLICIES]);
  mkdirSync(path.join(dir, "data"));
  server = await startBerth({ args: ["-c", config], dataDir: path.join(dir, "data") });
  cli = ["-c", config, "--data-dir", server.dataDir];

  // Old pushes.
  await tag("keep/last", "a", "one");
  await tag("keep/last", "b", "two");
  signature = image("sig-of-two", [blob(bytes("sig", 100))], {
    artifactType: "application/vnd.example.signature",
    subject: {
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: images.two!.digest,
      size: images.two!.manifest.length,
    },
  });
  await pushImage(server.url, "keep/last", signature.digest, signature);
  await tag("keep/last", "c", "three");
  await tag("keep/last", "d", "one"); // "one" again: it stays tagged through d

  for (const [name, seed] of [
    ["v1.0.0", "rel-1"],
    ["v1.2.3", "rel-2"],
    ["latest", "rel-2"],
    ["v1.0.0-rc1", "rc"],
  ]) {
    await tag("keep/tags", name as string, seed as string);
  }
  // "dev" is an index: its children go with it.
  const children = [img("dev-amd64"), img("dev-arm64")];
  for (const c of children) await pushImage(server.url, "keep/tags", c.digest, c);
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: children.map((c, i) => ({
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        digest: c.digest,
        size: c.manifest.length,
        platform: { architecture: i ? "arm64" : "amd64", os: "linux" },
      })),
    }),
  );
  indexDigest.dev = await putManifest(server.url, "keep/tags", "dev", index, OCI_INDEX);
  indexDigest.devChildren = children.map((c) => c.digest).join(",");

  await tag("keep/older", "old-1", "older-1");
  await tag("keep/older", "old-2", "older-2");
  await tag("keep/pulled", "p1", "pulled-1");
  await tag("keep/pulled", "p2", "pulled-2");
  await tag("keep/pulled", "p3", "pulled-3");
  await tag("combo/app", "release-1", "combo-rel-1");
  await tag("combo/app", "dev-1", "combo-dev-1");
  await tag("combo/app", "dev-2", "combo-dev-2");

  await sleep(WINDOW * 1000 + 500);

  // Recent pushes and pulls.
  await tag("keep/older", "new-1", "older-3");
  await tag("combo/app", "dev-3", "combo-dev-3");
  await tag("combo/app", "dev-4", "combo-dev-4");
  await pullImage(server.url, "keep/pulled", "p2");
  // Pull times are written in batches, about a second after the pull: wait until this one is recorded.
  const db = await openTestDb(server.dataDir);
  const pulledAt = () =>
    db.get<{ t: number | null }>(
      "select m.last_pulled_at as t from tags g join repositories r on r.id = g.repository_id join manifests m on m.repository_id = g.repository_id and m.digest = g.digest where r.name = ? and g.name = ?",
      "keep/pulled",
      "p2",
    );
  for (let i = 0; i < 50 && !(await pulledAt())?.t; i++) await sleep(100);
  await db.close();
});

afterAll(async () => {
  await server?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function byRepo(
  report: RetentionJson,
): Record<string, { tags: string[]; manifests: string[]; reasons: Record<string, string> }> {
  const out: Record<string, { tags: string[]; manifests: string[]; reasons: Record<string, string> }> = {};
  for (const r of report.repositories) {
    out[r.repository] = {
      tags: r.tags.map((t) => t.tag).sort(),
      manifests: r.manifests.map((m) => m.digest).sort(),
      reasons: Object.fromEntries([
        ...r.tags.map((t) => [t.tag, t.reason]),
        ...r.manifests.map((m) => [m.digest, m.reason]),
      ]),
    };
  }
  return out;
}

const EXPECTED_TAGS = {
  "keep/last": ["a", "b"],
  "keep/tags": ["dev", "v1.0.0-rc1"],
  "keep/older": ["old-1", "old-2"],
  "keep/pulled": ["p1", "p3"],
  "combo/app": ["dev-1", "dev-2"],
};

describe("retention", () => {
  let dry: RetentionJson;

  test("dry run: every rule says what it would remove and why, and removes nothing", async () => {
    dry = await berthJson<RetentionJson>(["retention", ...cli, "--dry-run"]);
    expect(dry.dryRun).toBe(true);
    const got = byRepo(dry);
    expect(Object.fromEntries(Object.entries(got).map(([k, v]) => [k, v.tags]))).toEqual(EXPECTED_TAGS);

    // keeplast 2: a and b go; "one" stays tagged through d, so only "two" goes, with its signature.
    expect(got["keep/last"]?.reasons.a).toBe("not among the 2 most recent");
    expect(got["keep/last"]?.manifests).toEqual([images.two!.digest, signature.digest].sort());
    expect(got["keep/last"]?.reasons[signature.digest]).toMatch(/referrer of/);
    // keeptags: the anchored semver expression keeps v1.0.0 and v1.2.3, not v1.0.0-rc1.
    expect(got["keep/tags"]?.reasons["v1.0.0-rc1"]).toBe("matches no keeptags");
    expect(got["keep/tags"]?.manifests).toEqual(
      [images.rc!.digest, indexDigest.dev!, ...indexDigest.devChildren!.split(",")].sort(),
    );
    expect(got["keep/tags"]?.reasons[indexDigest.devChildren!.split(",")[0]!]).toMatch(/child of index/);
    // olderthan: only the old ones.
    expect(got["keep/older"]?.reasons["old-1"]).toMatch(/^pushed \d+s ago, older than 6s$/);
    // keeppulledwithin: p2 was just pulled.
    expect(got["keep/pulled"]?.reasons.p1).toBe("never pulled");
    // combination: release-* kept, the most recent dev kept, dev-3 young, dev-1 and dev-2 old.
    expect(got["combo/app"]?.reasons["dev-1"]).toMatch(
      /matches no keeptags; not among the 1 most recent; pushed \d+s ago, older than 6s/,
    );

    for (const repo of Object.keys(EXPECTED_TAGS))
      expect((await listTags(server.url, repo)).length).toBeGreaterThan(0);
    expect(await listTags(server.url, "keep/last")).toEqual(["a", "b", "c", "d"]);

    const text = await berth(["retention", ...cli, "--dry-run"]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain("keep/last: policy 1 (keep/last: keeplast 2)");
    expect(text.stdout).toMatch(/would remove tag a \(sha256:[0-9a-f]{64}\): not among the 2 most recent/);
    expect(text.stdout).toContain("would remove 10 tags");
  });

  test("for real: exactly what the dry run listed goes; everything kept still pulls", async () => {
    const real = await berthJson<RetentionJson>(["retention", ...cli]);
    expect(real.dryRun).toBe(false);
    const got = byRepo(real);
    const want = byRepo(dry);
    for (const repo of Object.keys(EXPECTED_TAGS)) {
      expect(got[repo]?.tags, repo).toEqual(want[repo]?.tags);
      expect(got[repo]?.manifests, repo).toEqual(want[repo]?.manifests);
    }
    expect(await listTags(server.url, "keep/last")).toEqual(["c", "d"]);
    expect(await listTags(server.url, "keep/tags")).toEqual(["latest", "v1.0.0", "v1.2.3"]);
    expect(await listTags(server.url, "keep/older")).toEqual(["new-1"]);
    expect(await listTags(server.url, "keep/pulled")).toEqual(["p2"]);
    expect(await listTags(server.url, "combo/app")).toEqual(["dev-3", "dev-4", "release-1"]);

    expect((await getManifest(server.url, "keep/last", images.two!.digest)).status).toBe(404);
    expect((await getManifest(server.url, "keep/last", signature.digest)).status).toBe(404);
    expect((await getManifest(server.url, "keep/tags", indexDigest.dev!)).status).toBe(404);
    for (const [repo, name] of [
      ["keep/last", "c"],
      ["keep/last", "d"],
      ["keep/tags", "v1.0.0"],
      ["keep/tags", "latest"],
      ["keep/older", "new-1"],
      ["keep/pulled", "p2"],
      ["combo/app", "release-1"],
      ["combo/app", "dev-4"],
    ]) {
      await pullImage(server.url, repo!, name!);
    }

    // A second run finds nothing more; the blobs of what went are collected next.
    const again = await berthJson<RetentionJson>(["retention", ...cli, "--dry-run"]);
    expect(
      Object.fromEntries(again.repositories.map((r) => [r.repository, r.tags.map((t) => t.tag)])),
    ).not.toHaveProperty("keep/last");
    const gc = await berthJson<{ blobs: { digest: string }[] }>(["gc", ...cli]);
    const gone = new Set(gc.blobs.map((b) => b.digest));
    expect(gone.has(images.two!.layers[0]!.digest)).toBe(true);
    expect(gone.has(sha256(images.two!.manifest))).toBe(true);
    expect(gone.has(images.one!.layers[0]!.digest)).toBe(false);
    expect(gone.has(images.one!.layers[1]!.digest)).toBe(false); // the shared base layer
  });

  test("--repository limits the run to one repository", async () => {
    await tag("keep/last", "e", "five");
    await tag("keep/last", "f", "six");
    const one = await berthJson<RetentionJson>([
      "retention",
      ...cli,
      "--dry-run",
      "--repository",
      "keep/last",
    ]);
    expect(one.repositories.map((r) => r.repository)).toEqual(["keep/last"]);
    expect(one.repositories[0]?.tags.map((t) => t.tag).sort()).toEqual(["c", "d"]);
  });

  test("scheduled: the policies apply on their interval (and retention.dryrun only logs)", async () => {
    await server.stop();
    const scheduled = writeConfig(dir, [
      "gc:",
      "  enabled: false",
      "  graceperiod: 0s",
      ...POLICIES.map((l) => l.replace("enabled: false", "enabled: true")),
      "  interval: 1s",
      "  dryrun: true",
    ]);
    server = await startBerth({ args: ["-c", scheduled], dataDir: server.dataDir, port: server.port });
    await waitFor(
      "a dry-run retention pass in the log",
      async () => server.logs.some((l) => l.includes("retention (dry run): would remove")),
      20_000,
    );
    expect(await listTags(server.url, "keep/last")).toEqual(["c", "d", "e", "f"]);
    await server.stop();

    const real = writeConfig(dir, [
      "gc:",
      "  enabled: false",
      "  graceperiod: 0s",
      ...POLICIES.map((l) => l.replace("enabled: false", "enabled: true")),
      "  interval: 1s",
    ]);
    server = await startBerth({ args: ["-c", real], dataDir: server.dataDir, port: server.port });
    await waitFor(
      "the scheduled retention to remove c and d",
      async () => (await listTags(server.url, "keep/last")).join(",") === "e,f",
      20_000,
    );
    await pullImage(server.url, "keep/last", "f");
  });
});
