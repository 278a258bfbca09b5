import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CLI, startBerth, tempDir } from "../helpers/server.js";

// The `berth` command (dist/cli/berth.cjs) starts the supervisor of `berth serve` in CommonJS, without
// commander or Node's ES module loader (src/cli/berth.cts), and hands every other command line to
// commander (dist/cli/main.js).

const dir = tempDir("berth-entry-");
afterAll(() => {
  spawnSync("rm", ["-rf", dir]);
});

/** A script preloaded into every process of the tree: the primary writes what it loaded when it exits. */
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
`,
);

const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", cwd: dir });

describe("the berth command", () => {
  it("runs the supervisor of berth serve without commander or the ES module loader", async () => {
    const berth = await startBerth({ workers: 2, env: { NODE_OPTIONS: `--require ${probe}` } });
    try {
      expect((await fetch(`${berth.url}/v2/`)).status).toBe(200);
    } finally {
      await berth.cleanup();
    }
    const loaded = JSON.parse(readFileSync(report, "utf8")) as { esm: boolean; modules: string[] };
    expect(loaded.esm).toBe(false);
    expect(loaded.modules.filter((m) => m.includes("commander"))).toEqual([]);
    expect(loaded.modules.map((m) => path.basename(m))).toContain("supervisor.cjs");
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
