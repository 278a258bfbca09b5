import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { freePort, ROOT } from "./server.js";

/**
 * A real S3 engine for tests: Ceph radosgw started by the shared start-ceph-s3.sh, or an endpoint given in
 * BERTH_TEST_S3_ENDPOINT (with BERTH_TEST_S3_ACCESS_KEY / _SECRET_KEY) that a global setup started.
 */
export interface TestS3 {
  endpoint: string;
  accessKey: string;
  secretKey: string;
  region: string;
  /** A fresh, empty bucket. */
  bucket(prefix?: string): Promise<string>;
  stop(): Promise<void>;
}

const TOOLS = [
  path.resolve(ROOT, "../shared/tools/ceph-s3"),
  "/work/shared/tools/ceph-s3",
  process.env.CEPH_S3_TOOLS ?? "",
].filter(Boolean);

/** A client of the test S3 server (destroy it when done). */
export function client(s3: Omit<TestS3, "bucket" | "stop">): S3Client {
  return new S3Client({
    region: s3.region,
    endpoint: s3.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
}

let counter = 0;

export async function startS3(): Promise<TestS3> {
  let base: Omit<TestS3, "bucket" | "stop">;
  let stop = async () => {};
  if (process.env.BERTH_TEST_S3_ENDPOINT) {
    base = {
      endpoint: process.env.BERTH_TEST_S3_ENDPOINT,
      accessKey: process.env.BERTH_TEST_S3_ACCESS_KEY ?? "test",
      secretKey: process.env.BERTH_TEST_S3_SECRET_KEY ?? "testsecret",
      region: "us-east-1",
    };
  } else {
    const tools = TOOLS.find((dir) => existsSync(path.join(dir, "start-ceph-s3.sh")));
    if (!tools)
      throw new Error("start-ceph-s3.sh not found (../shared/tools/ceph-s3); see docs/scale-out.md");
    const dir = mkdtempSync(path.join(os.tmpdir(), "berth-ceph-"));
    const env = {
      ...process.env,
      CEPH_S3_DIR: dir,
      CEPH_S3_PORT: String(await freePort()),
      CEPH_MON_PORT: String(await freePort()),
      CEPH_S3_MEM_BYTES: String(3 * 1024 * 1024 * 1024),
    };
    execFileSync(path.join(tools, "start-ceph-s3.sh"), { env, stdio: "pipe", timeout: 120_000 });
    base = {
      endpoint: `http://127.0.0.1:${env.CEPH_S3_PORT}`,
      accessKey: "test",
      secretKey: "testsecret",
      region: "us-east-1",
    };
    stop = async () => {
      execFileSync(path.join(tools, "stop-ceph-s3.sh"), { env, stdio: "pipe", timeout: 60_000 });
    };
  }
  const s3 = client(base);
  return {
    ...base,
    async bucket(prefix = "berth") {
      const name = `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter++}`;
      await s3.send(new CreateBucketCommand({ Bucket: name }));
      return name;
    },
    async stop() {
      s3.destroy();
      await stop();
    },
  };
}

/** Creates a bucket on the S3 server named by BERTH_TEST_S3_ENDPOINT (BERTH_TEST_STORAGE=s3 runs). */
export async function createBucket(prefix: string): Promise<string> {
  const s3 = client({
    endpoint: process.env.BERTH_TEST_S3_ENDPOINT ?? "",
    accessKey: process.env.BERTH_TEST_S3_ACCESS_KEY ?? "test",
    secretKey: process.env.BERTH_TEST_S3_SECRET_KEY ?? "testsecret",
    region: "us-east-1",
  });
  try {
    const name = `${prefix.slice(0, 40)}-${Date.now().toString(36)}-${counter++}`;
    await s3.send(new CreateBucketCommand({ Bucket: name }));
    return name;
  } finally {
    s3.destroy();
  }
}

/** A client of the S3 server named by BERTH_TEST_S3_ENDPOINT (destroy it when done). */
export function testS3Client(): S3Client {
  return client({
    endpoint: process.env.BERTH_TEST_S3_ENDPOINT ?? "",
    accessKey: process.env.BERTH_TEST_S3_ACCESS_KEY ?? "test",
    secretKey: process.env.BERTH_TEST_S3_SECRET_KEY ?? "testsecret",
    region: "us-east-1",
  });
}

/** registry:2's variables for `bucket` on the test S3 server, as a registry:2 compose file has them. */
export function registryS3Env(
  s3: Omit<TestS3, "bucket" | "stop">,
  bucket: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    REGISTRY_STORAGE: "s3",
    REGISTRY_STORAGE_S3_REGION: s3.region,
    REGISTRY_STORAGE_S3_REGIONENDPOINT: s3.endpoint,
    REGISTRY_STORAGE_S3_BUCKET: bucket,
    REGISTRY_STORAGE_S3_ACCESSKEY: s3.accessKey,
    REGISTRY_STORAGE_S3_SECRETKEY: s3.secretKey,
    REGISTRY_STORAGE_S3_FORCEPATHSTYLE: "true",
    REGISTRY_STORAGE_S3_CHUNKSIZE: "5242880",
    ...extra,
  };
}
