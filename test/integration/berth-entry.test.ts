import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CLI, startBerth, TEST_DB, tempDir } from "../helpers/server.js";

// The `berth` command (dist/cli/berth.cjs) starts the supervisor of `berth serve` in CommonJS, without
// commander or Node's ES module loader (src/cli/berth.cts), and hands every other command line to
// commander (dist/cli/main.js).

const dir = tempDir("berth-entry-");
afterAll(() => {
  spawnSync("rm", ["-rf", dir]);
});

/**
 * A script preloaded into every process of the tree: the primary writes what it loaded when it exits,
 * and so does each worker (zod keeps its settings in a global of its own once loaded).
 */
const report = path.join(dir, "loaded.json");
const probe = path.join(dir, "probe.cjs");
writeFileSync(
  probe,
  `const cluster = require("node:cluster");
if (cluster.isPrimary) process.on("exit", () => {
  require("node:fs").writeFileSync(${JSON.stringify(report)}, JSON.stringify({
    esm: process.moduleLoadList.some((m) => m.includes("esm/module_job")),
    modules: Object.keys(require.cache),
  }));
});
else process.on("exit", () => {
  if (process.env.BERTH_CONFIG_CHECK === "1") return;
  require("node:fs").writeFileSync(${JSON.stringify(dir)} + "/worker-" + process.pid + ".json",
    JSON.stringify({
      zod: globalThis.__zod_globalConfig !== undefined,
      promClient: Object.keys(require.cache).some((m) => m.includes("prom-client")),
      https: process.moduleLoadList.filter((m) => /^NativeModule (https|http2)$/.test(m)),
    }));
});
`,
);

const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", cwd: dir });

describe("the berth command", () => {
  it("runs the supervisor of berth serve without commander or the ES module loader", async () => {
    const berth = await startBerth({ workers: 2, env: { NODE_OPTIONS: `--require ${probe}` } });
    try {
      expect((await fetch(`${berth.url}/v2/`)).status).toBe(200);
      // Both workers listen (the second starts once the first has reported).
      const deadline = Date.now() + 20_000;
      while (!berth.logs.some((l) => l.includes("berth listening")) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
    } finally {
      await berth.cleanup();
    }
    const loaded = JSON.parse(readFileSync(report, "utf8")) as { esm: boolean; modules: string[] };
    expect(loaded.esm).toBe(false);
    expect(loaded.modules.filter((m) => m.includes("commander"))).toEqual([]);
    expect(loaded.modules.map((m) => path.basename(m))).toContain("supervisor.cjs");
    // The configuration is checked by a process of its own: no worker loads the schema (zod); and
    // prom-client waits for the first scrape (src/registry/meters.ts), node:https and node:http2 for TLS
    // or a call out.
    const workers = readdirSync(dir).filter((f) => f.startsWith("worker-"));
    expect(workers).toHaveLength(2);
    for (const file of workers) {
      const worker = JSON.parse(readFileSync(path.join(dir, file), "utf8"));
      expect(worker).toMatchObject({ zod: false, promClient: false });
      // With PostgreSQL something still loads node:http2 (not found yet); with SQLite nothing does.
      if (TEST_DB === "sqlite") expect(worker.https).toEqual([]);
    }
  });

  it("stops with the configuration's own message when it is invalid", () => {
    const bad = run(["serve", "--addr", "127.0.0.1:1", "--log-level", "loud", "--workers", "2"]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/log\.level/);
  });

  it("hands help, unknown flags and other commands to commander", () => {
    const help = run(["serve", "--help"]);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain("--read-only");
    expect(run(["--help"]).stdout).toContain("serve");
    const unknown = run(["serve", "--no-such-flag"]);
    expect(unknown.status).toBe(1);
    expect(unknown.stderr).toContain("unknown option '--no-such-flag'");
    const empty = run(["serve", "--addr", ""]);
    expect(empty.status).toBe(1);
    expect(empty.stderr).toContain("--addr is empty");
    expect(run(["--version"]).stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});
