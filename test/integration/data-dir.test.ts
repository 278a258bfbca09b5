/**
 * A data directory Berth's user cannot write (a registry:2 volume is owned by root; Berth's image runs as an
 * unprivileged user) stops `berth serve` at once with the path and the chown that fixes it (issue 20).
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { CLI, freePort, tempDir } from "../helpers/server.js";

const setpriv = spawnSync("setpriv", ["--version"]).status === 0;

describe.skipIf(!setpriv || process.getuid?.() !== 0)("a data directory that is not writable", () => {
  it("stops the start with the path and the chown to run", async () => {
    const parent = tempDir("berth-datadir-");
    chmodSync(parent, 0o755);
    const dataDir = path.join(parent, "registry");
    mkdirSync(dataDir, { mode: 0o755 });
    const port = await freePort();
    const run = spawnSync(
      "setpriv",
      [
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        process.execPath,
        CLI,
        "serve",
        "--workers",
        "1",
        "--addr",
        `127.0.0.1:${port}`,
        "--data-dir",
        dataDir,
      ],
      { encoding: "utf8", timeout: 60_000 },
    );
    const text = `${run.stdout}${run.stderr}`;
    expect(run.status, text).not.toBe(0);
    expect(text).toContain(dataDir);
    expect(text).toMatch(/chown -R \d+:\d+ /);
  });
});
