/**
 * Safe defaults, as a new user meets them (issue 21): deletes are off unless storage.delete.enabled is
 * true, as in registry:2, and the start-up log says so; a registry without authentication warns, once
 * per server, that anyone who can reach it may push, with the command that adds a user.
 */
import { rmSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { RegistryClient } from "../helpers/registry.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { writeAuthConfig } from "./api-push.js";

const started: Berth[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const b of started) await b.cleanup().catch(() => {});
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function start(options: Parameters<typeof startBerth>[0] = {}): Promise<Berth> {
  const berth = await startBerth({ captureLogs: true, ...options });
  started.push(berth);
  return berth;
}

/** The log lines (JSON) whose message contains `text`, once every worker has had time to start. */
async function linesWith(berth: Berth, text: string): Promise<Array<{ level: number; msg: string }>> {
  await new Promise((r) => setTimeout(r, 1_500));
  return berth.logs
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { level: number; msg: string })
    .filter((l) => typeof l.msg === "string" && l.msg.includes(text));
}

describe("a registry started with no configuration", () => {
  it("refuses an anonymous DELETE of a manifest with 405 UNSUPPORTED, tells the UI, and says so at start", async () => {
    const berth = await start({ workers: 2 });
    const client = new RegistryClient(berth.url);
    const image = await client.pushImage("fresh/app", "v1");
    for (const path of [
      `/v2/fresh/app/manifests/${image.digest}`,
      "/v2/fresh/app/manifests/v1",
      `/v2/fresh/app/blobs/${image.layers[0]!.digest}`,
    ]) {
      const res = await fetch(`${berth.url}${path}`, { method: "DELETE" });
      expect(res.status, path).toBe(405);
      expect(((await res.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe("UNSUPPORTED");
    }
    expect((await fetch(`${berth.url}/v2/fresh/app/manifests/v1`, { method: "HEAD" })).status).toBe(200);
    const api = await fetch(`${berth.url}/api/v1/repositories/fresh/app`, { method: "DELETE" });
    expect(api.status).toBe(405);
    const whoami = (await (await fetch(`${berth.url}/api/v1/whoami`)).json()) as { deleteEnabled: boolean };
    expect(whoami.deleteEnabled).toBe(false);
    // Said once per server (by the lead worker), not once per worker.
    const off = await linesWith(berth, "deletes are off");
    expect(off).toHaveLength(1);
    expect(off[0]!.msg).toContain("REGISTRY_STORAGE_DELETE_ENABLED=true");
  });

  it("warns once that anyone who can reach the port may pull and push, with the command that adds a user", async () => {
    const berth = await start({ workers: 2 });
    const warnings = await linesWith(berth, "no authentication is configured");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.level).toBe(40);
    expect(warnings[0]!.msg).toContain(`anyone who can reach 127.0.0.1:${berth.port} may pull and push.`);
    expect(warnings[0]!.msg).toContain(`berth user add NAME --htpasswd ${berth.dataDir}/htpasswd`);
    expect(warnings[0]!.msg).toContain(`REGISTRY_AUTH_HTPASSWD_PATH=${berth.dataDir}/htpasswd`);
  });
});

describe("storage.delete.enabled: true", () => {
  it("allows deletes, and the open registry's warning names them", async () => {
    const berth = await start({ env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
    const client = new RegistryClient(berth.url);
    const image = await client.pushImage("on/app", "v1");
    expect((await client.fetch(`/v2/on/app/manifests/${image.digest}`, { method: "DELETE" })).status).toBe(
      202,
    );
    expect(await linesWith(berth, "deletes are on")).toHaveLength(1);
    const [warning] = await linesWith(berth, "no authentication is configured");
    expect(warning?.msg).toContain("may pull, push and delete.");
  });
});

describe("with authentication", () => {
  it("does not warn about an open registry", async () => {
    const dir = tempDir("berth-safe-defaults-");
    dirs.push(dir);
    const config = writeAuthConfig(dir, { admin: "admin-pw" });
    const berth = await start({ args: ["--config", config] });
    expect(await linesWith(berth, "deletes are off")).toHaveLength(1);
    expect(await linesWith(berth, "no authentication is configured")).toHaveLength(0);
  });
});
