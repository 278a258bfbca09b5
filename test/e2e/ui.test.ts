/**
 * The web UI in Debian's chromium against a real Berth (htpasswd auth and access rules) with real pushed
 * images: browse anonymously, log in, find a repository by search, open a tag, read its layers and
 * history, copy the pull command, delete a tag and see its sibling stay, log out; a user without delete
 * rights sees no delete button and is refused by the API. Screenshots of the main pages at phone and
 * desktop widths go to test-output/screenshots/.
 */
import { rmSync } from "node:fs";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import {
  basic,
  buildkitHistory,
  type Client,
  getJson,
  type PushedImage,
  pushAttestation,
  pushImage,
  pushIndex,
  pushReferrer,
  writeAuthConfig,
} from "../integration/api-push.js";
import { columnTexts, launchChromium, openPage, screenshots, type Watched } from "./ui-support.js";

let berth: Berth;
let configDir: string;
let browser: Browser;
let w: Watched;
let page: Page;
let app10: PushedImage;

const appSpec = {
  layers: [
    { seed: "alpine-base", size: 3_400_000 },
    { seed: "app-deps", size: 24_000_000 },
    { seed: "app-code", size: 180_000 },
  ],
  workingDir: "/app",
  env: ["PATH=/usr/local/bin:/usr/bin:/bin", "NODE_ENV=production"],
  exposedPorts: ["8080/tcp"],
  user: "app",
  entrypoint: ["node", "server.js"],
  labels: {
    "org.opencontainers.image.source": "https://git.example.com/team/app",
    "org.opencontainers.image.version": "1.0",
  },
  history: buildkitHistory(),
};

