import { rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";

/** The UI can be turned off, and a Berth whose UI was never built says so instead of failing. */

let berth: Berth | undefined;
const dirs: string[] = [];

afterEach(async () => {
  await berth?.cleanup();
  berth = undefined;
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("serving the UI", () => {
  it("is off with ui.enabled: false, while the JSON API stays", async () => {
    const dir = tempDir();
    dirs.push(dir);
    const config = path.join(dir, "config.yml");
    writeFileSync(config, "ui:\n  enabled: false\n");
    berth = await startBerth({ args: ["--config", config] });
    for (const p of ["/", "/r/a/b", "/storage", "/favicon.svg"]) {
      const res = await fetch(`${berth.url}${p}`);
      expect(res.status, p).toBe(404);
      expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    }
    expect((await fetch(`${berth.url}/api/v1/whoami`)).status).toBe(200);
  });

  it("answers / with a hint when ui/dist was not built", async () => {
    const empty = tempDir("berth-no-ui-");
    dirs.push(empty);
    berth = await startBerth({ env: { BERTH_UI_DIR: empty } });
    const res = await fetch(`${berth.url}/`);
    expect(res.status).toBe(503);
    expect(await res.text()).toContain("npm run build");
    expect((await fetch(`${berth.url}/v2/`)).status).toBe(200);
  });
});
