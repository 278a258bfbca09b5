/**
 * The web UI's Events page in chromium against a real Berth: one endpoint that answers, one whose
 * receiver is gone. The page shows which one is failing and how many events wait for it; the link to
 * it appears for administrators only.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryClient } from "../helpers/registry.js";
import { type Berth, freePort, startBerth, tempDir } from "../helpers/server.js";
import { Receiver } from "../integration/events-receiver.js";
import { launchChromium, openPage, screenshots } from "./ui-support.js";

let berth: Berth;
let browser: Browser;
let hook: Receiver;

beforeAll(async () => {
  hook = await new Receiver().start();
  const gone = await freePort();
  const file = path.join(tempDir("berth-ui-events-"), "config.yml");
  writeFileSync(
    file,
    JSON.stringify({
      notifications: {
        endpoints: [
          { name: "ci", url: hook.url, timeout: "500ms", backoff: "50ms" },
          {
            name: "gone",
            url: `http://127.0.0.1:${gone}/hook`,
            timeout: "500ms",
            backoff: "50ms",
            threshold: 1,
          },
        ],
      },
    }),
  );
  berth = await startBerth({ args: ["--config", file] });
  const client = new RegistryClient(berth.url);
  await client.pushImage("team/app", "v1");
  await hook.waitFor(() => hook.events.length >= 3);
  browser = await launchChromium();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await berth?.cleanup();
  await hook?.stop();
});

describe("the Events page", () => {
  it("shows each endpoint's state and backlog, the failing one marked", async () => {
    const w = await openPage(browser);
    const page = w.page;
    await page.goto(`${berth.url}/`);
    await page.getByRole("link", { name: "Events" }).click();
    await page.getByRole("heading", { name: "Endpoints" }).waitFor();
    expect(new URL(page.url()).pathname).toBe("/events");
    const ci = page.getByTestId("endpoint-ci");
    const gone = page.getByTestId("endpoint-gone");
    expect(await ci.getByTestId("endpoint-state").innerText()).toBe("ok");
    expect(await ci.getByTestId("endpoint-backlog").innerText()).toBe("0");
    await gone.getByText(/failing since/).waitFor();
    expect(await gone.getByTestId("endpoint-backlog").innerText()).toBe("3");
    expect(await page.getByTestId("deliveries-table").innerText()).toContain("ci");
    await screenshots(page, "events");
    expect(w.problems).toEqual([]);
    await w.context.close();
  });
});
