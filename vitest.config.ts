import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: "forks",
    // Suites each start their own servers and clients; running two files at once is plenty on 2 cores.
    maxWorkers: 2,
    reporters: ["default"],
    // BERTH_TEST_STORAGE=s3: every test server on the S3 store, one Ceph radosgw for the run.
    globalSetup: ["test/helpers/s3-global-setup.ts"],
  },
});
