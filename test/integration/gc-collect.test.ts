/**
 * Garbage collection against a running Berth, driven over HTTP and through the CLI: shared layers,
 * dry run, storage usage, `berth repo rm`, and the scheduled jobs (collection and upload purging).
 */
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import {
  berth,
  berthJson,
  blob,
  blobStatus,
  bytes,
  catalog,
  deleteManifest,
  getManifest,
  type Image,
  image,
  listTags,
  pullImage,
  pushBlob,
  pushImage,
  sleep,
  waitFor,
  writeConfig,
} from "./gc-helpers.js";

interface GcJson {
  dryRun: boolean;
  blobs: { digest: string; size: number }[];
  blobBytes: number;
  manifests: { repository: string; digest: string }[];
  links: number;
  uploads: { id: string }[];
}

interface UsageJson {
  total: { bytes: number; blobs: number };
  shared: { bytes: number; blobs: number };
  unlinked: { bytes: number; blobs: number };
  repositories: { name: string; bytes: number; blobs: number; unique: number; shared: number }[];
}

function blobFile(dataDir: string, digest: string): string {
  const hex = digest.slice("sha256:".length);
  return path.join(dataDir, "docker", "registry", "v2", "blobs", "sha256", hex.slice(0, 2), hex, "data");
}

const sum = (blobs: { size: number }[]) => blobs.reduce((n, b) => n + b.size, 0);
const digests = (list: { digest: string }[]) => list.map((b) => b.digest).sort();

