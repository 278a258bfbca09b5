import { startS3, type TestS3 } from "./s3.js";

/**
 * Vitest global setup for BERTH_TEST_STORAGE=s3: one Ceph radosgw for the whole run (about two seconds),
 * its endpoint handed to the test files through the environment.
 */
let s3: TestS3 | null = null;

export async function setup(): Promise<void> {
  // Listed only by the postgres-s3 project (vitest.config.ts), whose env sets BERTH_TEST_STORAGE=s3 in the test
  // workers; this runs in the main process, so it does not look at that variable.
  if (process.env.BERTH_TEST_S3_ENDPOINT) return;
  s3 = await startS3();
  process.env.BERTH_TEST_S3_ENDPOINT = s3.endpoint;
  process.env.BERTH_TEST_S3_ACCESS_KEY = s3.accessKey;
  process.env.BERTH_TEST_S3_SECRET_KEY = s3.secretKey;
}

export async function teardown(): Promise<void> {
  await s3?.stop();
}
