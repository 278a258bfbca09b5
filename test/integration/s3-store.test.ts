import { spawnSync } from "node:child_process";
import http from "node:http";
import { ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryClient, randomBlob } from "../helpers/registry.js";
import { registryS3Env, startS3, type TestS3 } from "../helpers/s3.js";
import { type Berth, CLI, freePort, startBerth, tempDir } from "../helpers/server.js";
import { berthJson, berth as runBerth } from "./gc-helpers.js";

/**
 * berth serve on the S3 store (a real Ceph radosgw): uploads that continue in another process from the
 * state kept in the bucket, redirects to presigned URLs, aborted uploads, and a store that is gone.
 */
let s3: TestS3;
let admin: S3Client;
const servers: Berth[] = [];
const MiB = 1024 * 1024;

function s3Env(bucket: string, extra: Record<string, string> = {}): Record<string, string> {
  return registryS3Env(s3, bucket, { REGISTRY_STORAGE_S3_ROOTDIRECTORY: "/reg", ...extra });
}

async function serve(env: Record<string, string>, dataDir?: string): Promise<Berth> {
  const berth = await startBerth({ env, dataDir });
  servers.push(berth);
  return berth;
}

beforeAll(async () => {
  s3 = await startS3();
  admin = new S3Client({
    region: s3.region,
    endpoint: s3.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey },
  });
}, 180_000);

afterAll(async () => {
  for (const b of servers) await b.cleanup().catch(() => {});
  admin?.destroy();
  await s3?.stop();
});

