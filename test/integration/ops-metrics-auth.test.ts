import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, freePort, startBerth, tempDir } from "../helpers/server.js";
import { basic, pushImage, writeAuthConfig } from "./api-push.js";

// Metrics name repositories and their sizes (berth_repository_storage_bytes): with authentication on,
// /metrics on the main port answers only administrators and the configured metrics readers (issue 21,
// item 12). registry:2's http.debug.addr serves them on a port of their own.
const TOKEN = "metrics-scraper-token-0123456789";

let berth: Berth;
let configDir: string;
let debugPort: number;

beforeAll(async () => {
  configDir = tempDir("berth-metrics-auth-");
  debugPort = await freePort();
  const config = writeAuthConfig(
    configDir,
    { admin: "admin-pw", reader: "reader-pw", scraper: "scraper-pw" },
    [
      "metrics:",
      `  token: ${TOKEN}`,
      "  users: [scraper]",
      // A second server below uses http.debug.addr; this one serves metrics on the main port.
    ],
  );
  berth = await startBerth({ args: ["--config", config] });
  await pushImage({ base: berth.url, authorization: basic("admin", "admin-pw") }, "secret/vault", "1", {
    layers: [{ seed: "vault", size: 900 }],
  });
}, 60_000);

afterAll(async () => {
  await berth?.cleanup();
  rmSync(configDir, { recursive: true, force: true });
});

async function metrics(authorization?: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${berth.url}/metrics`, authorization ? { headers: { authorization } } : {});
  return { status: res.status, body: await res.text() };
}

describe("/metrics on the main port with authentication on", () => {
  it("refuses anonymous callers without naming any repository", async () => {
    const res = await metrics();
    expect(res.status).toBe(401);
    expect(JSON.parse(res.body).errors[0].code).toBe("UNAUTHORIZED");
    expect(res.body).not.toContain("secret/vault");
  });

  it("refuses users who are not administrators or metrics readers, and wrong tokens", async () => {
    expect((await metrics(basic("reader", "reader-pw"))).status).toBe(403);
    expect((await metrics(`Bearer ${TOKEN}x`)).status).toBe(401);
    expect((await metrics("Bearer ")).status).toBe(401);
  });

  it("answers an administrator, a user of metrics.users and the metrics token", async () => {
    for (const authorization of [
      basic("admin", "admin-pw"),
      basic("scraper", "scraper-pw"),
      `Bearer ${TOKEN}`,
    ]) {
      const res = await metrics(authorization);
      expect(res.status, authorization).toBe(200);
      expect(res.body).toContain("berth_http_requests_total");
    }
  });
});

describe("http.debug.addr with http.debug.prometheus.enabled", () => {
  let debug: Berth;
  beforeAll(async () => {
    const config = writeAuthConfig(tempDir("berth-metrics-debug-"), { admin: "admin-pw" }, [
      "http:",
      "  debug:",
      `    addr: 127.0.0.1:${debugPort}`,
      "    prometheus:",
      "      enabled: true",
      "      path: /debug/metrics",
    ]);
    debug = await startBerth({ args: ["--config", config] });
  }, 60_000);
  afterAll(async () => {
    await debug?.cleanup();
  });

  it("serves metrics on the debug port, as registry:2 does, and not on the main port", async () => {
    let res: Response | undefined;
    for (let i = 0; i < 50 && !res; i++) {
      res = await fetch(`http://127.0.0.1:${debugPort}/debug/metrics`).catch(() => undefined);
      if (!res) await new Promise((r) => setTimeout(r, 100));
    }
    expect(res?.status).toBe(200);
    expect(await res!.text()).toContain("berth_http_requests_total");
    const main = await fetch(`${debug.url}/metrics`, {
      headers: { authorization: basic("admin", "admin-pw") },
    });
    expect(main.status).toBe(404);
  });
});
