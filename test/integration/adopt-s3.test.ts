/**
 * Issue 20 with the real things: Distribution 2.8 (Debian's docker-registry) fills a Ceph radosgw bucket
 * through its s3 driver, with and without `rootdirectory`; Berth started on the same bucket with registry:2's
 * variables adopts it in place, a collection at once (grace period 0) deletes nothing of it, and a Berth whose
 * database is new beside a bucket it wrote refuses to collect. Runs on SQLite and on PostgreSQL.
 */
import { ListObjectsV2Command, PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDistribution } from "../e2e/clients/registry.js";
import { blobOf, DOCKER_MANIFEST, RegistryClient, randomBlob, sha256 } from "../helpers/registry.js";
import { client, registryS3Env, startS3, type TestS3 } from "../helpers/s3.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { berth as runBerth } from "./gc-helpers.js";

let s3: TestS3;
let admin: S3Client;
const servers: Berth[] = [];
const MiB = 1024 * 1024;

beforeAll(async () => {
  s3 = await startS3();
  admin = client(s3);
}, 180_000);

afterAll(async () => {
  for (const b of servers) await b.cleanup().catch(() => {});
  admin?.destroy();
  await s3?.stop();
});

function s3Env(bucket: string, rootdirectory?: string): Record<string, string> {
  return registryS3Env(s3, bucket, {
    REGISTRY_STORAGE_S3_SECURE: "false",
    ...(rootdirectory ? { REGISTRY_STORAGE_S3_ROOTDIRECTORY: rootdirectory } : {}),
  });
}

async function keys(bucket: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let token: string | undefined;
  do {
    const page = await admin.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key) out.set(o.Key, o.Size ?? 0);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

/** Every key of `before` is still there with its size (new ones may have come). */
function expectAllKept(before: Map<string, number>, after: Map<string, number>): void {
  const lost = [...before].filter(([k, size]) => after.get(k) !== size).map(([k]) => k);
  expect(lost).toEqual([]);
}

interface Pushed {
  repository: string;
  tag: string;
  digest: string;
  blobs: string[];
}

/** Distribution 2.8 fills the bucket: small and multipart-sized layers, several repositories and tags. */
async function fillWithDistribution(bucket: string, rootdirectory?: string): Promise<Pushed[]> {
  const distribution = await startDistribution({
    s3: { endpoint: s3.endpoint, bucket, accessKey: s3.accessKey, secretKey: s3.secretKey, rootdirectory },
  });
  try {
    const client = new RegistryClient(distribution.url);
    const pushed: Pushed[] = [];
    const shared = randomBlob(64 * 1024);
    for (const [repository, tag, layers] of [
      ["library/app", "v1", [shared, randomBlob(6 * MiB)]],
      ["library/app", "v2", [shared, randomBlob(2048)]],
      ["team/x/tool", "latest", [shared]],
    ] as const) {
      // Distribution 2.8 has no single-POST upload: POST, then one PATCH, then PUT.
      const config = blobOf(JSON.stringify({ architecture: "amd64", os: "linux", tag }));
      for (const b of [config, ...layers]) await client.pushBlobChunked(repository, b, b.size);
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: DOCKER_MANIFEST,
          config: {
            mediaType: "application/vnd.docker.container.image.v1+json",
            digest: config.digest,
            size: config.size,
          },
          layers: layers.map((l) => ({
            mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip",
            digest: l.digest,
            size: l.size,
          })),
        }),
      );
      const res = await client.putManifest(repository, tag, manifest, DOCKER_MANIFEST);
      expect(res.status, await res.text()).toBe(201);
      pushed.push({
        repository,
        tag,
        digest: sha256(manifest),
        blobs: [config.digest, ...layers.map((l) => l.digest)],
      });
    }
    return pushed;
  } finally {
    await distribution.cleanup();
  }
}

async function serve(env: Record<string, string>, dataDir = tempDir()): Promise<Berth> {
  const berth = await startBerth({ env, dataDir, captureLogs: true });
  servers.push(berth);
  return berth;
}

