import { execFileSync } from "node:child_process";
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

function canChattr(): boolean {
  try {
    execFileSync("chattr", ["-i", berth.dataDir], { stdio: "ignore" });
    return true;
  } catch {
    return false;
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

  it.skipIf(process.getuid?.() !== 0)(
    "answers 503 while the data directory cannot be written, 200 again after",
    async () => {
      if (!canChattr()) return;
      const dir = path.join(berth.dataDir, "berth");
      execFileSync("chattr", ["+i", dir]);
      try {
        const res = await fetch(`${berth.url}/readyz`);
        expect(res.status).toBe(503);
        const body = (await res.json()) as {
          status: string;
          checks: Record<string, { status: string; error?: string }>;
        };
        expect(body.status).toBe("unavailable");
        expect(body.checks.storage?.status).toBe("failed");
        expect(body.checks.storage?.error).toMatch(/EPERM|EACCES|not permitted/);
        expect(body.checks.database?.status).toBe("ok");
        // Liveness does not depend on storage.
        expect((await fetch(`${berth.url}/healthz`)).status).toBe(200);
      } finally {
        execFileSync("chattr", ["-i", dir]);
      }
      expect((await fetch(`${berth.url}/readyz`)).status).toBe(200);
    },
  );

  it("leaves no probe files behind", async () => {
    await fetch(`${berth.url}/readyz`);
    const left = execFileSync("find", [berth.dataDir, "-name", ".readyz-*"]).toString().trim();
    expect(left).toBe("");
  });
});
