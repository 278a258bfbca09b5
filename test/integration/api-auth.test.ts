import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { basic, type Client, del, getJson, pushImage, usageAfter, writeAuthConfig } from "./api-push.js";

/**
 * Berth's JSON API under htpasswd auth and access rules: the same permissions as the v2 API
 * (pull to read, delete to delete), listings filtered to what the caller may pull, whoami and login.
 */

let berth: Berth;
let configDir: string;
let anonymous: Client;
let admin: Client;
let reader: Client;
let editor: Client;

beforeAll(async () => {
  configDir = tempDir("berth-api-auth-");
  const dir = configDir;
  const config = writeAuthConfig(dir, { admin: "admin-pw", reader: "reader-pw", editor: "editor-pw" });
  berth = await startBerth({
    args: ["--config", config],
    env: { REGISTRY_STORAGE_DELETE_ENABLED: "true", REGISTRY_UI_USAGEINTERVAL: "1s" },
  });
  anonymous = { base: berth.url };
  admin = { base: berth.url, authorization: basic("admin", "admin-pw") };
  reader = { base: berth.url, authorization: basic("reader", "reader-pw") };
  editor = { base: berth.url, authorization: basic("editor", "editor-pw") };
  for (const repo of ["public/hello", "team/app", "team/db", "secret/vault"]) {
    await pushImage(admin, repo, "1", { layers: [{ seed: repo, size: 700 }] });
    await pushImage(admin, repo, "2", { layers: [{ seed: repo, size: 700 }] });
  }
});

afterAll(async () => {
  await berth?.cleanup();
  rmSync(configDir, { recursive: true, force: true });
});

const names = (body: { items: Array<{ name: string }> }) => body.items.map((r) => r.name);

describe("whoami and login", () => {
  it("knows anonymous callers and users", async () => {
    expect((await getJson(anonymous, "/api/v1/whoami")).body).toEqual({
      user: null,
      auth: "htpasswd",
      deleteEnabled: true,
      readOnly: false,
      admin: false,
      notifications: 0,
    });
    expect((await getJson(reader, "/api/v1/whoami")).body).toMatchObject({ user: "reader", admin: false });
    expect((await getJson(admin, "/api/v1/whoami")).body).toMatchObject({ user: "admin", admin: true });
    expect((await getJson(reader, "/api/v1/whoami?login=1")).body.user).toBe("reader");
  });

  it("refuses bad credentials; the UI's own requests get no browser login dialog", async () => {
    const wrong: Client = { base: berth.url, authorization: basic("reader", "nope") };
    const plain = await getJson(wrong, "/api/v1/whoami?login=1");
    expect(plain.status).toBe(401);
    expect(plain.body.errors[0].code).toBe("UNAUTHORIZED");
    expect(plain.headers.get("www-authenticate")).toMatch(/^Basic /);
    const fromUi = await getJson(wrong, "/api/v1/whoami?login=1", { "X-Berth-UI": "1" });
    expect(fromUi.status).toBe(401);
    expect(fromUi.headers.get("www-authenticate")).toBeNull();
    // Logging in without credentials is not logging in.
    expect((await getJson(anonymous, "/api/v1/whoami?login=1")).status).toBe(401);
  });
});

describe("listings show what the caller may pull", () => {
  it("anonymous sees the public repositories only", async () => {
    const list = await getJson(anonymous, "/api/v1/repositories");
    expect(list.status).toBe(200);
    expect(names(list.body)).toEqual(["public/hello"]);
    expect(list.body.namespaces).toEqual([{ name: "public", repositories: 1 }]);
    const usage = await getJson(anonymous, "/api/v1/usage");
    expect(names(usage.body.repositories)).toEqual(["public/hello"]);
    const sorted = await getJson(anonymous, "/api/v1/repositories?sort=size");
    expect(names(sorted.body)).toEqual(["public/hello"]);
  });

  it("registry-wide usage totals only for callers who may pull every repository", async () => {
    for (const caller of [anonymous, reader, editor]) {
      const usage = await getJson(caller, "/api/v1/usage");
      expect(usage.status).toBe(200);
      expect(usage.body.total).toBeNull();
      expect(usage.body.shared).toBeNull();
      expect(usage.body.unlinked).toBeNull();
    }
    const own = await getJson(reader, "/api/v1/usage?sort=name");
    expect(names(own.body.repositories)).toEqual(["public/hello", "team/app", "team/db"]);
    const all = await usageAfter(admin, "/api/v1/usage", Date.now());
    expect(all.body.total.blobs).toBeGreaterThan(0);
    expect(all.body.total.bytes).toBeGreaterThan(0);
    expect(all.body.unlinked).toEqual({ bytes: 0, blobs: 0 });
    expect(all.body.repositories.total).toBe(4);
  });

  it("a reader sees team and public repositories, an admin all", async () => {
    expect(names((await getJson(reader, "/api/v1/repositories")).body)).toEqual([
      "public/hello",
      "team/app",
      "team/db",
    ]);
    expect(names((await getJson(reader, "/api/v1/repositories?q=a")).body)).toEqual(["team/app", "team/db"]);
    expect((await getJson(admin, "/api/v1/repositories")).body.total).toBe(4);
  });

  it("details need pull, with the v2 API's answers", async () => {
    const anon = await getJson(anonymous, "/api/v1/repositories/team/app/-/tags", { "X-Berth-UI": "1" });
    expect(anon.status).toBe(401);
    expect(anon.body.errors[0].code).toBe("UNAUTHORIZED");
    expect(anon.headers.get("www-authenticate")).toBeNull();
    const denied = await getJson(reader, "/api/v1/repositories/secret/vault");
    expect(denied.status).toBe(403);
    expect(denied.body.errors[0].code).toBe("DENIED");
    expect((await getJson(reader, "/api/v1/repositories/secret/vault/-/manifests/1")).status).toBe(403);
    // Nothing tells a reader whether a repository it may not pull exists.
    expect((await getJson(reader, "/api/v1/repositories/secret/nothing")).status).toBe(403);
    expect((await getJson(anonymous, "/api/v1/repositories/public/hello/-/manifests/1")).status).toBe(200);
  });
});

