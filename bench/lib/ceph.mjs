// A throwaway S3 server for the S3 rows: single-node Ceph radosgw started by the shared
// start-ceph-s3.sh (see its README), on bluestore in a sparse file under the run's work directory
// (a 1 GiB blob pushed several times to two registries would not fit memstore's RAM), on free ports.

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { REPO_ROOT, registerCleanup } from "./servers.mjs";
import { freePort, log, run } from "./util.mjs";

// BENCH_CEPH_S3_TOOLS, when set, is the only place looked at.
const TOOL_DIRS = process.env.BENCH_CEPH_S3_TOOLS
  ? [process.env.BENCH_CEPH_S3_TOOLS]
  : [path.resolve(REPO_ROOT, "..", "shared", "tools", "ceph-s3"), "/work/shared/tools/ceph-s3"];

function toolsDir() {
  return TOOL_DIRS.find((dir) => existsSync(path.join(dir, "start-ceph-s3.sh")));
}

function onPath(bin) {
  return (process.env.PATH ?? "").split(":").some((dir) => dir && existsSync(path.join(dir, bin)));
}

/** Why the S3 rows cannot run here, or null when they can. */
export function cephUnavailable() {
  if (!toolsDir())
    return `start-ceph-s3.sh not found (looked in ${TOOL_DIRS.join(", ")}; set BENCH_CEPH_S3_TOOLS)`;
  for (const bin of ["ceph-mon", "ceph-osd", "radosgw"]) {
    if (!onPath(bin)) return `${bin} not installed (apt-get install ceph-mon ceph-osd radosgw ceph-common)`;
  }
  return null;
}

/** Starts radosgw. Returns { endpoint, accessKey, secretKey, region, createBucket(name), stop() }. */
export async function startCeph(workDir) {
  const tools = toolsDir();
  const dir = path.join(workDir, "ceph-s3");
  const env = {
    ...process.env,
    CEPH_S3_DIR: dir,
    CEPH_S3_PORT: String(await freePort()),
    CEPH_MON_PORT: String(await freePort()),
    CEPH_S3_STORE: process.env.BENCH_CEPH_S3_STORE ?? "bluestore",
    CEPH_S3_DISK_BYTES: String(40 * 1024 ** 3),
  };
  const stopSync = () => {
    execFileSync(path.join(tools, "stop-ceph-s3.sh"), { env, stdio: "ignore", timeout: 60_000 });
  };
  const unregister = registerCleanup(stopSync);
  try {
    await run(path.join(tools, "start-ceph-s3.sh"), [], { env, timeoutMs: 240_000 });
  } catch (err) {
    stopSync();
    unregister();
    throw err;
  }
  const s3 = {
    endpoint: `http://127.0.0.1:${env.CEPH_S3_PORT}`,
    accessKey: "test",
    secretKey: "testsecret",
    region: "us-east-1",
  };
  log(`ceph radosgw ready on ${s3.endpoint} (${env.CEPH_S3_STORE})`);
  return {
    ...s3,
    /** Creates a bucket with a signed PUT (curl --aws-sigv4); returns the s3 settings for a server. */
    async createBucket(bucket) {
      await run("curl", [
        "-sS",
        "-f",
        "-X",
        "PUT",
        "--aws-sigv4",
        `aws:amz:${s3.region}:s3`,
        "-u",
        `${s3.accessKey}:${s3.secretKey}`,
        // radosgw refuses a signed request without the payload hash header (403).
        "-H",
        "x-amz-content-sha256: UNSIGNED-PAYLOAD",
        `${s3.endpoint}/${bucket}`,
      ]);
      return { ...s3, bucket };
    },
    async stop() {
      await run(path.join(tools, "stop-ceph-s3.sh"), [], { env, timeoutMs: 120_000 });
      unregister();
      log("ceph radosgw stopped");
    },
  };
}