describe("berth serve on S3", () => {
  it("continues a chunked upload in a new process after kill -9, from the state in the bucket", async () => {
    const bucket = await s3.bucket("resume");
    const dataDir = tempDir();
    let berth = await serve(s3Env(bucket), dataDir);
    const blob = randomBlob(13 * MiB + 7);
    const sizes = [MiB + 1, 6 * MiB + 3];
    let client = new RegistryClient(berth.url);
    let res = await client.fetch("/v2/s3/resume/blobs/uploads/", { method: "POST" });
    expect(res.status).toBe(202);
    let location = new URL(res.headers.get("location")!, berth.url).pathname;
    let offset = 0;
    for (const size of sizes) {
      res = await client.fetch(location, {
        method: "PATCH",
        body: blob.data.subarray(offset, offset + size),
        headers: {
          "content-type": "application/octet-stream",
          "content-range": `${offset}-${offset + size - 1}`,
        },
      });
      expect(res.status).toBe(202);
      offset += size;
      location = new URL(res.headers.get("location")!, berth.url).pathname;
      // Another process takes every chunk: nothing of the upload may live in a process's memory.
      await berth.kill();
      berth = await serve(s3Env(bucket), dataDir);
      client = new RegistryClient(berth.url);
    }
    res = await client.fetch(`${location}?digest=${blob.digest}`, {
      method: "PUT",
      body: blob.data.subarray(offset),
      headers: { "content-type": "application/octet-stream" },
    });
    expect(res.status).toBe(201);
    const get = await client.fetch(`/v2/s3/resume/blobs/${blob.digest}`);
    expect(Buffer.from(await get.arrayBuffer()).equals(blob.data)).toBe(true);
    const ranged = await client.fetch(`/v2/s3/resume/blobs/${blob.digest}`, {
      headers: { range: "bytes=100-199" },
    });
    expect(ranged.status).toBe(206);
    expect(Buffer.from(await ranged.arrayBuffer()).equals(blob.data.subarray(100, 200))).toBe(true);
    // Under the root directory, where the multipart upload completed (never copied to Distribution's
    // key), with a link naming it; no upload left behind.
    const hex = blob.digest.slice(7);
    const listed = await admin.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "reg/" }));
    const keys = (listed.Contents ?? []).map((o) => o.Key);
    expect(keys.filter((k) => /^reg\/berth\/blobs\/[a-zA-Z0-9-]+\/data$/.test(k ?? ""))).toHaveLength(1);
    expect(keys).toContain(`reg/berth/links/sha256/${hex}`);
    expect(keys).not.toContain(`reg/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`);
    expect(keys.filter((k) => k?.startsWith("reg/berth/uploads/"))).toEqual([]);
    const mpus = await admin.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect(mpus.Uploads ?? []).toEqual([]);
  });

  it("continues an upload across processes with and without the native SHA-256 addon", async () => {
    // The saved hash state is one format for both implementations (src/registry/sha256.ts): a replica
    // without the addon (BERTH_NATIVE_SHA256=0: hash-wasm) continues what one with it began, and back.
    const bucket = await s3.bucket("hashes");
    const dataDir = tempDir();
    const blob = randomBlob(12 * MiB + 5);
    const sizes = [MiB + 63, 5 * MiB + 1, 3 * MiB + 64];
    let berth = await serve(s3Env(bucket), dataDir);
    let client = new RegistryClient(berth.url);
    let res = await client.fetch("/v2/s3/hashes/blobs/uploads/", { method: "POST" });
    let location = new URL(res.headers.get("location")!, berth.url).pathname;
    let offset = 0;
    for (const [i, size] of sizes.entries()) {
      res = await client.fetch(location, {
        method: "PATCH",
        body: blob.data.subarray(offset, offset + size),
        headers: {
          "content-type": "application/octet-stream",
          "content-range": `${offset}-${offset + size - 1}`,
        },
      });
      expect(res.status).toBe(202);
      offset += size;
      location = new URL(res.headers.get("location")!, berth.url).pathname;
      await berth.stop();
      berth = await serve({ ...s3Env(bucket), BERTH_NATIVE_SHA256: i % 2 === 0 ? "0" : "1" }, dataDir);
      client = new RegistryClient(berth.url);
    }
    res = await client.fetch(`${location}?digest=${blob.digest}`, {
      method: "PUT",
      body: blob.data.subarray(offset),
      headers: { "content-type": "application/octet-stream" },
    });
    expect(res.status).toBe(201);
    const get = await client.fetch(`/v2/s3/hashes/blobs/${blob.digest}`);
    expect(Buffer.from(await get.arrayBuffer()).equals(blob.data)).toBe(true);
  });

  it("aborts the multipart upload of a cancelled upload", async () => {
    const bucket = await s3.bucket("abort");
    const berth = await serve(s3Env(bucket));
    const client = new RegistryClient(berth.url);
    let res = await client.fetch("/v2/s3/abort/blobs/uploads/", { method: "POST" });
    const location = new URL(res.headers.get("location")!, berth.url).pathname;
    res = await client.fetch(location, {
      method: "PATCH",
      body: randomBlob(6 * MiB).data,
      headers: { "content-type": "application/octet-stream" },
    });
    expect(res.status).toBe(202);
    expect((await admin.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads?.length).toBe(1);
    res = await client.fetch(location, { method: "DELETE" });
    expect(res.status).toBe(204);
    expect((await admin.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).toEqual([]);
    const left = await admin.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "reg/berth/uploads/" }));
    expect(left.Contents ?? []).toEqual([]);
  });

  it("redirects blob GETs to a presigned URL with storage.redirect, and streams without it", async () => {
    const bucket = await s3.bucket("redirect");
    const dataDir = tempDir();
    const berth = await serve(s3Env(bucket, { REGISTRY_STORAGE_REDIRECT_DISABLE: "false" }), dataDir);
    const client = new RegistryClient(berth.url);
    const blob = randomBlob(100_000);
    await client.pushBlob("s3/redirect", blob);
    const res = await client.fetch(`/v2/s3/redirect/blobs/${blob.digest}`, { redirect: "manual" });
    expect(res.status).toBe(307);
    const location = res.headers.get("location")!;
    expect(location).toContain("X-Amz-Signature=");
    expect(location).toContain("X-Amz-Expires=300");
    const direct = await fetch(location);
    expect(Buffer.from(await direct.arrayBuffer()).equals(blob.data)).toBe(true);
    const head = await client.fetch(`/v2/s3/redirect/blobs/${blob.digest}`, { method: "HEAD" });
    expect(head.status).toBe(200);

    await berth.stop();
    const disabled = await serve(s3Env(bucket, { REGISTRY_STORAGE_REDIRECT_DISABLE: "true" }), dataDir);
    const streamed = await fetch(`${disabled.url}/v2/s3/redirect/blobs/${blob.digest}`, {
      redirect: "manual",
    });
    expect(streamed.status).toBe(200);
    expect(Buffer.from(await streamed.arrayBuffer()).equals(blob.data)).toBe(true);
  });

  it("answers 503 with Retry-After and logs the operation when the store is gone", async () => {
    const bucket = await s3.bucket("gone");
    const dead = `http://127.0.0.1:${await freePort()}`;
    const berth = await serve(s3Env(bucket, { REGISTRY_STORAGE_S3_REGIONENDPOINT: dead }));
    const client = new RegistryClient(berth.url);
    const res = await client.fetch("/v2/s3/gone/blobs/uploads/", { method: "POST" });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("5");
    const body = (await res.json()) as { errors: { code: string }[] };
    expect(body.errors[0]?.code).toBe("UNAVAILABLE");
    expect(await logged(berth, "blob store unavailable: s3 PutObject upload state")).toBe(true);
    expect(berth.logs.join("\n")).not.toContain("testsecret");
  });

  it("retries S3 throttling (503 SlowDown) with backoff, then answers 503 with Retry-After", async () => {
    const bucket = await s3.bucket("throttle");
    const throttle = await throttlingProxy(s3.endpoint);
    try {
      const berth = await serve(s3Env(bucket, { REGISTRY_STORAGE_S3_REGIONENDPOINT: throttle.url }));
      const client = new RegistryClient(berth.url);
      // Two throttled answers in a row: the retries absorb them, the push succeeds.
      throttle.slowDown(2);
      const blob = randomBlob(7 * MiB + 5);
      expect((await client.pushBlobChunked("s3/throttle", blob, 3 * MiB)).status).toBe(201);
      expect(throttle.throttledUploads()).toBe(2);
      // Throttled for good: a bounded number of attempts, then 503 to the client, never a 500.
      throttle.slowDown(1_000);
      const res = await client.fetch("/v2/s3/throttle/blobs/uploads/", { method: "POST" });
      expect(res.status).toBe(503);
      expect(res.headers.get("retry-after")).toBe("5");
      expect(throttle.throttledUploads()).toBe(4); // one S3 call (the upload's state), four attempts
      expect(await logged(berth, "blob store unavailable: s3 PutObject upload state")).toBe(true);
      throttle.slowDown(0);
      const get = await client.fetch(`/v2/s3/throttle/blobs/${blob.digest}`);
      expect(Buffer.from(await get.arrayBuffer()).equals(blob.data)).toBe(true);
    } finally {
      await throttle.close();
    }
  });

  it("finishes a commit that failed after completing the multipart upload when the client retries the PUT", async () => {
    const bucket = await s3.bucket("recommit");
    const throttle = await throttlingProxy(s3.endpoint);
    try {
      const berth = await serve(s3Env(bucket, { REGISTRY_STORAGE_S3_REGIONENDPOINT: throttle.url }));
      const client = new RegistryClient(berth.url);
      const blob = randomBlob(6 * MiB + 11);
      let res = await client.fetch("/v2/s3/recommit/blobs/uploads/", { method: "POST" });
      const location = new URL(res.headers.get("location")!, berth.url).pathname;
      res = await client.fetch(location, {
        method: "PATCH",
        body: blob.data,
        headers: { "content-type": "application/octet-stream" },
      });
      expect(res.status).toBe(202);
      const next = new URL(res.headers.get("location")!, berth.url).pathname;
      // Cleaning up the upload's state fails for good: the multipart upload is complete, the blob is not.
      throttle.slowDown(1_000, (req) => req.method === "POST" && (req.url ?? "").includes("?delete"));
      res = await client.fetch(`${next}?digest=${blob.digest}`, { method: "PUT" });
      expect(res.status).toBe(503);
      expect((await client.fetch(`/v2/s3/recommit/blobs/${blob.digest}`, { method: "HEAD" })).status).toBe(
        404,
      );
      throttle.slowDown(0);
      res = await client.fetch(`${next}?digest=${blob.digest}`, { method: "PUT" });
      expect(res.status).toBe(201);
      const get = await client.fetch(`/v2/s3/recommit/blobs/${blob.digest}`);
      expect(Buffer.from(await get.arrayBuffer()).equals(blob.data)).toBe(true);
      const left = await admin.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: "reg/berth/uploads/" }),
      );
      expect(left.Contents ?? []).toEqual([]);
    } finally {
      await throttle.close();
    }
  });

  it("answers 503 with Retry-After when the store goes away under a running server", async () => {
    const bucket = await s3.bucket("away");
    const proxy = await throttlingProxy(s3.endpoint);
    const berth = await serve(s3Env(bucket, { REGISTRY_STORAGE_S3_REGIONENDPOINT: proxy.url }));
    const client = new RegistryClient(berth.url);
    const blob = randomBlob(6 * MiB + 1);
    expect((await client.pushBlob("s3/away", blob)).status).toBe(201);
    let res = await client.fetch("/v2/s3/away/blobs/uploads/", { method: "POST" });
    expect(res.status).toBe(202);
    const upload = new URL(res.headers.get("location")!, berth.url).pathname;
    await proxy.close(); // connections refused from now on
    for (const [path, init] of [
      [`/v2/s3/away/blobs/${blob.digest}`, { method: "GET" }],
      [
        upload,
        {
          method: "PATCH",
          body: Buffer.alloc(1000),
          headers: { "content-type": "application/octet-stream" },
        },
      ],
      ["/v2/s3/away/blobs/uploads/", { method: "POST" }],
    ] as const) {
      res = await client.fetch(path, init as RequestInit);
      expect(res.status, `${init.method} ${path}`).toBe(503);
      expect(res.headers.get("retry-after")).toBe("5");
      const body = (await res.json()) as { errors: { code: string }[] };
      expect(body.errors[0]?.code).toBe("UNAVAILABLE");
    }
    expect(await logged(berth, "blob store unavailable: s3 GetObject")).toBe(true);
    expect(berth.logs.join("\n")).not.toMatch(/"stack"/);
  });

  it("upload purging aborts the multipart uploads of abandoned uploads: nothing is left in the bucket", async () => {
    const bucket = await s3.bucket("purge");
    const dataDir = tempDir();
    const berth = await serve(s3Env(bucket), dataDir);
    const client = new RegistryClient(berth.url);
    for (const size of [6 * MiB + 3, 11 * MiB]) {
      const res = await client.fetch("/v2/s3/purge/blobs/uploads/", { method: "POST" });
      const location = new URL(res.headers.get("location")!, berth.url).pathname;
      const patched = await client.fetch(location, {
        method: "PATCH",
        body: randomBlob(size).data,
        headers: { "content-type": "application/octet-stream" },
      });
      expect(patched.status).toBe(202);
    }
    expect((await admin.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads).toHaveLength(2);
    await berth.stop();
    const report = await berthJson<{ uploads: { id: string }[] }>(
      ["gc", "--data-dir", dataDir, "--grace-period", "0s"],
      { ...s3Env(bucket), REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE: "1ms" },
    );
    expect(report.uploads).toHaveLength(2);
    expect((await admin.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).toEqual([]);
    const left = await admin.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "reg/berth/" }));
    expect((left.Contents ?? []).map((o) => o.Key)).toEqual([]);
  });

  it("a collector delete that fails keeps the blob, and the next collection deletes it", async () => {
    const bucket = await s3.bucket("gcretry");
    const dataDir = tempDir();
    const berth = await serve(s3Env(bucket), dataDir);
    const client = new RegistryClient(berth.url);
    const blob = randomBlob(7 * MiB + 9);
    expect((await client.pushBlob("s3/gcretry", blob)).status).toBe(201);
    await berth.stop();
    const keys = async () =>
      ((await admin.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "reg/" }))).Contents ?? []).map(
        (o) => o.Key,
      );
    const before = await keys();
    expect(before.filter((k) => k?.startsWith("reg/berth/blobs/"))).toHaveLength(1);
    const proxy = await throttlingProxy(s3.endpoint);
    try {
      // Every delete fails (a single DeleteObject or a DeleteObjects batch), by an error status or by
      // per-key errors in a 200: the collection must not forget the blob.
      const deletes = (req: http.IncomingMessage) =>
        req.method === "DELETE" || (req.method === "POST" && (req.url ?? "").includes("?delete"));
      for (const keyErrors of [true, false]) {
        proxy.slowDown(1_000, deletes, keyErrors);
        const failed = await runBerth(["gc", "--data-dir", dataDir, "--grace-period", "0s", "--json"], {
          env: { ...s3Env(bucket, { REGISTRY_STORAGE_S3_REGIONENDPOINT: proxy.url }) },
        });
        expect(proxy.throttled()).toBeGreaterThan(0);
        expect(failed.code, failed.stdout).not.toBe(0);
        expect(await keys()).toEqual(before);
      }
    } finally {
      await proxy.close();
    }
    const report = await berthJson<{ blobs: { digest: string }[] }>(
      ["gc", "--data-dir", dataDir, "--grace-period", "0s"],
      s3Env(bucket),
    );
    expect(report.blobs.map((b) => b.digest)).toContain(blob.digest);
    expect(
      (await keys()).filter((k) => k?.startsWith("reg/berth/") || k?.includes(blob.digest.slice(7))),
    ).toEqual([]);
  });

  it("berth config check masks the keys and checks the bucket", () => {
    const run = (bucket: string) =>
      spawnSync(process.execPath, [CLI, "config", "check"], {
        env: { ...process.env, ...s3Env(bucket) },
        encoding: "utf8",
      });
    return s3.bucket("check").then((bucket) => {
      const ok = run(bucket);
      expect(ok.status).toBe(0);
      expect(ok.stdout).not.toContain("testsecret");
      expect(ok.stdout).toContain("secretkey");
      expect(ok.stderr).toContain(`bucket ${bucket} is reachable and writable`);
      const bad = run("no-such-bucket-here");
      expect(bad.status).toBe(1);
      expect(bad.stderr).toContain("not reachable or not writable");
    });
  });
});