describe("permissions and deletes", () => {
  it("reports what the caller may do on a repository", async () => {
    expect((await getJson(anonymous, "/api/v1/repositories/public/hello")).body.permissions).toEqual({
      pull: true,
      push: false,
      delete: false,
    });
    expect((await getJson(reader, "/api/v1/repositories/team/app")).body.permissions).toEqual({
      pull: true,
      push: false,
      delete: false,
    });
    expect((await getJson(editor, "/api/v1/repositories/team/app")).body.permissions).toEqual({
      pull: true,
      push: true,
      delete: true,
    });
    expect((await getJson(admin, "/api/v1/repositories/secret/vault")).body.permissions).toEqual({
      pull: true,
      push: true,
      delete: true,
    });
    const detail = await getJson(reader, "/api/v1/repositories/team/app/-/manifests/1");
    expect(detail.body.permissions.delete).toBe(false);
  });

  it("refuses deletes to callers without delete, and allows them to those with it", async () => {
    const byReader = await del(reader, "/api/v1/repositories/team/app/-/tags/1");
    expect(byReader.status).toBe(403);
    expect(byReader.body.errors[0].code).toBe("DENIED");
    expect((await del(reader, "/api/v1/repositories/team/app")).status).toBe(403);
    expect((await del(anonymous, "/api/v1/repositories/public/hello/-/tags/1")).status).toBe(401);
    expect((await getJson(reader, "/api/v1/repositories/team/app/-/tags")).body.total).toBe(2);

    expect((await del(editor, "/api/v1/repositories/team/app/-/tags/1")).status).toBe(204);
    expect(names((await getJson(reader, "/api/v1/repositories/team/app/-/tags")).body)).toEqual(["2"]);
    // The editor's rule covers team/* only.
    expect((await del(editor, "/api/v1/repositories/public/hello/-/tags/1")).status).toBe(403);
  });
});

describe("with Berth issuing tokens", () => {
  let tokenBerth: Berth;
  let tokenDir: string;

  beforeAll(async () => {
    tokenDir = tempDir("berth-api-token-");
    const dir = tokenDir;
    const config = writeAuthConfig(dir, { admin: "admin-pw", reader: "reader-pw" }, [
      "  token:",
      "    service: berth-ui-test",
    ]);
    tokenBerth = await startBerth({ args: ["--config", config] });
    await pushImage({ base: tokenBerth.url, authorization: basic("admin", "admin-pw") }, "team/app", "1", {
      layers: [{ seed: "token-mode", size: 300 }],
    });
  });
  afterAll(async () => {
    await tokenBerth?.cleanup();
    rmSync(tokenDir, { recursive: true, force: true });
  });

  it("logs the UI in with the same user names and passwords, and keeps the rules", async () => {
    const r: Client = { base: tokenBerth.url, authorization: basic("reader", "reader-pw") };
    expect((await getJson(r, "/api/v1/whoami?login=1")).body).toMatchObject({
      user: "reader",
      auth: "token",
    });
    expect(names((await getJson(r, "/api/v1/repositories")).body)).toEqual(["team/app"]);
    expect((await getJson(r, "/api/v1/repositories/team/app")).body.permissions).toEqual({
      pull: true,
      push: false,
      delete: false,
    });
    expect((await del(r, "/api/v1/repositories/team/app/-/tags/1")).status).toBe(403);
    const anon = await getJson({ base: tokenBerth.url }, "/api/v1/repositories/team/app", {
      "X-Berth-UI": "1",
    });
    expect(anon.status).toBe(401);
    expect(anon.headers.get("www-authenticate")).toBeNull();
    const plain = await getJson({ base: tokenBerth.url }, "/api/v1/repositories/team/app");
    expect(plain.headers.get("www-authenticate")).toMatch(/^Bearer realm=/);
  });
});