async function expectServes(berth: Berth, pushed: Pushed[]): Promise<void> {
  const client = new RegistryClient(berth.url);
  const catalog = (await (await client.fetch("/v2/_catalog")).json()) as { repositories: string[] };
  expect(catalog.repositories).toEqual(expect.arrayContaining([...new Set(pushed.map((p) => p.repository))]));
  for (const p of pushed) {
    const res = await client.fetch(`/v2/${p.repository}/manifests/${p.tag}`, {
      headers: { accept: DOCKER_MANIFEST },
    });
    expect(res.status, `${p.repository}:${p.tag}`).toBe(200);
    expect(res.headers.get("docker-content-digest")).toBe(p.digest);
    await res.arrayBuffer();
    for (const digest of p.blobs) {
      const blob = await client.fetch(`/v2/${p.repository}/blobs/${digest}`);
      expect(blob.status, `${p.repository} ${digest}`).toBe(200);
      const { createHash } = await import("node:crypto");
      const got = `sha256:${createHash("sha256")
        .update(Buffer.from(await blob.arrayBuffer()))
        .digest("hex")}`;
      expect(got).toBe(digest);
    }
  }
}

describe.each([
  { label: "at the bucket's root", rootdirectory: undefined },
  { label: "under rootdirectory", rootdirectory: "/registry" },
])("a registry:2 bucket $label", ({ rootdirectory }) => {
  let bucket: string;
  let pushed: Pushed[];
  let before: Map<string, number>;

  beforeAll(async () => {
    bucket = await s3.bucket("adopt");
    pushed = await fillWithDistribution(bucket, rootdirectory);
    // Damage as registry:2 leaves it: a 0-byte tag link (a crash while writing it).
    const root = rootdirectory ? `${rootdirectory.replace(/^\//, "")}/` : "";
    await admin.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: `${root}docker/registry/v2/repositories/library/app/_manifests/tags/broken/current/link`,
        Body: "",
      }),
    );
    before = await keys(bucket);
  }, 300_000);

  it("a dry-run import lists every repository and the damage, and writes nothing", async () => {
    const dataDir = tempDir();
    const r = await runBerth(["import", "--dry-run", "--json", "--data-dir", dataDir], {
      env: s3Env(bucket, rootdirectory),
    });
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as {
      repositories: number;
      manifests: number;
      tags: number;
      problems: { kind: string }[];
    };
    expect(report.repositories).toBe(2);
    expect(report.manifests).toBe(3);
    expect(report.tags).toBe(3);
    expect(report.problems.map((p) => p.kind)).toEqual(["empty-link"]);
    expectAllKept(before, await keys(bucket));
  });

  it("a collection before adoption, at once, deletes nothing", async () => {
    const dataDir = tempDir();
    const r = await runBerth(["gc", "--grace-period", "0s", "--data-dir", dataDir], {
      env: s3Env(bucket, rootdirectory),
    });
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expectAllKept(before, await keys(bucket));
  });

  let dataDir: string;
  it("berth serve adopts it in place and serves every image; a collection at once deletes nothing of it", async () => {
    dataDir = tempDir();
    const berth = await serve(s3Env(bucket, rootdirectory), dataDir);
    expect(berth.logs.join("\n")).toContain("adopted 2 repositories, 3 manifests, 3 tags");
    await expectServes(berth, pushed);
    const gc = await runBerth(["gc", "--grace-period", "0s", "--untagged", "--data-dir", dataDir], {
      env: s3Env(bucket, rootdirectory),
    });
    expect(gc.code, gc.stderr + gc.stdout).toBe(0);
    expectAllKept(before, await keys(bucket));
    await expectServes(berth, pushed);
    await berth.stop();
  });

  it("goes back: registry:2 on the bucket serves what Berth pushed (a layer uploaded in parts too) and not what it deleted", async () => {
    const env = { ...s3Env(bucket, rootdirectory), REGISTRY_STORAGE_DELETE_ENABLED: "true" };
    const berth = await serve(env, dataDir);
    const client = new RegistryClient(berth.url);
    const big = randomBlob(11 * MiB);
    const small = randomBlob(3000);
    await client.pushBlobChunked("library/new", big, 5 * MiB);
    const image = await client.pushImage("library/new", "v1", {
      layers: [small],
      mediaType: DOCKER_MANIFEST,
    });
    // The image's manifest names the big layer too: push it again with both.
    const both = await client.pushImage("library/new", "v2", {
      layers: [big, small],
      mediaType: DOCKER_MANIFEST,
    });
    const gone = pushed.find((p) => p.tag === "v2") as Pushed;
    const del = await client.fetch(`/v2/${gone.repository}/manifests/${gone.digest}`, { method: "DELETE" });
    expect(del.status).toBe(202);
    await berth.stop();
    // What the background job does while the server runs, at once: copies to registry:2's keys.
    const moved = await runBerth(["relocate", "--retire-after", "0s", "--data-dir", dataDir], { env });
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stdout).toMatch(/copied \d+ blobs?/);
    // The big layer went in parts (its own key and a link): nothing is left where only Berth reads.
    const root = rootdirectory ? `${rootdirectory.replace(/^\//, "")}/` : "";
    const left = [...(await keys(bucket)).keys()].filter((k) => k.startsWith(`${root}berth/links/`));
    expect(left).toEqual([]);
    expect([...(await keys(bucket)).keys()]).toContain(
      `${root}docker/registry/v2/blobs/sha256/${big.digest.slice(7, 9)}/${big.digest.slice(7)}/data`,
    );

    const distribution = await startDistribution({
      s3: { endpoint: s3.endpoint, bucket, accessKey: s3.accessKey, secretKey: s3.secretKey, rootdirectory },
    });
    try {
      const back = new RegistryClient(distribution.url);
      const expectImage = async (repository: string, tag: string, digest: string, blobs: string[]) => {
        const res = await back.fetch(`/v2/${repository}/manifests/${tag}`, {
          headers: { accept: DOCKER_MANIFEST },
        });
        expect(res.status, `${repository}:${tag}`).toBe(200);
        expect(res.headers.get("docker-content-digest")).toBe(digest);
        await res.arrayBuffer();
        for (const d of blobs) {
          const b = await back.fetch(`/v2/${repository}/blobs/${d}`);
          expect(b.status, `${repository} ${d}`).toBe(200);
          expect(sha256(Buffer.from(await b.arrayBuffer()))).toBe(d);
        }
      };
      await expectImage("library/new", "v1", image.digest, [image.config.digest, small.digest]);
      await expectImage("library/new", "v2", both.digest, [both.config.digest, big.digest, small.digest]);
      for (const p of pushed.filter((p) => p !== gone))
        await expectImage(p.repository, p.tag, p.digest, p.blobs);
      const deleted = await back.fetch(`/v2/${gone.repository}/manifests/${gone.tag}`, {
        headers: { accept: DOCKER_MANIFEST },
      });
      expect(deleted.status).toBe(404);
    } finally {
      await distribution.cleanup();
    }
  });
});

describe("Berth's own bucket beside a new database", () => {
  it("refuses to collect files it has no rows for, and says what to run", async () => {
    const bucket = await s3.bucket("lost");
    const berth = await serve(s3Env(bucket));
    const client = new RegistryClient(berth.url);
    await client.pushImage("mine/app", "v1", { layers: [randomBlob(6 * MiB), randomBlob(1000)] });
    await berth.stop();
    const before = await keys(bucket);
    expect(before.size).toBeGreaterThan(3);
    const gc = await runBerth(["gc", "--grace-period", "0s", "--data-dir", tempDir()], {
      env: s3Env(bucket),
    });
    expect(gc.code, gc.stderr).toBe(0);
    expect(gc.stdout + gc.stderr).toContain("--i-know-the-store-is-mine");
    expectAllKept(before, await keys(bucket));
  });
});
