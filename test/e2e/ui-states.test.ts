/**
 * The web UI's states and craft in chromium against a real Berth without auth: the empty registry,
 * error and not-found states, paging through many tags, themes, keyboard use, and deleting a manifest
 * and a whole repository behind their confirmations.
 */
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, startBerth } from "../helpers/server.js";
import {
  type Client,
  getJson,
  OCI_MANIFEST,
  type PushedImage,
  pushImage,
  pushManifest,
} from "../integration/api-push.js";
import { launchChromium, openPage, screenshots, type Watched } from "./ui-support.js";

let berth: Berth;
let c: Client;
let browser: Browser;
let w: Watched;
let page: Page;

beforeAll(async () => {
  berth = await startBerth({ env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
  c = { base: berth.url };
  browser = await launchChromium();
  w = await openPage(browser);
  page = w.page;
}, 120_000);

afterAll(async () => {
  await w?.context.close();
  await browser?.close();
  await berth?.cleanup();
});

describe("an empty registry", () => {
  it("explains how to push the first image, with this registry's host", async () => {
    await page.goto(`${berth.url}/`);
    await page.getByRole("heading", { name: "No repositories yet" }).waitFor();
    const host = new URL(berth.url).host;
    expect(await page.getByTestId("command").innerText()).toContain(
      `docker tag myimage:latest ${host}/myimage:latest && docker push ${host}/myimage:latest`,
    );
    // No login button without auth.
    expect(await page.getByRole("link", { name: "Log in" }).count()).toBe(0);
    await screenshots(page, "empty");
  });
});

describe("errors", () => {
  it("shows a server error with a working retry", async () => {
    await page.route("**/api/v1/repositories?*", (route) =>
      route.fulfill({
        status: 500,
        contentType: "application/json",
        body: JSON.stringify({ errors: [{ code: "UNAVAILABLE", message: "internal error", detail: null }] }),
      }),
    );
    await page.goto(`${berth.url}/`);
    const alert = page.getByRole("alert").filter({ hasText: "Something went wrong" });
    await alert.waitFor();
    expect(await alert.innerText()).toContain("internal error");
    await screenshots(page, "error");
    await page.unroute("**/api/v1/repositories?*");
    await alert.getByRole("button", { name: "Try again" }).click();
    await page.getByRole("heading", { name: "No repositories yet" }).waitFor();
  });

  it("says so when Berth cannot be reached", async () => {
    await page.route("**/api/v1/repositories?*", (route) => route.abort("connectionrefused"));
    await page.getByTestId("repo-search").fill("x");
    await page.getByRole("heading", { name: "Berth cannot be reached" }).waitFor();
    await page.unroute("**/api/v1/repositories?*");
    await page.getByTestId("repo-search").fill("");
  });

  it("shows not-found pages for unknown repositories, tags and paths", async () => {
    await page.goto(`${berth.url}/r/nothing/here`);
    await page.getByRole("heading", { name: "Not found" }).waitFor();
    expect(await page.getByRole("alert").innerText()).toContain("repository name not known to registry");
    await pushImage(c, "some/repo", "1", { layers: [{ seed: "x", size: 100 }] });
    await page.goto(`${berth.url}/r/some/repo:missing`);
    await page.getByRole("heading", { name: "Not found" }).waitFor();
    expect(await page.getByRole("alert").innerText()).toContain("manifest unknown");
    await page.getByRole("link", { name: "Back to repositories" }).click();
    await page.locator('[data-testid="repo-table"]').waitFor();
  });
});

describe("many tags", () => {
  let img: PushedImage;

  beforeAll(async () => {
    img = await pushImage(c, "big/tags", "base", { layers: [{ seed: "many", size: 2000 }] });
    const manifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: img.config,
      layers: img.layers,
    };
    for (let i = 0; i < 120; i++)
      await pushManifest(c, "big/tags", `v1.${String(i).padStart(3, "0")}`, manifest, OCI_MANIFEST);
  }, 120_000);

  it("pages through them on the server and filters them", async () => {
    await page.goto(`${berth.url}/r/big/tags`);
    const info = page.locator(".pager-info");
    await info.filter({ hasText: "1–50 of 121 tags" }).waitFor();
    await page.getByRole("button", { name: "Next page" }).click();
    await info.filter({ hasText: "51–100 of 121 tags" }).waitFor();
    expect(new URL(page.url()).searchParams.get("page")).toBe("2");
    await page.getByRole("button", { name: "Last page" }).click();
    await info.filter({ hasText: "101–121 of 121 tags" }).waitFor();
    await page.getByTestId("tag-filter").fill("v1.11");
    await info.filter({ hasText: "1–10 of 10 tags" }).waitFor();
    // Back returns to the unfiltered last page.
    await page.getByTestId("tag-filter").fill("");
    await info.filter({ hasText: "1–50 of 121 tags" }).waitFor();
  });
});

describe("themes and keyboard", () => {
  it("follows the system theme and remembers a choice, applied before the first paint", async () => {
    await page.goto(`${berth.url}/r/big/tags`);
    await page.locator('[data-testid="tag-table"]').waitFor();
    const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const light = await bg();
    const toggle = page.locator(".theme-toggle");
    expect(await toggle.getAttribute("data-theme-choice")).toBe("system");
    await toggle.click();
    expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe("light");
    await toggle.click();
    expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe("dark");
    expect(await bg()).not.toBe(light);
    await page.reload();
    expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe("dark");
    await page.locator('[data-testid="tag-table"]').waitFor();
    await screenshots(page, "repository-dark");
    await page.goto(`${berth.url}/`);
    await page.locator('[data-testid="repo-table"]').waitFor();
    await screenshots(page, "repositories-dark");
    await toggle.click();
    expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBeUndefined();
    expect(await page.evaluate(() => localStorage.getItem("berth.theme"))).toBeNull();
  });

  it("follows a dark system setting", async () => {
    const dark = await openPage(browser, { colorScheme: "dark" });
    await dark.page.goto(`${berth.url}/storage`);
    await dark.page.locator('[data-testid="usage-table"]').waitFor();
    const bodyBg = await dark.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    expect(bodyBg).toBe("rgb(14, 17, 22)");
    await screenshots(dark.page, "storage-dark");
    expect(dark.problems).toEqual([]);
    await dark.context.close();
  });

  it("can be used with the keyboard alone", async () => {
    await page.goto(`${berth.url}/`);
    await page.locator('[data-testid="repo-table"]').waitFor();
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Skip to content");
    await page.keyboard.press("/");
    expect(await page.evaluate(() => document.activeElement?.getAttribute("data-testid"))).toBe(
      "repo-search",
    );
    await page.keyboard.type("some");
    await page
      .locator('[data-testid="repo-table"] tbody tr:not(.group)')
      .filter({ hasText: "repo" })
      .waitFor();
    await page.waitForFunction(
      () => document.querySelectorAll('[data-testid="repo-table"] tbody tr:not(.group)').length === 1,
    );
    // Tab moves on to the sort control, the order button, then the repository link; Enter opens it.
    let reached = false;
    for (let i = 0; i < 8 && !reached; i++) {
      await page.keyboard.press("Tab");
      reached = await page.evaluate(() => document.activeElement?.classList.contains("repo-link") ?? false);
    }
    expect(reached).toBe(true);
    await page.keyboard.press("Enter");
    await page.waitForURL(`${berth.url}/r/some/repo`);
    // Focus moved to the main region for screen readers.
    await page.waitForFunction(() => document.activeElement?.id === "main");
  });
});

describe("deleting a manifest and a repository", () => {
  it("deletes a manifest with its tags from the image page", async () => {
    const a = await pushImage(c, "shop/cart", "1", { layers: [{ seed: "cart-1", size: 500 }] });
    await pushImage(c, "shop/cart", "one", { layers: [{ seed: "cart-1", size: 500 }] });
    await pushImage(c, "shop/cart", "2", { layers: [{ seed: "cart-2", size: 500 }] });
    await page.goto(`${berth.url}/r/shop/cart@${a.digest}`);
    await page.getByRole("button", { name: "Delete manifest…" }).click();
    const dialog = page.locator("dialog[open]");
    expect(await dialog.innerText()).toMatch(/1, one/);
    await dialog.getByRole("button", { name: "Delete manifest" }).click();
    await page.waitForURL(`${berth.url}/r/shop/cart`);
    await page.locator('tr[data-tag="2"]').waitFor();
    expect(await page.locator("tr[data-tag]").count()).toBe(1);
  });

  it("deletes a repository once its name is typed", async () => {
    await page.getByRole("button", { name: "Delete repository…" }).click();
    const dialog = page.locator("dialog[open]");
    const confirm = dialog.getByRole("button", { name: "Delete repository" });
    expect(await confirm.isDisabled()).toBe(true);
    await dialog.getByRole("textbox").fill("shop/car");
    expect(await confirm.isDisabled()).toBe(true);
    await screenshots(page, "delete-repository-dialog");
    await dialog.getByRole("textbox").fill("shop/cart");
    await confirm.click();
    await page.waitForURL(`${berth.url}/`);
    await page.locator('[data-testid="repo-table"]').waitFor();
    expect(await page.locator('[data-testid="repo-table"]').innerText()).not.toContain("cart");
    expect((await getJson(c, "/api/v1/repositories/shop/cart")).status).toBe(404);
  });

  it("had no console errors or CSP violations beyond the provoked ones", () => {
    // Provoked above: the 500, the refused connection and two 404s.
    const unexpected = w.problems.filter(
      (p) => !/status of (500|404)|ERR_CONNECTION_REFUSED|Failed to fetch/.test(p),
    );
    expect(unexpected).toEqual([]);
  });
});

describe("with deletes off (the default, as in registry:2)", () => {
  let off: Berth;
  let offPage: Watched;

  beforeAll(async () => {
    off = await startBerth();
    await pushImage({ base: off.url }, "kept/app", "1", { layers: [{ seed: "kept-ui", size: 500 }] });
    offPage = await openPage(browser);
  }, 120_000);
  afterAll(async () => {
    await offPage?.context.close();
    await off?.cleanup();
  });

  it("shows no delete button, and says why, on the repository and the image page", async () => {
    const p = offPage.page;
    for (const path of ["/r/kept/app", "/r/kept/app:1"]) {
      await p.goto(`${off.url}${path}`);
      const note = p.getByTestId("delete-unavailable");
      await note.waitFor();
      expect(await note.innerText()).toContain("Deleting is turned off on this registry");
      expect(await note.innerText()).toContain("storage.delete.enabled: true");
      expect(await p.getByRole("button", { name: /Delete/ }).count()).toBe(0);
    }
    await screenshots(p, "delete-unavailable");
    expect(offPage.problems).toEqual([]);
  });
});