beforeAll(async () => {
  configDir = tempDir("berth-ui-e2e-");
  const dir = configDir;
  const config = writeAuthConfig(dir, { admin: "admin-pw", reader: "reader-pw", editor: "editor-pw" });
  berth = await startBerth({ args: ["--config", config], env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
  const admin: Client = { base: berth.url, authorization: basic("admin", "admin-pw") };
  // team/app: 1.0 and stable are the same image; 2.0 another.
  app10 = await pushImage(admin, "team/app", "1.0", appSpec);
  await pushImage(admin, "team/app", "stable", appSpec);
  await pushImage(admin, "team/app", "2.0", {
    ...appSpec,
    layers: [appSpec.layers[0]!, appSpec.layers[1]!, { seed: "app-code-2", size: 190_000 }],
  });
  // team/web: a multi-platform index with a build attestation, and an SBOM that refers to it.
  const amd = await pushImage(admin, "team/web", null, {
    ...appSpec,
    layers: [appSpec.layers[0]!, { seed: "web-amd", size: 9_000_000 }],
  });
  const arm = await pushImage(admin, "team/web", null, {
    ...appSpec,
    architecture: "arm64",
    variant: "v8",
    layers: [
      { seed: "alpine-base-arm", size: 3_300_000 },
      { seed: "web-arm", size: 8_800_000 },
    ],
  });
  const attestation = await pushAttestation(admin, "team/web", amd);
  const index = await pushIndex(admin, "team/web", "3.2.1", [amd, arm, attestation]);
  await pushIndex(admin, "team/web", "latest", [amd, arm, attestation]);
  await pushReferrer(admin, "team/web", index, "application/spdx+json", { spdxVersion: "SPDX-2.3" });
  await pushReferrer(admin, "team/web", index, "application/vnd.dev.sigstore.bundle.v0.3+json", {
    sig: "...",
  });
  await pushImage(admin, "team/api", "v1", {
    layers: [appSpec.layers[0]!, { seed: "api", size: 5_500_000 }],
  });
  await pushImage(admin, "public/hello", "latest", {
    layers: [{ seed: "hello", size: 12_000 }],
    cmd: ["/hello"],
  });
  await pushImage(admin, "tools/ci/runner", "2024.05", {
    layers: [appSpec.layers[0]!, { seed: "runner", size: 40_000_000 }],
  });
  browser = await launchChromium();
  w = await openPage(browser);
  page = w.page;
}, 180_000);

afterAll(async () => {
  await w?.context.close();
  await browser?.close();
  await berth?.cleanup();
  rmSync(configDir, { recursive: true, force: true });
});

async function waitForRepos(expected: string[]): Promise<void> {
  await page.waitForFunction(
    (want) => {
      const rows = [...document.querySelectorAll('[data-testid="repo-table"] tbody tr:not(.group) th a')].map(
        (a) => (a as HTMLElement).innerText.trim(),
      );
      return JSON.stringify(rows) === JSON.stringify(want);
    },
    expected,
    { timeout: 10_000 },
  );
}

async function logIn(user: string, password: string): Promise<void> {
  await page.getByRole("link", { name: "Log in" }).first().click();
  await page.waitForURL(/\/login/);
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.locator('[data-testid="user-name"]', { hasText: user }).waitFor();
}

describe("the web UI", () => {
  it("shows anonymous visitors what anonymous may pull, and offers a login", async () => {
    await page.goto(`${berth.url}/`);
    await page.locator('[data-testid="repo-table"]').waitFor();
    // Full names: public/hello is grouped under its namespace, showing the base name.
    await waitForRepos(["hello"]);
    await page.getByRole("link", { name: "Log in" }).waitFor();
    await page.evaluate(() => {
      (window as unknown as { berthMarker: string }).berthMarker = "still-here";
    });
    await screenshots(page, "repositories-anonymous");
  });

  it("logs in, and lists the repositories grouped by namespace", async () => {
    await logIn("editor", "editor-pw");
    await page.waitForURL(`${berth.url}/`);
    await waitForRepos(["hello", "api", "app", "web"]);
    const groups = await page.locator('[data-testid="repo-table"] tr.group th').allInnerTexts();
    expect(groups.map((g) => g.replace(/^\W+/, "").split("/")[0])).toEqual(["public", "team"]);
    // Issue 22: the groups are open (▾), and their repositories indented beyond the group's name.
    expect(groups.every((g) => g.trimStart().startsWith("▾"))).toBe(true);
    const indent = async (selector: string) =>
      page
        .locator(selector)
        .first()
        .evaluate(
          (el) => el.getBoundingClientRect().left + Number.parseFloat(getComputedStyle(el).paddingLeft),
        );
    expect(await indent('[data-testid="repo-table"] tr:not(.group) th.name-cell')).toBeGreaterThan(
      await indent('[data-testid="repo-table"] tr.group th'),
    );
    // Tag count, size and last push are shown for each repository.
    const appRow = page.locator('[data-testid="repo-table"] tr', {
      has: page.getByRole("link", { name: "app", exact: true }),
    });
    expect(await appRow.innerText()).toMatch(/3\s*tags[\s\S]*27\.\d MB[\s\S]*(just now|minute)/);
    await screenshots(page, "repositories");
  });

  it("sorts by size and finds a repository by search as you type", async () => {
    await page.getByTestId("repo-sort").selectOption("size");
    await waitForRepos(["team/app", "team/web", "team/api", "public/hello"]);
    await page.getByTestId("repo-sort").selectOption("name");
    await waitForRepos(["hello", "api", "app", "web"]);
    await page.keyboard.press("/");
    expect(await page.evaluate(() => document.activeElement?.getAttribute("data-testid"))).toBe(
      "repo-search",
    );
    await page.keyboard.type("ap", { delay: 40 });
    await waitForRepos(["api", "app"]);
    await page.keyboard.type("p", { delay: 40 });
    await waitForRepos(["app"]);
    expect(new URL(page.url()).searchParams.get("q")).toBe("app");
    await screenshots(page, "repositories-search");
    await page.getByRole("link", { name: "app", exact: true }).click();
    await page.waitForURL(`${berth.url}/r/team/app`);
  });

  it("shows a repository's tags with digest, size, platforms, and copies the exact pull command", async () => {
    await page.locator('[data-testid="tag-table"] tbody tr').first().waitFor();
    expect(await columnTexts(page, "tag-table", 0)).toEqual(["1.0", "2.0", "stable"]);
    const digests = await columnTexts(page, "tag-table", 1);
    expect(digests[0]).toBe(app10.digest.slice(7, 19));
    expect(digests[2]).toBe(digests[0]);
    expect((await columnTexts(page, "tag-table", 2))[0]).toBe("linux/amd64");
    expect((await columnTexts(page, "tag-table", 3))[0]).toBe("27.6 MB");
    // Created (from the image config) and pushed (by the registry).
    expect((await columnTexts(page, "tag-table", 4))[0]).toMatch(/May 2024|ago/);
    expect((await columnTexts(page, "tag-table", 5))[0]).toMatch(/just now|minute/);
    await screenshots(page, "repository");

    const host = new URL(berth.url).host;
    await page
      .locator('tr[data-tag="1.0"]')
      .getByRole("button", { name: /^Copy: docker pull/ })
      .click();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(
      `docker pull ${host}/team/app:1.0`,
    );
    // The short digest copies the full one.
    await page.locator('tr[data-tag="1.0"]').getByRole("button", { name: "Copy the full digest" }).click();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(app10.digest);
    // Sorting by date puts the last pushed tag first.
    await page.locator("select").filter({ hasText: "Date pushed" }).selectOption("date");
    await page.waitForFunction(
      () => document.querySelector('[data-testid="tag-table"] tbody tr')?.getAttribute("data-tag") === "2.0",
    );
  });

  it("opens a tag and shows its config, layers and history as Dockerfile steps", async () => {
    await page.getByRole("link", { name: "1.0", exact: true }).click();
    await page.waitForURL(`${berth.url}/r/team/app:1.0`);
    await page.locator('[data-testid="layers"]').waitFor();
    const layerRows = page.locator('[data-testid="layers"] tbody tr');
    expect(await layerRows.count()).toBe(3);
    expect(await layerRows.nth(1).innerText()).toMatch(/tar\+gzip[\s\S]*24\.0 MB/);
    const steps = await page.locator('[data-testid="history"] li .step').allInnerTexts();
    expect(steps).toEqual([
      "ADD file:5b1d2c7e0a8f in /",
      'CMD ["/bin/sh"]',
      "WORKDIR /app",
      "ENV NODE_ENV=production",
      "RUN apk add --no-cache curl ca-certificates",
      "COPY . .",
      "EXPOSE 8080/tcp",
      "USER app",
      'ENTRYPOINT ["node", "server.js"]',
    ]);
    const config = await page.locator('[data-testid="config"]').innerText();
    expect(config).toContain('["node", "server.js"]');
    expect(config).toContain("/app");
    expect(config).toContain("8080/tcp");
    const summary = await page.locator('[data-testid="summary"]').innerText();
    expect(summary).toContain(app10.digest);
    expect(summary).toMatch(/1\.0\s+stable/);
    const host = new URL(berth.url).host;
    await page.getByTestId("command").getByRole("button").click();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(
      `docker pull ${host}/team/app:1.0`,
    );
    await screenshots(page, "image");
  });

  it("shows a multi-platform index: each platform, its image, and referrers with artifact types", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Repositories" }).click();
    await page.getByRole("link", { name: "web", exact: true }).click();
    await page.locator('tr[data-tag="latest"]').waitFor();
    expect(await page.locator('tr[data-tag="latest"] td[data-label="Platforms"]').innerText()).toMatch(
      /linux\/amd64\s+linux\/arm64\/v8/,
    );
    await page.getByRole("link", { name: "latest", exact: true }).click();
    await page.waitForURL(`${berth.url}/r/team/web:latest`);
    await page.locator('[data-testid="platforms"]').waitFor();
    expect(await columnTexts(page, "platforms", 0)).toEqual(["linux/amd64", "linux/arm64/v8"]);
    expect(await page.locator('[data-testid="index-others"]').innerText()).toContain("attestation for");
    // The chosen platform's image is shown on the same page; switching loads the other one.
    await page.locator('[data-testid="history"]').waitFor();
    await page.getByRole("button", { name: "linux/arm64/v8" }).click();
    await page.waitForFunction(() =>
      document
        .querySelector('[data-testid="layers"] tbody tr td:last-child')
        ?.textContent?.includes("3.30 MB"),
    );
    const referrers = await columnTexts(page, "referrers", 0);
    expect(referrers.sort()).toEqual(["SPDX SBOM", "Sigstore bundle"]);
    await screenshots(page, "index");
  });

  it("deletes a tag behind a confirmation; the sibling tag on the same image stays", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Repositories" }).click();
    await page.getByRole("link", { name: "app", exact: true }).click();
    await page.waitForURL(`${berth.url}/r/team/app`);
    await page.locator('tr[data-tag="1.0"]').waitFor();
    await page.getByRole("button", { name: "Delete tag 1.0" }).click();
    const dialog = page.locator("dialog[open]");
    await dialog.waitFor();
    expect(await dialog.innerText()).toContain("stable");
    await screenshots(page, "delete-tag-dialog");
    // Escape cancels.
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });
    expect(await page.locator('tr[data-tag="1.0"]').count()).toBe(1);
    await page.getByRole("button", { name: "Delete tag 1.0" }).click();
    await page.locator("dialog[open]").getByRole("button", { name: "Delete tag" }).click();
    await page.locator('tr[data-tag="1.0"]').waitFor({ state: "detached" });
    expect(await columnTexts(page, "tag-table", 0)).toContain("stable");
    expect(await page.getByRole("status").filter({ hasText: "Deleted tag 1.0" }).count()).toBe(1);
    const left = await getJson(
      { base: berth.url, authorization: basic("editor", "editor-pw") },
      "/api/v1/repositories/team/app/-/tags",
    );
    expect(left.body.items.map((t: { name: string; digest: string }) => [t.name, t.digest])).toContainEqual([
      "stable",
      app10.digest,
    ]);
    expect(left.body.items.map((t: { name: string }) => t.name)).not.toContain("1.0");
  });

  it("shows storage per repository; registry-wide totals only to those who may pull everything", async () => {
    await page.getByRole("link", { name: "Storage" }).click();
    await page.waitForURL(`${berth.url}/storage`);
    await page.locator('[data-testid="usage-table"]').waitFor();
    // editor may not pull every repository: the registry's totals are not for it (an admin sees them).
    await page.getByTestId("usage-totals-hidden").waitFor();
    expect(await page.getByTestId("usage-total").count()).toBe(0);
    const names = await columnTexts(page, "usage-table", 0);
    expect(names).toContain("team/app");
    // editor cannot pull tools/ci/runner, so it is not listed.
    expect(names).not.toContain("tools/ci/runner");
    await screenshots(page, "storage");
  });

  it("never reloaded the page while moving around", async () => {
    expect(await page.evaluate(() => (window as unknown as { berthMarker?: string }).berthMarker)).toBe(
      "still-here",
    );
    await page.goBack();
    await page.waitForURL(/\/r\/team\/app$/);
    expect(await page.evaluate(() => (window as unknown as { berthMarker?: string }).berthMarker)).toBe(
      "still-here",
    );
  });

  it("logs out", async () => {
    await page.getByRole("button", { name: "Log out" }).click();
    await page.getByRole("link", { name: "Log in" }).waitFor();
    await page.waitForURL(`${berth.url}/`);
    await waitForRepos(["hello"]);
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
  });

  it("shows no delete buttons to a user who may not delete, and the API refuses them", async () => {
    await logIn("reader", "reader-pw");
    await page.goto(`${berth.url}/r/team/app`);
    await page.locator('[data-testid="tag-table"] tbody tr').first().waitFor();
    await page.locator('[data-testid="repo-stats"]').waitFor();
    expect(await page.getByRole("button", { name: /Delete/ }).count()).toBe(0);
    await page.goto(`${berth.url}/r/team/app:stable`);
    await page.locator('[data-testid="layers"]').waitFor();
    expect(await page.getByRole("button", { name: /Delete/ }).count()).toBe(0);
    await screenshots(page, "image-reader");
    // Trying anyway, from the logged-in page with the stored credentials.
    const status = await page.evaluate(async () => {
      const res = await fetch("/api/v1/repositories/team/app/-/tags/stable", {
        method: "DELETE",
        headers: { Authorization: sessionStorage.getItem("berth.credentials") ?? "" },
      });
      return res.status;
    });
    expect(status).toBe(403);
    await page.goto(`${berth.url}/r/team/app`);
    await page.locator('tr[data-tag="stable"]').waitFor();
  });

  it("shows a login error and a denied page clearly", async () => {
    await page.getByRole("button", { name: "Log out" }).click();
    await page.getByRole("link", { name: "Log in" }).first().click();
    await page.getByLabel("User name").fill("reader");
    await page.getByLabel("Password").fill("wrong");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("alert").filter({ hasText: "Wrong user name or password" }).waitFor();
    await screenshots(page, "login-error");
    await page.goto(`${berth.url}/r/team/app`);
    await page.getByRole("heading", { name: "Log in to see this" }).waitFor();
  });

  it("had no console errors or CSP violations", () => {
    // The failed login and an anonymous visit to a private repository answer 401, the refused delete 403:
    // the browser logs those responses; nothing else may appear.
    const unexpected = w.problems.filter((p) => !/status of 40[13]/.test(p));
    expect(unexpected).toEqual([]);
  });
});