/**
 * A proxy in front of the S3 server that answers the next `n` requests with S3's throttling error
 * (503 SlowDown) instead of forwarding them. The Host header is kept, so request signatures stay valid.
 */
async function throttlingProxy(target: string) {
  const upstream = new URL(target);
  let remaining = 0;
  let count = 0;
  let urls: string[] = [];
  let matches: (req: http.IncomingMessage) => boolean = () => true;
  let keysNotDeleted = false;
  const server = http.createServer((req, res) => {
    if (remaining > 0 && matches(req)) {
      remaining--;
      count++;
      urls.push(req.url ?? "");
      req.resume();
      if (keysNotDeleted) {
        // DeleteObjects' other way to fail: 200, with an error for the keys it did not delete.
        res.writeHead(200, { "content-type": "application/xml" });
        res.end(
          '<?xml version="1.0" encoding="UTF-8"?><DeleteResult><Error><Key>some/key</Key><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error></DeleteResult>',
        );
        return;
      }
      res.writeHead(503, { "content-type": "application/xml" });
      res.end(
        '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>',
      );
      return;
    }
    const forward = http.request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on("error", () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    /**
     * Throttle the next `n` requests (those `only` picks, when given); `keyErrors`: answer them as a
     * DeleteObjects that deleted nothing (200 with per-key errors) instead.
     */
    slowDown(n: number, only?: (req: http.IncomingMessage) => boolean, keyErrors = false) {
      remaining = n;
      keysNotDeleted = keyErrors;
      matches = only ?? (() => true);
      count = 0;
      urls = [];
    },
    throttled: () => count,
    /** Throttled requests on upload objects (the collector may list the bucket meanwhile). */
    throttledUploads: () => urls.filter((u) => u.includes("/berth/uploads/")).length,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Whether the server logs `text` within a few seconds (its log lines arrive through a pipe). */
async function logged(berth: Berth, text: string): Promise<boolean> {
  for (const until = Date.now() + 5_000; Date.now() < until; ) {
    if (berth.logs.some((line) => line.includes(text))) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}
