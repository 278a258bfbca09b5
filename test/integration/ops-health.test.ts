import { execFileSync } from "node:child_process";
import { renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, startBerth } from "../helpers/server.js";

let berth: Berth;

beforeAll(async () => {
  berth = await startBerth();
});
afterAll(async () => {
  await berth?.cleanup();
});

/**
 * Makes the data directory's `berth/` folder (where the probe and uploads write) unusable in a way that
 * holds for root and on any filesystem: the folder is moved aside and a plain file takes its place.
 * (chattr +i needs a filesystem that supports it, a read-only bind mount needs CAP_SYS_ADMIN.) The
 * database stays open through its descriptors, so its check keeps answering.
 */
async function withBerthFolderReplacedByFile(fn: () => Promise<void>): Promise<void> {
  const dir = path.join(berth.dataDir, "berth");
  const aside = path.join(berth.dataDir, "berth.aside");
  renameSync(dir, aside);
  writeFileSync(dir, "not a directory\n");
  try {
    await fn();
  } finally {
    rmSync(dir, { force: true });
    renameSync(aside, dir);
  }
}

describe("/healthz", () => {
  it("answers 200 while the process runs, without credentials, GET and HEAD", async () => {
    const res = await fetch(`${berth.url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect((await fetch(`${berth.url}/healthz`, { method: "HEAD" })).status).toBe(200);
  });
});

describe("/readyz", () => {
  it("checks that storage is writable and the database answers", async () => {
    const res = await fetch(`${berth.url}/readyz`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { status: string; checks: Record<string, { status: string }> };
    expect(body.status).toBe("ok");
    expect(body.checks.storage?.status).toBe("ok");
    expect(body.checks.database?.status).toBe("ok");
  });

  it("answers 503 while the data directory cannot be written, 200 again after", async () => {
    await withBerthFolderReplacedByFile(async () => {
      const res = await fetch(`${berth.url}/readyz`);
      expect(res.status).toBe(503);
      const body = (await res.json()) as {
        status: string;
        checks: Record<string, { status: string; error?: string }>;
      };
      expect(body.status).toBe("unavailable");
      expect(body.checks.storage?.status).toBe("failed");
      expect(body.checks.storage?.error).toMatch(/ENOTDIR|EEXIST|not a directory|already exists/);
      expect(body.checks.database?.status).toBe("ok");
      // Liveness does not depend on storage.
      expect((await fetch(`${berth.url}/healthz`)).status).toBe(200);
    });
    expect((await fetch(`${berth.url}/readyz`)).status).toBe(200);
  });

  it("leaves no probe files behind", async () => {
    await fetch(`${berth.url}/readyz`);
    const left = execFileSync("find", [berth.dataDir, "-name", ".readyz-*"]).toString().trim();
    expect(left).toBe("");
  });
});
