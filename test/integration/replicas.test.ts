/**
 * Two `berth serve` processes on one metadata database and one blob directory, as replicas behind a
 * load balancer: whatever one writes, the other serves. On SQLite they share the file (one machine);
 * in the `postgres` project they share a PostgreSQL database (test/helpers/server.ts gives both the
 * database of their common data directory).
 */
import crypto from "node:crypto";
import fs, { rmSync } from "node:fs";
import path from "node:path";
import * as jose from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sqlitePath } from "../../src/metadata/target.js";
import { openTestDb } from "../helpers/metadata-db.js";
import { RegistryClient, randomBlob } from "../helpers/registry.js";
import { type Berth, databaseEnv, startBerth, TEST_DB, tempDir } from "../helpers/server.js";
import { basic, htpasswdText } from "./auth-fixtures.js";
import { sleep, writeConfig } from "./gc-helpers.js";
import {
  expectCleanLogs,
  expectNothingMissingNoGarbage,
  expectTaggedImagesWhole,
  filesystemBlobs,
  runStressWorkload,
} from "./gc-stress-workload.js";

/**
 * Points the replica on `other` at the metadata database of `first` while each keeps a data directory of
 * its own (as replicas on S3 do): on PostgreSQL the first's database URL, on SQLite a link to its file.
 */
async function shareDatabase(first: string, other: string): Promise<Record<string, string>> {
  if (TEST_DB === "postgres") return databaseEnv(first);
  fs.mkdirSync(path.dirname(sqlitePath(other)), { recursive: true });
  fs.mkdirSync(path.dirname(sqlitePath(first)), { recursive: true });
  fs.symlinkSync(sqlitePath(first), sqlitePath(other));
  return {};
}

/** A configuration in which Berth issues tokens with a key of its own making (no auth.token.signingkey). */
function tokenConfig(dir: string): string {
  const htpasswd = path.join(dir, "htpasswd");
  fs.writeFileSync(htpasswd, htpasswdText({ dev: "dev-pw" }));
  const file = path.join(dir, "config.yml");
  fs.writeFileSync(
    file,
    [
      "auth:",
      "  htpasswd:",
      `    path: ${htpasswd}`,
      "  token:",
      "    service: rep-registry",
      "    issuer: rep-issuer",
      "  throttle:",
      "    enabled: false",
      "  access:",
      '    rules: [{ repository: "dev/*", users: [dev], actions: [pull, push] }]',
      "",
    ].join("\n"),
  );
  return file;
}