describe("collection on demand", () => {
  let server: Berth;
  let dir: string;
  let cli: string[];
  const base1 = blob(bytes("base-1", 40_000));
  const base2 = blob(bytes("base-2", 30_000));
  const ownA = blob(bytes("own-a", 20_000));
  const ownB = blob(bytes("own-b", 10_000));
  let a: Image;
  let b: Image;
  let c: Image;

  beforeAll(async () => {
    dir = tempDir("berth-gc-it-");
    // Scheduled jobs off: this suite runs every collection itself.
    const config = writeConfig(dir, [
      "gc:",
      "  enabled: false",
      "storage:",
      "  delete:",
      "    enabled: true",
      "  maintenance:",
      "    uploadpurging:",
      "      enabled: false",
    ]);
    mkdirSync(path.join(dir, "data"));
    server = await startBerth({ args: ["-c", config], dataDir: path.join(dir, "data") });
    cli = ["-c", config, "--data-dir", server.dataDir];
    a = image("a", [base1, base2, ownA]);
    b = image("b", [base1, base2, ownB]);
    c = image("c", [base1]);
    await pushImage(server.url, "team/a", "v1", a);
    await pushImage(server.url, "team/b", "v1", b);
    await pushImage(server.url, "other/c", "latest", c);
  });

  afterAll(async () => {
    await server?.cleanup();
    const { rmSync } = await import("node:fs");
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("usage matches the sizes of the pushed blobs: total, per repository, unique and shared", async () => {
    const usage = await berthJson<UsageJson>(["usage", ...cli]);
    const all = new Map<string, number>();
    for (const img of [a, b, c]) for (const x of img.blobs) all.set(x.digest, x.size);
    expect(usage.total).toEqual({ bytes: [...all.values()].reduce((x, y) => x + y, 0), blobs: all.size });
    expect(usage.shared).toEqual({ bytes: base1.size + base2.size, blobs: 2 });
    expect(usage.unlinked).toEqual({ bytes: 0, blobs: 0 });
    const byName = Object.fromEntries(usage.repositories.map((r) => [r.name, r]));
    expect(byName["team/a"]).toEqual({
      name: "team/a",
      bytes: sum(a.blobs),
      blobs: 5,
      unique: sum(a.blobs) - base1.size - base2.size,
      shared: base1.size + base2.size,
      repositoryId: expect.any(Number),
    });
    expect(byName["team/b"]?.unique).toBe(sum(b.blobs) - base1.size - base2.size);
    expect(byName["other/c"]).toMatchObject({
      bytes: sum(c.blobs),
      unique: sum(c.blobs) - base1.size,
      shared: base1.size,
    });

    const one = await berthJson<{ name: string; bytes: number }>(["usage", ...cli, "--repository", "team/a"]);
    expect(one.bytes).toBe(sum(a.blobs));
    const text = await berth(["usage", ...cli]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/REPOSITORY\s+SIZE\s+UNIQUE\s+SHARED\s+BLOBS/);
    expect(text.stdout).toMatch(/^team\/a\s/m);
  });

  test("the storage gauges report the same figures on /metrics", async () => {
    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    const body = await res.text();
    const usage = await berthJson<UsageJson>(["usage", ...cli]);
    const gauge = (re: RegExp) => Number(re.exec(body)?.[1]);
    expect(gauge(/^berth_storage_bytes\{kind="total"\} (\d+)/m)).toBe(usage.total.bytes);
    expect(gauge(/^berth_repository_storage_bytes\{repository="team\/a",kind="unique"\} (\d+)/m)).toBe(
      usage.repositories.find((r) => r.name === "team/a")?.unique,
    );
  });

  test("delete A, collect: exactly A's own blobs go, and B still pulls byte for byte", async () => {
    expect(await deleteManifest(server.url, "team/a", a.digest)).toBe(202);
    const own = [ownA, a.config, a.blobs[a.blobs.length - 1]!];

    const dry = await berthJson<GcJson>(["gc", ...cli, "--dry-run", "--grace-period", "0s"]);
    expect(dry.dryRun).toBe(true);
    expect(digests(dry.blobs)).toEqual(digests(own));
    expect(dry.blobBytes).toBe(sum(own));
    for (const x of own) expect(existsSync(blobFile(server.dataDir, x.digest))).toBe(true);
    const listing = await berth(["gc", ...cli, "--dry-run", "--grace-period", "0s"]);
    // Issue 22: decimal units, as the web UI shows them.
    expect(listing.stdout).toContain(`would remove 3 blobs, ${(sum(own) / 1000).toPrecision(3)} kB:`);
    expect(listing.stdout).toContain(ownA.digest);

    // The default grace period (1h) protects everything that was just pushed.
    const protectedRun = await berthJson<GcJson>(["gc", ...cli]);
    expect(protectedRun.blobs).toEqual([]);

    const report = await berthJson<GcJson>(["gc", ...cli, "--grace-period", "0s"]);
    expect(digests(report.blobs)).toEqual(digests(own));
    expect(report.links).toBe(2); // team/a's links to the shared base layers
    for (const x of own) expect(existsSync(blobFile(server.dataDir, x.digest))).toBe(false);
    for (const x of b.blobs) expect(existsSync(blobFile(server.dataDir, x.digest))).toBe(true);
    expect(await blobStatus(server.url, "team/a", ownA.digest)).toBe(404);
    expect(await blobStatus(server.url, "team/a", base1.digest)).toBe(404);

    const pulled = await pullImage(server.url, "team/b", "v1");
    expect(pulled.digest).toBe(b.digest);
    expect(pulled.manifest.equals(b.manifest)).toBe(true);
    expect((await pullImage(server.url, "other/c", "latest")).digest).toBe(c.digest);

    const usage = await berthJson<UsageJson>(["usage", ...cli]);
    expect(usage.repositories.find((r) => r.name === "team/a")?.bytes ?? 0).toBe(0);
    expect(usage.total.bytes).toBe(sum(b.blobs) + sum(c.blobs) - base1.size);

    // Pushing A again works: its blobs are uploaded anew.
    await pushImage(server.url, "team/a", "v1", a);
    expect((await pullImage(server.url, "team/a", "v1")).digest).toBe(a.digest);
  });

  test("berth repo rm leaves no trace in the catalog; its unique blobs go at the next collection", async () => {
    const rm = await berth(["repo", "rm", "team/b", ...cli]);
    expect(rm.code).toBe(0);
    expect(rm.stdout).toMatch(/removed repository team\/b: 1 tag, 1 manifest/);
    expect(await catalog(server.url)).not.toContain("team/b");
    expect(await listTags(server.url, "team/b")).toEqual([]);
    expect((await getManifest(server.url, "team/b", "v1")).status).toBe(404);
    const again = await berth(["repo", "rm", "team/b", ...cli]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/not found/);

    const report = await berthJson<GcJson>(["gc", ...cli, "--grace-period", "0s"]);
    expect(digests(report.blobs)).toEqual(digests([ownB, b.config, b.blobs[b.blobs.length - 1]!]));
    const usage = await berthJson<UsageJson>(["usage", ...cli]);
    expect(usage.repositories.map((r) => r.name)).not.toContain("team/b");
    expect((await pullImage(server.url, "team/a", "v1")).digest).toBe(a.digest);
  });

  test("untagged manifests go with --untagged, and a dry run says so first", async () => {
    const loose = image("loose", [blob(bytes("loose-layer", 5000))]);
    await pushImage(server.url, "other/c", loose.digest, loose);
    const without = await berthJson<GcJson>(["gc", ...cli, "--grace-period", "0s", "--dry-run"]);
    expect(without.manifests).toEqual([]);
    // gc.untagged.olderthan (24h by default) protects it...
    const young = await berthJson<GcJson>(["gc", ...cli, "--grace-period", "0s", "--dry-run", "--untagged"]);
    expect(young.manifests).toEqual([]);
    // ...unless configured shorter.
    const env = { REGISTRY_GC_UNTAGGED_OLDERTHAN: "0s" };
    const dry = await berthJson<GcJson>(
      ["gc", ...cli, "--grace-period", "0s", "--dry-run", "--untagged"],
      env,
    );
    expect(dry.manifests.map((m) => m.digest)).toEqual([loose.digest]);
    expect(digests(dry.blobs)).toEqual(digests(loose.blobs));
    expect((await getManifest(server.url, "other/c", loose.digest)).status).toBe(200);
    const report = await berthJson<GcJson>(["gc", ...cli, "--grace-period", "0s", "--untagged"], env);
    expect(report.manifests.map((m) => m.digest)).toEqual([loose.digest]);
    expect(digests(report.blobs)).toEqual(digests(loose.blobs));
    expect((await getManifest(server.url, "other/c", loose.digest)).status).toBe(404);
    expect((await pullImage(server.url, "other/c", "latest")).digest).toBe(c.digest);
  });
});

describe("scheduled jobs", () => {
  let server: Berth;
  let dir: string;

  beforeAll(async () => {
    dir = tempDir("berth-gc-sched-");
    const config = writeConfig(dir, [
      "gc:",
      "  interval: 1s",
      "  graceperiod: 3s",
      "storage:",
      "  delete:",
      "    enabled: true",
      "  maintenance:",
      "    uploadpurging:",
      "      age: 2s",
      "      interval: 1s",
    ]);
    mkdirSync(path.join(dir, "data"));
    server = await startBerth({ args: ["-c", config], dataDir: path.join(dir, "data"), workers: 2 });
  });

  afterAll(async () => {
    await server?.cleanup();
    const { rmSync } = await import("node:fs");
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("garbage goes on its own after the grace period; fresh uploads and tagged images stay", async () => {
    const keep = image("keep", [blob(bytes("keep-layer", 3000))]);
    const drop = image("drop", [blob(bytes("drop-layer", 3000))]);
    await pushImage(server.url, "sched/app", "keep", keep);
    await pushImage(server.url, "sched/app", "drop", drop);
    expect(await deleteManifest(server.url, "sched/app", drop.digest)).toBe(202);
    // An upload whose manifest has not come yet: younger than the grace period, it must survive.
    const pending = blob(bytes("pending-layer", 3000));
    await sleep(1500);
    await pushBlob(server.url, "sched/app", pending);
    await waitFor(
      "the scheduled collection",
      async () => !existsSync(blobFile(server.dataDir, drop.layers[0]!.digest)),
      20_000,
    );
    expect(await blobStatus(server.url, "sched/app", pending.digest)).toBe(200);
    const late = image("late", [pending]);
    await pushImage(server.url, "sched/app", "late", late, { headFirst: true });
    expect((await pullImage(server.url, "sched/app", "late")).digest).toBe(late.digest);
    expect((await pullImage(server.url, "sched/app", "keep")).digest).toBe(keep.digest);
    const log = server.logs.filter((l) => l.includes("gc: collection finished"));
    expect(log.length).toBeGreaterThan(0);
  });

  test("abandoned uploads are purged after storage.maintenance.uploadpurging.age", async () => {
    const res = await fetch(`${server.url}/v2/sched/app/blobs/uploads/`, { method: "POST" });
    expect(res.status).toBe(202);
    const location = new URL(res.headers.get("location")!, server.url).toString();
    await res.arrayBuffer();
    const patch = await fetch(location, {
      method: "PATCH",
      headers: { "content-type": "application/octet-stream" },
      body: Buffer.alloc(100, 7),
    });
    expect(patch.status).toBe(202);
    await patch.arrayBuffer();
    const id = location.split("/").pop()!.split("?")[0]!;
    const file = path.join(server.dataDir, "berth", "uploads", id);
    expect(existsSync(file)).toBe(true);
    await waitFor("the upload to be purged", async () => !existsSync(file), 20_000);
    const status = await fetch(location);
    expect(status.status).toBe(404);
    await status.arrayBuffer();
  });
});
