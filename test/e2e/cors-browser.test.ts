/**
 * A page on another origin lists tags through Berth with CORS, as joxit/docker-registry-ui does:
 * headless chromium, Berth configured with the headers from that UI's documentation, htpasswd auth,
 * and a fetch that sends Authorization (so the browser sends a preflight first, without credentials).
 */
import { execFileSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryClient } from "../helpers/registry.js";
import { type Berth, freePort, startBerth, tempDir } from "../helpers/server.js";

const CHROMIUM = "/usr/bin/chromium";
const basic = `Basic ${Buffer.from("ui:ui-password").toString("base64")}`;

let berth: Berth;
let browser: Browser;
let page: http.Server;
let pageOrigin: string;
let strangerOrigin: string;
let stranger: http.Server;

function servePage(port: number): Promise<http.Server> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>registry ui</title><p>ui</p>");
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

beforeAll(async () => {
  const dir = tempDir("berth-e2e-cors-");
  const htpasswd = path.join(dir, "htpasswd");
  writeFileSync(htpasswd, execFileSync("htpasswd", ["-Bbn", "ui", "ui-password"]));
  const pagePort = await freePort();
  pageOrigin = `http://127.0.0.1:${pagePort}`;
  // Same host, another port: another origin. And `localhost` is a third one, not allowed.
  strangerOrigin = `http://localhost:${await freePort()}`;
  berth = await startBerth({
    env: {
      REGISTRY_AUTH: "htpasswd",
      REGISTRY_AUTH_HTPASSWD_REALM: "Registry Realm",
      REGISTRY_AUTH_HTPASSWD_PATH: htpasswd,
      "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Origin": `[${pageOrigin}]`,
      "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Methods": "[HEAD,GET,OPTIONS,DELETE]",
      "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Credentials": "[true]",
      "REGISTRY_HTTP_HEADERS_Access-Control-Allow-Headers": "[Authorization,Accept,Cache-Control]",
      "REGISTRY_HTTP_HEADERS_Access-Control-Expose-Headers": "[Docker-Content-Digest]",
      REGISTRY_STORAGE_DELETE_ENABLED: "true",
    },
  });
  const client = new RegistryClient(berth.url, { authorization: basic });
  const image = await client.pushImage("ui/demo", "v1");
  await client.putManifest("ui/demo", "v2", image.manifest);
  page = await servePage(pagePort);
  stranger = await servePage(Number(strangerOrigin.split(":")[2]));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"],
  });
});

afterAll(async () => {
  await browser?.close();
  await new Promise((r) => (page ? page.close(r) : r(undefined)));
  await new Promise((r) => (stranger ? stranger.close(r) : r(undefined)));
  await berth?.cleanup();
});

interface Outcome {
  ok: boolean;
  status?: number;
  tags?: string[];
  digest?: string | null;
  error?: string;
}

async function fetchFrom(
  origin: string,
  target: string,
  init: { auth?: boolean; credentials?: RequestCredentials; accept?: string },
): Promise<Outcome> {
  const ctx = await browser.newContext();
  try {
    const tab = await ctx.newPage();
    await tab.goto(`${origin}/`);
    return await tab.evaluate(
      async ({ target, auth, basic, credentials, accept }) => {
        try {
          const res = await fetch(target, {
            headers: auth ? { Authorization: basic, Accept: accept } : {},
            credentials,
          });
          const body = res.ok ? await res.json() : undefined;
          return {
            ok: res.ok,
            status: res.status,
            tags: body?.tags,
            digest: res.headers.get("Docker-Content-Digest"),
          };
        } catch (err) {
          return { ok: false, error: String(err) };
        }
      },
      {
        target,
        auth: init.auth ?? false,
        basic,
        credentials: init.credentials ?? "same-origin",
        accept: init.accept ?? "application/json",
      },
    );
  } finally {
    await ctx.close();
  }
}

describe.skipIf(!existsSync(CHROMIUM))("CORS from a browser", () => {
  it("a page on another origin lists tags with an Authorization header (preflight, then GET)", async () => {
    const before = berth.logs.filter((l) => l.includes('"method":"OPTIONS"')).length;
    const out = await fetchFrom(pageOrigin, `${berth.url}/v2/ui/demo/tags/list`, {
      auth: true,
      credentials: "include",
    });
    expect(out.error).toBeUndefined();
    expect(out.status).toBe(200);
    expect(out.tags?.sort()).toEqual(["v1", "v2"]);
    // The browser did send a preflight, and it was answered without credentials.
    const after = berth.logs.filter(
      (l) => l.includes('"method":"OPTIONS"') && l.includes('"status":204'),
    ).length;
    expect(after).toBeGreaterThan(before);
  });

  it("reads an exposed header (Docker-Content-Digest) from a manifest HEAD/GET", async () => {
    const out = await fetchFrom(pageOrigin, `${berth.url}/v2/ui/demo/manifests/v1`, {
      auth: true,
      accept: "application/vnd.oci.image.manifest.v1+json",
    });
    expect(out.status).toBe(200);
    expect(out.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it("without credentials the page sees Berth's 401, not a CORS failure", async () => {
    const out = await fetchFrom(pageOrigin, `${berth.url}/v2/ui/demo/tags/list`, {});
    expect(out.error).toBeUndefined();
    expect(out.status).toBe(401);
  });

  it("a page on an origin that is not allowed is blocked by the browser", async () => {
    const out = await fetchFrom(strangerOrigin, `${berth.url}/v2/ui/demo/tags/list`, { auth: true });
    expect(out.ok).toBe(false);
    expect(out.error).toMatch(/Failed to fetch|TypeError/);
  });
});
