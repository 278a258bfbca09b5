/**
 * Stateless replicas (issue 11): three `berth serve` processes, each with a scratch data directory of its
 * own, on one PostgreSQL database and one S3 bucket (Ceph radosgw), behind a round-robin nginx. Runs in
 * the `postgres-s3` project only (`npx vitest run --project postgres-s3 test/integration/replicas-s3.test.ts`).
 *
 * - every chunk of a chunked push (5 MiB and 1 MiB PATCHes) lands on another replica than the one before
 *   (read from each replica's access log), and the image pulls back byte for byte from each replica;
 * - `kill -9` of the replica receiving a chunk, mid-body: the client asks where the upload stands and
 *   finishes it through the balancer on the others;
 * - the collector stress workload (gc-stress-workload.ts) with the collector on one replica (scheduled,
 *   every 500 ms) while clients push and pull through the other two, then `berth gc` once;
 * - skopeo and podman push and pull through the balancer (docker is left to test/e2e/docker.test.ts).
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3BlobStore } from "../../src/storage/s3.js";
import { ContainerTools } from "../e2e/clients/containers.js";
import { hex, testImage, writeOciLayout } from "../e2e/clients/images.js";
import { readDigestFile } from "../e2e/clients/suite.js";
import { type Balancer, startBalancer } from "../helpers/balancer.js";
import { openTestDb } from "../helpers/metadata-db.js";
import { createBucket } from "../helpers/s3.js";
import { type Berth, databaseEnv, s3StorageEnv, startBerth, tempDir } from "../helpers/server.js";
import {
  berth,
  blob,
  bytes,
  image,
  OCI_MANIFEST,
  pullImage,
  putManifest,
  sleep,
  writeConfig,
} from "./gc-helpers.js";
import {
  expectCleanLogs,
  expectNothingMissingNoGarbage,
  expectTaggedImagesWhole,
  runStressWorkload,
} from "./gc-stress-workload.js";

const MiB = 1024 * 1024;
const GRACE = "6s";
const STRESS_SECONDS = Number(process.env.GC_STRESS_SECONDS ?? 20);
const onS3 = process.env.BERTH_TEST_STORAGE === "s3";

interface AccessLine {
  msg?: string;
  method?: string;
  path?: string;
  status?: number;
  time?: number;
}

describe.skipIf(!onS3)(
  "three replicas on one PostgreSQL database and one S3 bucket, behind a balancer",
  () => {
    const dirs: string[] = [];
    const replicas: Berth[] = [];
    let env: Record<string, string>;
    let configs: string[];
    let bucket: string;
    let lb: Balancer;

    const start = (i: number, port?: number) =>
      startBerth({ dataDir: dirs[i], args: ["-c", configs[i]!], env, port });

    beforeAll(async () => {
      bucket = await createBucket("replicas");
      for (let i = 0; i < 3; i++) dirs.push(tempDir(`berth-replica-${i}-`));
      // The workload deletes tags and manifests: deletes are off by default, as in registry:2.
      env = {
        ...(await databaseEnv(dirs[0]!)),
        ...s3StorageEnv(bucket),
        REGISTRY_STORAGE_DELETE_ENABLED: "true",
      };
      const common = [
        `  graceperiod: ${GRACE}`,
        "  batchsize: 20",
        "  pause: 5ms",
        "  untagged:",
        "    enabled: true",
        `    olderthan: ${GRACE}`,
      ];
      // The collector runs on replica 0 only; the others never schedule it.
      configs = [
        writeConfig(dirs[0]!, ["gc:", "  interval: 500ms", ...common]),
        writeConfig(dirs[1]!, ["gc:", "  enabled: false", ...common]),
        writeConfig(dirs[2]!, ["gc:", "  enabled: false", ...common]),
      ];
      for (let i = 0; i < 3; i++) replicas.push(await start(i));
      lb = await startBalancer(replicas.map((r) => r.host));
    });

    afterAll(async () => {
      await lb?.stop();
      for (const r of replicas) await r.cleanup();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    });

    const locationPath = (res: Response | http.IncomingMessage) => {
      const value = res instanceof Response ? res.headers.get("location") : res.headers.location;
      const u = new URL(value!, lb.url);
      return u.pathname + u.search;
    };
    const withDigest = (location: string, digest: string) =>
      `${location}${location.includes("?") ? "&" : "?"}digest=${encodeURIComponent(digest)}`;

    /** Which replica each request on `path` went to, in the order they were answered. */
    const requestsOn = (needle: string, method: string) => {
      const seen: { replica: number; time: number; status: number }[] = [];
      replicas.forEach((r, replica) => {
        for (const line of r.logs) {
          if (!line.includes(needle)) continue;
          const l = JSON.parse(line) as AccessLine;
          if (l.msg === "request" && l.method === method && l.path?.includes(needle))
            seen.push({ replica, time: l.time ?? 0, status: l.status ?? 0 });
        }
      });
      return seen.sort((a, b) => a.time - b.time);
    };

    /** Pushes `data` in PATCHes of `chunk` bytes through the balancer; returns the upload's id. */
    async function chunkedPush(repo: string, data: Buffer, chunk: number): Promise<string> {
      const digest = blob(data).digest;
      const started = await fetch(`${lb.url}/v2/${repo}/blobs/uploads/`, { method: "POST" });
      expect(started.status).toBe(202);
      let location = locationPath(started);
      const id = location.split("?")[0]!.split("/").pop()!;
      for (let from = 0; from < data.length; from += chunk) {
        const to = Math.min(from + chunk, data.length);
        const res = await fetch(`${lb.url}${location}`, {
          method: "PATCH",
          body: data.subarray(from, to),
          headers: { "content-type": "application/octet-stream", "content-range": `${from}-${to - 1}` },
        });
        expect(res.status, await res.clone().text()).toBe(202);
        expect(res.headers.get("range")).toBe(`0-${to - 1}`);
        location = locationPath(res);
      }
      const done = await fetch(`${lb.url}${withDigest(location, digest)}`, { method: "PUT" });
      expect(done.status, await done.clone().text()).toBe(201);
      return id;
    }

    it("spreads the chunks of a chunked push over the replicas, and every replica serves the image byte for byte", async () => {
      const repo = "replicas/chunked";
      const big = blob(randomBytes(23 * MiB + 12_345)); // 5 MiB chunks: 5 PATCHes
      const small = blob(randomBytes(7 * MiB + 777)); // 1 MiB chunks: 8 PATCHes
      const uploads = [await chunkedPush(repo, big.data, 5 * MiB), await chunkedPush(repo, small.data, MiB)];
      const img = image("replicas-chunked", [big, small]);
      await fetch(`${lb.url}/v2/${repo}/blobs/uploads/?digest=${img.config.digest}`, {
        method: "POST",
        body: img.config.data,
        headers: { "content-type": "application/octet-stream" },
      });
      await putManifest(lb.url, repo, "v1", img.manifest, OCI_MANIFEST);

      for (const [i, id] of uploads.entries()) {
        const patches = requestsOn(id, "PATCH");
        expect(patches.length, `PATCHes of upload ${i}`).toBe(i === 0 ? 5 : 8);
        expect(patches.every((p) => p.status === 202)).toBe(true);
        for (let k = 1; k < patches.length; k++) {
          expect(patches[k]!.replica, `chunk ${k} of upload ${i} on the replica of chunk ${k - 1}`).not.toBe(
            patches[k - 1]!.replica,
          );
        }
        expect(new Set(patches.map((p) => p.replica)).size).toBe(3);
      }
      for (const r of replicas) {
        const pulled = await pullImage(r.url, repo, "v1");
        expect(pulled.digest).toBe(img.digest);
        for (const b of [big, small]) {
          const res = await fetch(`${r.url}/v2/${repo}/blobs/${b.digest}`);
          expect(Buffer.from(await res.arrayBuffer()).equals(b.data)).toBe(true);
        }
      }
    });

    it("finishes an upload on the others after kill -9 of the replica receiving a chunk", async () => {
      const repo = "replicas/killed";
      const data = bytes("replicas-killed", 16 * MiB + 4321);
      const digest = blob(data).digest;
      const started = await fetch(`${lb.url}/v2/${repo}/blobs/uploads/`, { method: "POST" });
      expect(started.status).toBe(202);
      const first = await fetch(`${lb.url}${locationPath(started)}`, {
        method: "PATCH",
        body: data.subarray(0, 5 * MiB),
        headers: { "content-type": "application/octet-stream", "content-range": `0-${5 * MiB - 1}` },
      });
      expect(first.status).toBe(202);
      let location = locationPath(first);

      // The next chunk, 6 MiB announced, streams slowly; the replica it reached is killed mid-body.
      const req = http.request(`${lb.url}${location}`, {
        method: "PATCH",
        headers: {
          "content-type": "application/octet-stream",
          "content-length": String(6 * MiB),
          "content-range": `${5 * MiB}-${11 * MiB - 1}`,
        },
      });
      const answered = new Promise<number | string>((resolve) => {
        req.on("response", (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on("error", (err) => resolve(String(err)));
      });
      req.write(data.subarray(5 * MiB, 8 * MiB));
      const holder = await (async () => {
        for (let tries = 0; tries < 100; tries++) {
          const busy = replicas.findIndex(
            (r) =>
              execFileSync("ss", ["-Htn", "state", "established", `( sport = :${r.port} )`])
                .toString()
                .trim() !== "",
          );
          if (busy >= 0) return busy;
          await sleep(50);
        }
        throw new Error("no replica holds the streaming PATCH");
      })();
      await sleep(300); // let the first bytes reach the store
      const victim = replicas[holder]!;
      await victim.kill();
      req.destroy();
      try {
        const outcome = await answered;
        expect(outcome).not.toBe(202); // the killed chunk was never acknowledged
        await finish();
      } finally {
        // The replica comes back on its port (and the next tests have three again).
        replicas[holder] = await start(holder, victim.port);
      }
      const back = await fetch(`${replicas[holder]!.url}/v2/${repo}/blobs/${digest}`);
      expect(Buffer.from(await back.arrayBuffer()).equals(data)).toBe(true);

      async function finish() {
        // Where does the upload stand? Whatever the answer, the client continues from there. The dead
        // replica's upload lease is no longer renewed: the next write takes it at once here (the replicas
        // share this machine and PID namespace, so its holder's process is seen to be gone), and from
        // another machine waits for it to run out (at most 15 s: there a dead holder and a slow one differ
        // only by their renewals), and goes on rather than being refused. A 416 (or a 502 from nginx) would
        // make the client try again.
        const killedAt = Date.now();
        let rest: Response;
        for (;;) {
          const status = await fetch(`${lb.url}${location}`);
          expect(status.status).toBe(204);
          const stored = Number(status.headers.get("range")!.split("-")[1]) + 1;
          expect(stored).toBeGreaterThanOrEqual(5 * MiB);
          expect(stored).toBeLessThanOrEqual(8 * MiB);
          location = locationPath(status);
          rest = await fetch(`${lb.url}${location}`, {
            method: "PATCH",
            body: data.subarray(stored),
            headers: {
              "content-type": "application/octet-stream",
              "content-range": `${stored}-${data.length - 1}`,
            },
          });
          // 502: nginx's word for the same refusal, as Berth answers it before the body is all sent.
          if ((rest.status !== 416 && rest.status !== 502) || Date.now() - killedAt > 45_000) break;
          await rest.arrayBuffer();
          await sleep(1000);
        }
        const continuedAfter = Date.now() - killedAt;
        console.log(`upload continued ${continuedAfter} ms after kill -9 of the replica writing it`);
        const diag = () =>
          `${JSON.stringify(requestsOn(location.split("?")[0]!.split("/").pop()!, "PATCH"))} holder ${holder}\n${lb.errors()}`;
        expect(rest.status, `${await rest.clone().text()} ${diag()}`).toBe(202);
        expect(continuedAfter).toBeLessThan(20_000);
        const done = await fetch(`${lb.url}${withDigest(locationPath(rest), digest)}`, { method: "PUT" });
        expect(done.status, await done.clone().text()).toBe(201);
        for (const r of replicas.filter((_, i) => i !== holder)) {
          const res = await fetch(`${r.url}/v2/${repo}/blobs/${digest}`);
          expect(res.status).toBe(200);
          expect(Buffer.from(await res.arrayBuffer()).equals(data)).toBe(true);
        }
      }
    });

    it(`loses nothing while replica 0 collects online and clients push and pull through the other two (${STRESS_SECONDS}s)`, async () => {
      const since = replicas.map((r) => r.logs.length);
      // The online collector of replica 0 (every 500 ms) runs while the clients work; `berth gc` once at the end.
      const result = await runStressWorkload({
        urls: [replicas[1]!.url, replicas[2]!.url],
        seconds: STRESS_SECONDS,
      });
      await sleep(6500);
      const final = await berth(
        [
          "gc",
          "-c",
          configs[0]!,
          "--data-dir",
          dirs[0]!,
          "--untagged",
          "--grace-period",
          GRACE,
          "--no-list",
          "--json",
          "--wait",
          "60s",
        ],
        { env: { ...env, REGISTRY_GC_UNTAGGED_OLDERTHAN: GRACE } },
      );
      expect(final.code, final.stderr).toBe(0);

      const tagged = await expectTaggedImagesWhole(lb.url, result);
      // The bucket as the store sees it: blobs at Distribution's keys and those that stay where their
      // multipart upload completed (named by link objects).
      const store = new S3BlobStore({
        region: "us-east-1",
        regionendpoint: process.env.BERTH_TEST_S3_ENDPOINT ?? "",
        bucket,
        accesskey: process.env.BERTH_TEST_S3_ACCESS_KEY ?? "test",
        secretkey: process.env.BERTH_TEST_S3_SECRET_KEY ?? "testsecret",
        forcepathstyle: true,
      });
      const db = await openTestDb(dirs[0]!);
      let referenced = 0;
      try {
        referenced = await expectNothingMissingNoGarbage(
          db,
          async (digest) => (await store.stat(digest))?.size ?? null,
          async () => {
            let n = 0;
            for await (const _ of store.list()) n++;
            return n;
          },
        );
      } finally {
        await db.close();
        store.close();
      }
      expect(result.failures).toEqual([]);
      expect(result.headRaces).toEqual([]);
      const logs = replicas.flatMap((r, i) => r.logs.slice(since[i]));
      const done = expectCleanLogs(logs);
      const collectedOn = replicas.map(
        (r, i) => r.logs.slice(since[i]).filter((l) => l.includes('"gc: collection finished"')).length,
      );
      console.log(
        `replicas gc stress: ${STRESS_SECONDS}s, ${JSON.stringify(result.counts)}, scheduled collections per replica ${JSON.stringify(collectedOn)} removed ${done.blobs} blobs and ${done.manifests} manifests; ${tagged} tags and ${referenced} referenced blobs at the end`,
      );
      expect(collectedOn[1]).toBe(0);
      expect(collectedOn[2]).toBe(0);
      // The workload did something (pushes through S3 are slow on a busy 2-core machine: 10-25 in 20 s).
      expect(result.counts.pushes).toBeGreaterThanOrEqual(5);
      expect(result.counts.pulls).toBeGreaterThanOrEqual(10);
      expect(result.counts.deletes).toBeGreaterThan(0);
      expect(collectedOn[0]).toBeGreaterThan(3);
      expect(done.blobs).toBeGreaterThan(0);
    });

    it("takes skopeo and podman pushes and pulls through the balancer", async () => {
      const tools = ContainerTools.create("berth-rc-");
      try {
        const img = testImage("replicas-clients");
        const src = tools.subdir("src");
        writeOciLayout(src, { five: img });
        const host = lb.url.replace("http://", "");
        tools.allowInsecure(host);
        // skopeo: in and out, digests kept.
        const noTls = ["--src-tls-verify=false", "--dest-tls-verify=false"];
        const digestFile = path.join(tools.dir, "digest");
        await tools.skopeo([
          "copy",
          ...noTls,
          "--digestfile",
          digestFile,
          `oci:${src}:five`,
          `docker://${host}/replicas/skopeo:v1`,
        ]);
        const pushed = readDigestFile(digestFile);
        const back = path.join(tools.dir, "digest-back");
        await tools.skopeo([
          "copy",
          ...noTls,
          "--digestfile",
          back,
          `docker://${host}/replicas/skopeo:v1`,
          `oci:${tools.subdir("out")}:five`,
        ]);
        expect(readDigestFile(back)).toBe(pushed);
        for (const r of replicas)
          expect((await pullImage(r.url, "replicas/skopeo", "v1")).digest).toBe(pushed);

        // podman: push from its store, remove everything, pull back by tag.
        await tools.podman(["pull", `oci:${src}:five`]);
        const podmanDigest = path.join(tools.dir, "digest-podman");
        await tools.podman([
          "push",
          "--tls-verify=false",
          "--digestfile",
          podmanDigest,
          hex(img.config.digest),
          `docker://${host}/replicas/podman:v1`,
        ]);
        const viaPodman = readDigestFile(podmanDigest);
        for (const r of replicas)
          expect((await pullImage(r.url, "replicas/podman", "v1")).digest).toBe(viaPodman);
        await tools.podman(["rmi", "--all", "--force"]);
        await tools.podman(["pull", "--tls-verify=false", `${host}/replicas/podman:v1`]);
        const inspected = JSON.parse(
          (await tools.podman(["image", "inspect", `${host}/replicas/podman:v1`])).stdout,
        ) as {
          Id: string;
          Digest: string;
        }[];
        expect(inspected[0]!.Id).toBe(hex(img.config.digest));
        expect(inspected[0]!.Digest).toBe(viaPodman);
      } finally {
        await tools.cleanup();
      }
    });
  },
);
