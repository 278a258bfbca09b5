/**
 * A scheduled job whose process died while running it (kill -9 of a worker or a whole replica) must not
 * stall the schedule for the rest of the lease's time: on the same host the next process takes the run
 * over within seconds. The lease row is written by hand, as a killed process would have left it.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import { afterEach, describe, expect, it } from "vitest";
import { openTestDb } from "../helpers/metadata-db.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { writeConfig } from "./gc-helpers.js";

const dirs: string[] = [];
const started: Berth[] = [];
afterEach(async () => {
  for (const b of started.splice(0)) await b.cleanup().catch(() => {});
  for (const d of dirs.splice(0)) await fs.rm(d, { recursive: true, force: true });
});

/** The pid of a process that has exited: on this host it looks dead. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]);
  return Number(child.stdout.toString());
}

describe("job leases", () => {
  it("are taken over within seconds when the process running the job died on this host", async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const config = writeConfig(dataDir, ["gc:", "  interval: 1s"]);
    // A first start creates the database; then the run of a dead process holds the collector's lease
    // for another 20 s, as a worker killed mid-collection leaves it.
    const first = await startBerth({ dataDir, args: ["-c", config] });
    await first.stop();
    const db = await openTestDb(dataDir);
    await db.run(
      "insert into locks (name, holder, expires_at) values (?, ?, ?) on conflict (name) do update set holder = excluded.holder, expires_at = excluded.expires_at",
      "job:gc",
      `run:${os.hostname()}:${deadPid()}:deadbeef`,
      Date.now() + 20_000,
    );
    await db.close();
    const t0 = Date.now();
    const berth = await startBerth({ dataDir, args: ["-c", config] });
    started.push(berth);
    const finished = () => berth.logs.some((l) => l.includes('"gc: collection finished"'));
    while (!finished() && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 200));
    expect(finished()).toBe(true);
    // Without a look at the dead run, the scheduler would sleep until its lease ran out (20 s).
    expect(Date.now() - t0).toBeLessThan(14_000);
  }, 60_000);
});
