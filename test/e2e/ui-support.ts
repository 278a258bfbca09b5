/** Shared by the web UI's browser tests: chromium, screenshots at phone and desktop widths, console checks. */
import { mkdirSync } from "node:fs";
import path from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { ROOT } from "../helpers/server.js";

export const SCREENSHOTS = path.join(ROOT, "test-output", "screenshots");
export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1440, height: 900 };

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--headless",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
    ],
  });
}

export interface Watched {
  context: BrowserContext;
  page: Page;
  /** Console errors and uncaught exceptions (CSP violations show up here too). */
  problems: string[];
}

export async function openPage(
  browser: Browser,
  options: { colorScheme?: "light" | "dark" } = {},
): Promise<Watched> {
  const context = await browser.newContext({
    viewport: DESKTOP,
    colorScheme: options.colorScheme ?? "light",
    permissions: ["clipboard-read", "clipboard-write"],
    reducedMotion: "reduce",
  });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  return { context, page, problems };
}

/**
 * Full-page screenshots at desktop (1440px) and phone (390px) widths, written to
 * test-output/screenshots/<name>-desktop.png and <name>-phone.png. Leaves the page at desktop width.
 */
export async function screenshots(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  for (const [label, size] of [
    ["desktop", DESKTOP],
    ["phone", PHONE],
  ] as const) {
    await page.setViewportSize(size);
    await page.waitForTimeout(150);
    await page.screenshot({ path: path.join(SCREENSHOTS, `${name}-${label}.png`), fullPage: true });
  }
  await page.setViewportSize(DESKTOP);
}

/** Text of every cell of a table column, by header text, for rows of a test id'd table. */
export async function columnTexts(page: Page, testid: string, column: number): Promise<string[]> {
  return page
    .locator(`[data-testid="${testid}"] tbody tr`)
    .evaluateAll(
      (rows, col) => rows.map((r) => (r.children[col] as HTMLElement | undefined)?.innerText.trim() ?? ""),
      column,
    );
}