describe("replicas with data directories of their own share the token signing key through the database", () => {
  const dirs: string[] = [];
  const servers: Berth[] = [];
  afterAll(async () => {
    for (const s of servers) await s.cleanup();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  async function token(berth: Berth): Promise<string> {
    const res = await fetch(
      `${berth.url}/auth/token?service=rep-registry&scope=repository:dev/app:pull,push`,
      {
        headers: { authorization: basic("dev", "dev-pw") },
      },
    );
    expect(res.status).toBe(200);
    return ((await res.json()) as { token: string }).token;
  }
  const tagsWith = (berth: Berth, t: string) =>
    fetch(`${berth.url}/v2/dev/app/tags/list`, { headers: { authorization: `Bearer ${t}` } });

  it("accepts on B a token issued by A, and keeps valid a token signed with the key an older Berth left in A's data directory", async () => {
    const first = tempDir("berth-rep-key-a-");
    const second = tempDir("berth-rep-key-b-");
    const third = tempDir("berth-rep-key-c-");
    dirs.push(first, second, third);
    const config = tokenConfig(third);
    // The key an older Berth generated in A's data directory, and a token it issued (still unexpired).
    const legacy = path.join(first, "berth", "token-key.pem");
    fs.mkdirSync(path.dirname(legacy), { recursive: true });
    const { privateKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    fs.writeFileSync(legacy, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    const now = Math.floor(Date.now() / 1000);
    const old = await new jose.SignJWT({
      iss: "rep-issuer",
      sub: "dev",
      aud: "rep-registry",
      iat: now,
      nbf: now,
      exp: now + 300,
      access: [{ type: "repository", name: "dev/app", actions: ["pull", "push"] }],
    })
      .setProtectedHeader({ alg: "ES256", typ: "JWT" })
      .sign(privateKey);
    const env = await shareDatabase(first, second);
    const a = await startBerth({ dataDir: first, args: ["--config", config] });
    servers.push(a);
    const b = await startBerth({ dataDir: second, args: ["--config", config], env });
    servers.push(b);
    expect(fs.existsSync(path.join(second, "berth", "token-key.pem"))).toBe(false);
    // Seed the repository so that listing tags answers 200.
    await new RegistryClient(a.url, { authorization: `Bearer ${await token(a)}` }).pushImage("dev/app", "v1");
    const fromA = await token(a);
    const fromB = await token(b);
    for (const t of [fromA, fromB, old]) {
      expect((await tagsWith(a, t)).status).toBe(200);
      expect((await tagsWith(b, t)).status).toBe(200);
    }
    // The control: a token signed with any other key is refused by both.
    const stranger = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const forged = await new jose.SignJWT(jose.decodeJwt(fromA))
      .setProtectedHeader({ alg: "ES256", typ: "JWT" })
      .sign(stranger);
    expect((await tagsWith(a, forged)).status).toBe(401);
    expect((await tagsWith(b, forged)).status).toBe(401);
  });
});

describe("two replicas on one database and one blob directory", () => {
  let dir: string;
  let one: Berth;
  let two: Berth;
  let a: RegistryClient;
  let b: RegistryClient;

  beforeAll(async () => {
    dir = tempDir("berth-replicas-");
    one = await startBerth({ dataDir: dir, env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
    two = await startBerth({ dataDir: dir, env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
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

describe("what a replica keeps in memory cannot go stale, and jobs run once across replicas", () => {
  let dir: string;
  let htpasswd: string;
  let one: Berth;
  let two: Berth;
  const INTERVAL_MS = 1000;

  beforeAll(async () => {
    dir = tempDir("berth-replicas-jobs-");
    htpasswd = path.join(dir, "htpasswd");
    fs.writeFileSync(htpasswd, htpasswdText({ dev: "first-pw", gone: "gone-pw" }));
    const config = path.join(dir, "config.yml");
    fs.writeFileSync(
      config,
      [
        "auth:",
        "  htpasswd:",
        `    path: ${htpasswd}`,
        "  throttle:",
        "    enabled: false",
        "gc:",
        `  interval: ${INTERVAL_MS}ms`,
        "storage:",
        "  delete:",
        "    enabled: true",
        "",
      ].join("\n"),
    );
    const data = path.join(dir, "data");
    fs.mkdirSync(data);
    one = await startBerth({ dataDir: data, args: ["-c", config] });
    two = await startBerth({ dataDir: data, args: ["-c", config] });
  });
  afterAll(async () => {
    await one?.cleanup();
    await two?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const finishedRuns = (berth: Berth, replica: number) =>
    berth.logs
      .filter((l) => l.includes('"gc: collection finished"'))
      .map((l) => ({ replica, time: (JSON.parse(l) as { time: number }).time }));

  it("runs a scheduled job once per interval across both replicas, not once per replica", async () => {
    const from = Date.now();
    await new Promise((r) => setTimeout(r, 8 * INTERVAL_MS));
    const runs = [...finishedRuns(one, 0), ...finishedRuns(two, 1)]
      .filter((r) => r.time >= from)
      .sort((a, b) => a.time - b.time);
    // Every run rests for the interval after it ends before any replica starts the next.
    expect(runs.length).toBeGreaterThanOrEqual(3);
    expect(runs.length).toBeLessThanOrEqual(9);
    for (let i = 1; i < runs.length; i++) {
      expect(runs[i]!.time - runs[i - 1]!.time, `runs ${i - 1} and ${i}`).toBeGreaterThanOrEqual(
        INTERVAL_MS - 20,
      );
    }
  });

  it("shows through B at once a tag moved, and a blob deleted, through A", async () => {
    const auth = basic("dev", "first-pw");
    const a = new RegistryClient(one.url, { authorization: auth });
    const b = new RegistryClient(two.url, { authorization: auth });
    const images = [await a.pushImage("replicas/moving", "x1"), await a.pushImage("replicas/moving", "x2")];
    const accept = { accept: "application/vnd.oci.image.manifest.v1+json" };
    for (let round = 0; round < 6; round++) {
      const image = images[round % 2]!;
      expect((await a.putManifest("replicas/moving", "latest", image.manifest)).status).toBe(201);
      // Read twice through B: the second read may come from whatever B keeps; both must be current.
      for (let k = 0; k < 2; k++) {
        const res = await b.fetch("/v2/replicas/moving/manifests/latest", { headers: accept });
        expect(res.status).toBe(200);
        expect(res.headers.get("docker-content-digest"), JSON.stringify([...res.headers])).toBe(image.digest);
      }
    }
    const layer = images[0]!.layers[0]!.digest;
    expect((await b.fetch(`/v2/replicas/moving/blobs/${layer}`, { method: "HEAD" })).status).toBe(200);
    expect((await a.fetch(`/v2/replicas/moving/blobs/${layer}`, { method: "DELETE" })).status).toBe(202);
    expect((await b.fetch(`/v2/replicas/moving/blobs/${layer}`, { method: "HEAD" })).status).toBe(404);
  });

  it("follows a change of the shared htpasswd file on both replicas, old passwords refused", async () => {
    const ping = (berth: Berth, user: string, pw: string) =>
      fetch(`${berth.url}/v2/`, { headers: { authorization: basic(user, pw) } }).then((r) => r.status);
    for (const s of [one, two]) {
      expect(await ping(s, "dev", "first-pw")).toBe(200);
      expect(await ping(s, "gone", "gone-pw")).toBe(200);
    }
    // Written as `berth user add` and htpasswd do: a new file renamed over the old one.
    const next = `${htpasswd}.new`;
    fs.writeFileSync(next, htpasswdText({ dev: "second-pw" }));
    fs.renameSync(next, htpasswd);
    const changed = Date.now();
    for (const s of [one, two]) {
      for (;;) {
        const [oldPw, removed, newPw] = [
          await ping(s, "dev", "first-pw"),
          await ping(s, "gone", "gone-pw"),
          await ping(s, "dev", "second-pw"),
        ];
        if (oldPw === 401 && removed === 401 && newPw === 200) break;
        expect(Date.now() - changed, "the change is seen within 5 s").toBeLessThan(5000);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  });
});

describe("a collection on one replica while the other takes pushes and pulls (one blob directory)", () => {
  const SECONDS = Number(process.env.GC_STRESS_SECONDS ?? 15);
  const GRACE = "6s";
  let dir: string;
  let collector: Berth;
  let serving: Berth;

  beforeAll(async () => {
    dir = tempDir("berth-replicas-gc-");
    const data = path.join(dir, "data");
    fs.mkdirSync(data);
    const common = [
      "  batchsize: 20",
      "  pause: 5ms",
      "  untagged:",
      "    enabled: true",
      `    olderthan: ${GRACE}`,
      "storage:",
      "  delete:",
      "    enabled: true",
    ];
    for (const sub of ["collector", "serving"]) fs.mkdirSync(path.join(dir, sub));
    const withGc = writeConfig(path.join(dir, "collector"), [
      "gc:",
      "  interval: 500ms",
      `  graceperiod: ${GRACE}`,
      ...common,
    ]);
    const without = writeConfig(path.join(dir, "serving"), [
      "gc:",
      "  enabled: false",
      `  graceperiod: ${GRACE}`,
      ...common,
    ]);
    collector = await startBerth({ dataDir: data, args: ["-c", withGc] });
    serving = await startBerth({ dataDir: data, args: ["-c", without] });
  });
  afterAll(async () => {
    await collector?.cleanup();
    await serving?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`loses nothing (${SECONDS}s of the gc stress workload)`, async () => {
    const result = await runStressWorkload({ urls: [serving.url], seconds: SECONDS });
    await sleep(6500); // garbage left by the clients passes the grace period; the collector takes it
    const tagged = await expectTaggedImagesWhole(collector.url, result);
    const db = await openTestDb(collector.dataDir);
    try {
      await new Promise((r) => setTimeout(r, 1500)); // one more scheduled collection after the grace period
      const files = filesystemBlobs(collector.dataDir);
      await expectNothingMissingNoGarbage(db, files.storedSize, files.storedCount);
    } finally {
      await db.close();
    }
    expect(result.failures).toEqual([]);
    expect(result.headRaces).toEqual([]);
    const onCollector = expectCleanLogs(collector.logs);
    const onServing = expectCleanLogs(serving.logs);
    console.log(
      `replicas (one blob directory) gc stress: ${SECONDS}s, ${JSON.stringify(result.counts)}, ${onCollector.runs} collections removed ${onCollector.blobs} blobs and ${onCollector.manifests} manifests; ${tagged} tags at the end`,
    );
    expect(onServing.runs).toBe(0);
    expect(onCollector.runs).toBeGreaterThan(3);
    expect(onCollector.blobs).toBeGreaterThan(0);
    expect(result.counts.pushes).toBeGreaterThanOrEqual(5);
    expect(result.counts.pulls).toBeGreaterThanOrEqual(10);
  });
});
