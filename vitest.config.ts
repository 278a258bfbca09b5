import { defineConfig } from "vitest/config";

// Two projects: `sqlite` runs every test file on the default embedded database; `postgres` runs the
// integration files again with BERTH_TEST_DB=postgres, each `berth serve` on a database of its own
// on a throwaway PostgreSQL server (test/helpers/postgres-global.ts). One file on one database:
// `npx vitest run --project sqlite test/integration/v2-blobs.test.ts`.
export default defineConfig({
  // The CommonJS modules in src (*.cts, for the supervisor) are TypeScript too.
  oxc: { include: /\.(m?ts|[jt]sx|cts)$/ },
  test: {
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: "forks",
    // Suites each start their own servers and clients; running two files at once is plenty on 2 cores.
    maxWorkers: 2,
    reporters: ["default"],
    projects: [
      { extends: true, test: { name: "sqlite", include: ["test/**/*.test.ts"] } },
      {
        extends: true,
        test: {
          name: "postgres",
          include: ["test/integration/**/*.test.ts"],
          env: { BERTH_TEST_DB: "postgres" },
          globalSetup: ["test/helpers/postgres-global.ts"],
        },
      },
      {
        // The v2 API, durability, leases and skopeo again with blobs on S3 (one Ceph radosgw for the
        // run) and metadata on PostgreSQL: the configuration of stateless replicas.
        extends: true,
        test: {
          name: "postgres-s3",
          include: [
            "test/integration/v2-blobs.test.ts",
            "test/integration/v2-manifests.test.ts",
            "test/integration/durability.test.ts",
            "test/integration/upload-lease.test.ts",
            "test/e2e/skopeo.test.ts",
            "test/integration/replicas-s3.test.ts",
            "test/integration/replicas-resend.test.ts",
            "test/integration/upload-resend.test.ts",
          ],
          env: { BERTH_TEST_DB: "postgres", BERTH_TEST_STORAGE: "s3" },
          globalSetup: ["test/helpers/postgres-global.ts", "test/helpers/s3-global-setup.ts"],
        },
      },
    ],
  },
});
