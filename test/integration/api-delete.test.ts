import { rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { type Client, del, getJson, pushImage, pushIndex } from "./api-push.js";

/** Deletes through Berth's JSON API: tag, manifest, repository, and the registry's rules for them. */

async function v2Status(c: Client, path: string): Promise<number> {
  const res = await fetch(`${c.base}${path}`, {
    method: "HEAD",
    headers: {
      Accept: "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
    },
  });
  return res.status;
}

describe("deleting", () => {
  let berth: Berth;
  let c: Client;

  beforeAll(async () => {
    berth = await startBerth({ env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
    c = { base: berth.url };
  });
  afterAll(async () => {
    await berth?.cleanup();
  });

  it("deletes one tag; the other tags on the same digest stay", async () => {
    const img = await pushImage(c, "app/one", "1.0", { layers: [{ seed: "one", size: 2000 }] });
    await pushImage(c, "app/one", "stable", { layers: [{ seed: "one", size: 2000 }] });
    const res = await del(c, "/api/v1/repositories/app/one/-/tags/1.0");
    expect(res.status).toBe(204);
    const tags = await getJson(c, "/api/v1/repositories/app/one/-/tags");
    expect(tags.body.items.map((t: { name: string }) => t.name)).toEqual(["stable"]);
    expect(await v2Status(c, "/v2/app/one/manifests/1.0")).toBe(404);
    expect(await v2Status(c, "/v2/app/one/manifests/stable")).toBe(200);
    expect(await v2Status(c, `/v2/app/one/manifests/${img.digest}`)).toBe(200);
    const again = await del(c, "/api/v1/repositories/app/one/-/tags/1.0");
    expect(again.status).toBe(404);
    expect(again.body.errors[0].code).toBe("MANIFEST_UNKNOWN");
  });

  it("deletes a manifest by digest with every tag on it", async () => {
    const img = await pushImage(c, "app/two", "a", { layers: [{ seed: "two", size: 2000 }] });
    await pushImage(c, "app/two", "b", { layers: [{ seed: "two", size: 2000 }] });
    const other = await pushImage(c, "app/two", "c", { layers: [{ seed: "two-other", size: 2000 }] });
    expect((await del(c, `/api/v1/repositories/app/two/-/manifests/${img.digest}`)).status).toBe(204);
    expect(await v2Status(c, `/v2/app/two/manifests/${img.digest}`)).toBe(404);
    const tags = await getJson(c, "/api/v1/repositories/app/two/-/tags");
    expect(tags.body.items.map((t: { name: string; digest: string }) => [t.name, t.digest])).toEqual([
      ["c", other.digest],
    ]);
    // A manifest is deleted by digest only; a tag goes through /-/tags/.
    const byTag = await del(c, "/api/v1/repositories/app/two/-/manifests/c");
    expect(byTag.status).toBe(400);
    expect(byTag.body.errors[0].code).toBe("DIGEST_INVALID");
    expect(await v2Status(c, "/v2/app/two/manifests/c")).toBe(200);
  });

  it("deletes an index, leaving its platform images addressable by digest", async () => {
    const amd = await pushImage(c, "app/multi", null, { layers: [{ seed: "m-amd", size: 1000 }] });
    const arm = await pushImage(c, "app/multi", null, {
      layers: [{ seed: "m-arm", size: 1000 }],
      architecture: "arm64",
    });
    const index = await pushIndex(c, "app/multi", "1", [amd, arm]);
    expect((await del(c, `/api/v1/repositories/app/multi/-/manifests/${index.digest}`)).status).toBe(204);
    expect(await v2Status(c, "/v2/app/multi/manifests/1")).toBe(404);
    expect(await v2Status(c, `/v2/app/multi/manifests/${amd.digest}`)).toBe(200);
  });

  it("deletes a whole repository", async () => {
    await pushImage(c, "app/three", "x", { layers: [{ seed: "three", size: 2000 }] });
    await pushImage(c, "app/three", "y", { layers: [{ seed: "three-y", size: 2000 }] });
    expect((await del(c, "/api/v1/repositories/app/three")).status).toBe(204);
    const list = await getJson(c, "/api/v1/repositories?q=app/three");
    expect(list.body.total).toBe(0);
    expect((await getJson(c, "/api/v1/repositories/app/three")).status).toBe(404);
    expect(await v2Status(c, "/v2/app/three/manifests/x")).toBe(404);
    const again = await del(c, "/api/v1/repositories/app/three");
    expect(again.status).toBe(404);
    expect(again.body.errors[0].code).toBe("NAME_UNKNOWN");
  });

  it("refuses invalid names and tags", async () => {
    expect((await del(c, "/api/v1/repositories/App/X")).status).toBe(400);
    const tag = await del(c, "/api/v1/repositories/app/one/-/tags/-bad");
    expect(tag.status).toBe(400);
    expect(tag.body.errors[0].code).toBe("TAG_INVALID");
  });
});

describe("with deletes disabled", () => {
  let berth: Berth;
  let c: Client;
  let dir: string;

  beforeAll(async () => {
    dir = tempDir();
    const config = path.join(dir, "config.yml");
    writeFileSync(config, "storage:\n  delete:\n    enabled: false\n");
    berth = await startBerth({ args: ["--config", config] });
    c = { base: berth.url };
    await pushImage(c, "app/kept", "1", { layers: [{ seed: "kept", size: 500 }] });
  });
  afterAll(async () => {
    await berth?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("tells the UI, and refuses every delete as the v2 API does", async () => {
    expect((await getJson(c, "/api/v1/whoami")).body.deleteEnabled).toBe(false);
    const repo = await getJson(c, "/api/v1/repositories/app/kept");
    expect(repo.body.permissions).toEqual({ pull: true, push: true, delete: false });
    const tag = await getJson(c, "/api/v1/repositories/app/kept/-/tags");
    const manifest = await getJson(
      c,
      `/api/v1/repositories/app/kept/-/manifests/${tag.body.items[0].digest}`,
    );
    expect(manifest.body.permissions.delete).toBe(false);
    for (const p of [
      "/api/v1/repositories/app/kept/-/tags/1",
      `/api/v1/repositories/app/kept/-/manifests/${tag.body.items[0].digest}`,
      "/api/v1/repositories/app/kept",
    ]) {
      const res = await del(c, p);
      expect(res.status, p).toBe(405);
      expect(res.body.errors[0].code).toBe("UNSUPPORTED");
    }
    expect(await v2Status(c, "/v2/app/kept/manifests/1")).toBe(200);
  });
});

describe("read-only", () => {
  let berth: Berth;
  let c: Client;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = tempDir();
    const first = await startBerth({ dataDir });
    await pushImage({ base: first.url }, "app/frozen", "1", { layers: [{ seed: "frozen", size: 500 }] });
    await first.stop();
    berth = await startBerth({ dataDir, args: ["--read-only"] });
    c = { base: berth.url };
  });
  afterAll(async () => {
    await berth?.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("reads work, deletes are refused and the UI is told", async () => {
    expect((await getJson(c, "/api/v1/whoami")).body).toMatchObject({ readOnly: true, deleteEnabled: false });
    expect((await getJson(c, "/api/v1/repositories/app/frozen")).body.permissions).toEqual({
      pull: true,
      push: false,
      delete: false,
    });
    expect((await del(c, "/api/v1/repositories/app/frozen/-/tags/1")).status).toBe(405);
    expect((await getJson(c, "/api/v1/repositories/app/frozen/-/tags")).body.total).toBe(1);
  });
});
