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
  },
});
