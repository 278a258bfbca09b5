import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, startBerth } from "../helpers/server.js";
import {
  buildkitHistory,
  type Client,
  getJson,
  type PushedImage,
  pushAttestation,
  pushImage,
  pushIndex,
  pushReferrer,
  usageAfter,
} from "./api-push.js";

/**
 * Berth's JSON API for the web UI, read side, against a real server with real pushed images:
 * listings, search, sorting, paging, sizes, platforms, image details, referrers and storage usage;
 * and the UI's static files on the same port.
 */

let berth: Berth;
let c: Client;
const base = { seed: "shared-base-layer", size: 300_000 };
let alpine: PushedImage;
let api: PushedImage;
let amd: PushedImage;
let arm: PushedImage;
let attestationSize: number;
let indexDigest: string;
let indexSize: number;

const webSpec = (architecture: string, variant?: string) => ({
  layers: [
    base,
    { seed: `deps-${architecture}`, size: 200_000 },
    { seed: `app-${architecture}`, size: 12_000 },
  ],
  architecture,
  variant,
  workingDir: "/app",
  env: ["PATH=/usr/local/bin:/usr/bin:/bin", "NODE_ENV=production"],
  exposedPorts: ["8080/tcp", "9090/tcp"],
  user: "app",
  entrypoint: ["node", "server.js"],
  cmd: ["--port", "8080"],
  labels: {
    "org.opencontainers.image.source": "https://example.com/team/web",
    "org.opencontainers.image.version": "1.4.2",
  },
  history: buildkitHistory(),
  annotations: { "org.opencontainers.image.title": "web" },
});

beforeAll(async () => {
  berth = await startBerth({
    env: { REGISTRY_STORAGE_DELETE_ENABLED: "true", REGISTRY_UI_USAGEINTERVAL: "1s" },
  });
  c = { base: berth.url };
  const alpineSpec = {
    layers: [base],
    cmd: ["/bin/sh"],
    history: [
      { created_by: "/bin/sh -c #(nop) ADD file:abc in / " },
      { created_by: '/bin/sh -c #(nop)  CMD ["/bin/sh"]', empty_layer: true },
    ],
  };
  alpine = await pushImage(c, "library/alpine", "3.19", alpineSpec);
  await pushImage(c, "library/alpine", "latest", alpineSpec);
  amd = await pushImage(c, "team/web", null, webSpec("amd64"));
  arm = await pushImage(c, "team/web", null, webSpec("arm64", "v8"));
  const attestation = await pushAttestation(c, "team/web", amd);
  attestationSize = attestation.totalSize;
  const index = await pushIndex(c, "team/web", "1.4.2", [amd, arm, attestation], {
    "org.opencontainers.image.revision": "abc123",
  });
  indexDigest = index.digest;
  indexSize = index.size;
  await pushIndex(c, "team/web", "latest", [amd, arm, attestation], {
    "org.opencontainers.image.revision": "abc123",
  });
  await pushReferrer(c, "team/web", amd, "application/spdx+json", { spdxVersion: "SPDX-2.3" });
  await pushReferrer(c, "team/web", amd, "application/vnd.dev.cosign.artifact.sig.v1+json", {
    sig: "MEUCIQ",
  });
  api = await pushImage(c, "team/api", "v2", { layers: [base, { seed: "api-layer", size: 80_000 }] });
  // Tags pushed one after another, so that their push times differ.
  for (let i = 0; i < 12; i++) {
    await pushImage(c, "tools/ci/runner", `build-${String(i).padStart(2, "0")}`, {
      layers: [{ seed: `runner-${i}`, size: 1000 + i }],
    });
  }
}, 120_000);

afterAll(async () => {
  await berth?.cleanup();
});

describe("repositories", () => {
  it("lists every repository with tag count, size and last push, grouped by namespace", async () => {
    const { status, body, headers } = await getJson(c, "/api/v1/repositories");
    expect(status).toBe(200);
    expect(headers.get("content-type")).toMatch(/^application\/json/);
    expect(headers.get("cache-control")).toBe("no-store");
    expect(body.total).toBe(4);
    expect(body.items.map((r: { name: string }) => r.name)).toEqual([
      "library/alpine",
      "team/api",
      "team/web",
      "tools/ci/runner",
    ]);
    const byName = Object.fromEntries(body.items.map((r: { name: string }) => [r.name, r]));
    expect(byName["library/alpine"]).toMatchObject({
      namespace: "library",
      tagCount: 2,
      manifestCount: 1,
      size: alpine.totalSize,
    });
    expect(byName["team/api"]).toMatchObject({ namespace: "team", tagCount: 1, size: api.totalSize });
    expect(byName["team/web"]).toMatchObject({ namespace: "team", tagCount: 2 });
    expect(byName["tools/ci/runner"]).toMatchObject({ namespace: "tools/ci", tagCount: 12 });
    for (const r of body.items) {
      expect(r.lastPush).toBeGreaterThan(Date.now() - 300_000);
      expect(r.lastPush).toBeLessThanOrEqual(Date.now());
    }
    expect(body.namespaces).toEqual([
      { name: "library", repositories: 1 },
      { name: "team", repositories: 2 },
      { name: "tools/ci", repositories: 1 },
    ]);
  });

  it("searches by any part of the name", async () => {
    const web = await getJson(c, "/api/v1/repositories?q=WEB");
    expect(web.body.items.map((r: { name: string }) => r.name)).toEqual(["team/web"]);
    const team = await getJson(c, "/api/v1/repositories?q=team/");
    expect(team.body.total).toBe(2);
    // LIKE wildcards in the query are literal characters.
    const wildcard = await getJson(c, "/api/v1/repositories?q=%25");
    expect(wildcard.body.total).toBe(0);
    const underscore = await getJson(c, "/api/v1/repositories?q=_");
    expect(underscore.body.total).toBe(0);
  });

  it("sorts by name, size and last push, both ways", async () => {
    const names = async (qs: string) =>
      (await getJson(c, `/api/v1/repositories?${qs}`)).body.items.map((r: { name: string }) => r.name);
    expect(await names("sort=name&order=desc")).toEqual([
      "tools/ci/runner",
      "team/web",
      "team/api",
      "library/alpine",
    ]);
    const bySize = await getJson(c, "/api/v1/repositories?sort=size");
    const sizes = bySize.body.items.map((r: { size: number }) => r.size);
    expect(sizes).toEqual([...sizes].sort((a, b) => b - a));
    expect(bySize.body.items[0].name).toBe("team/web");
    expect((await names("sort=size&order=asc"))[0]).toBe("tools/ci/runner");
    // runner was pushed last, alpine first.
    const byDate = await names("sort=pushed");
    expect(byDate[0]).toBe("tools/ci/runner");
    expect(byDate[3]).toBe("library/alpine");
    expect(await names("sort=pushed&order=asc")).toEqual([...byDate].reverse());
  });

  it("pages on the server", async () => {
    const page2 = await getJson(c, "/api/v1/repositories?limit=1&page=2");
    expect(page2.body).toMatchObject({ total: 4, page: 2, limit: 1 });
    expect(page2.body.items.map((r: { name: string }) => r.name)).toEqual(["team/api"]);
    const beyond = await getJson(c, "/api/v1/repositories?limit=3&page=5");
    expect(beyond.body.items).toEqual([]);
    expect(beyond.body.total).toBe(4);
    const sizePage = await getJson(c, "/api/v1/repositories?sort=size&limit=2&page=2");
    expect(sizePage.body.items).toHaveLength(2);
  });

  it("filters by namespace", async () => {
    const team = await getJson(c, "/api/v1/repositories?namespace=team");
    expect(team.body.items.map((r: { name: string }) => r.name)).toEqual(["team/api", "team/web"]);
  });

  it("refuses bad parameters with a JSON error", async () => {
    const sort = await getJson(c, "/api/v1/repositories?sort=colour");
    expect(sort.status).toBe(400);
    expect(sort.body.errors[0].code).toBe("UNSUPPORTED");
    const page = await getJson(c, "/api/v1/repositories?page=-1");
    expect(page.status).toBe(400);
    expect(page.body.errors[0].code).toBe("PAGINATION_NUMBER_INVALID");
  });

  it("describes one repository, with what is unique to it and what it shares", async () => {
    const { status, body } = await getJson(c, "/api/v1/repositories/team/api");
    expect(status).toBe(200);
    expect(body).toMatchObject({
      name: "team/api",
      namespace: "team",
      tagCount: 1,
      manifestCount: 1,
      size: api.totalSize,
      shared: base.size,
      unique: api.totalSize - base.size,
      permissions: { pull: true, push: true, delete: true },
    });
    const unknown = await getJson(c, "/api/v1/repositories/team/nothing");
    expect(unknown.status).toBe(404);
    expect(unknown.body.errors[0].code).toBe("NAME_UNKNOWN");
    const invalid = await getJson(c, "/api/v1/repositories/Team/UPPER");
    expect(invalid.status).toBe(400);
    expect(invalid.body.errors[0].code).toBe("NAME_INVALID");
  });
});

describe("tags", () => {
  it("lists tags with digest, size, dates and platforms", async () => {
    const { status, body } = await getJson(c, "/api/v1/repositories/team/web/-/tags");
    expect(status).toBe(200);
    expect(body.total).toBe(2);
    const [first, second] = body.items;
    expect(first.name).toBe("1.4.2");
    expect(second.name).toBe("latest");
    expect(first.digest).toBe(indexDigest);
    expect(first.mediaType).toBe("application/vnd.oci.image.index.v1+json");
    // Every distinct blob once: the shared base layer counts once for both platforms.
    expect(first.size).toBe(indexSize + amd.totalSize + arm.totalSize - base.size + attestationSize);
    // The attestation (unknown/unknown) is not a platform.
    expect(first.platforms).toEqual([
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "arm64", variant: "v8" },
    ]);
    expect(first.created).toBe("2024-05-01T12:00:00Z");
    expect(first.artifactType).toBeNull();
    expect(first.pushed).toBeGreaterThan(Date.now() - 300_000);

    const alpineTags = await getJson(c, "/api/v1/repositories/library/alpine/-/tags");
    expect(alpineTags.body.items.map((t: { name: string; digest: string }) => [t.name, t.digest])).toEqual([
      ["3.19", alpine.digest],
      ["latest", alpine.digest],
    ]);
    expect(alpineTags.body.items[0].size).toBe(alpine.totalSize);
    expect(alpineTags.body.items[0].platforms).toEqual([{ os: "linux", architecture: "amd64" }]);
  });

  it("filters, sorts by name or date, and pages", async () => {
    const path = "/api/v1/repositories/tools/ci/runner/-/tags";
    const filtered = await getJson(c, `${path}?q=build-1`);
    expect(filtered.body.items.map((t: { name: string }) => t.name)).toEqual(["build-10", "build-11"]);
    const newest = await getJson(c, `${path}?sort=date&limit=3`);
    expect(newest.body.items.map((t: { name: string }) => t.name)).toEqual([
      "build-11",
      "build-10",
      "build-09",
    ]);
    const oldest = await getJson(c, `${path}?sort=date&order=asc&limit=2`);
    expect(oldest.body.items.map((t: { name: string }) => t.name)).toEqual(["build-00", "build-01"]);
    const page = await getJson(c, `${path}?limit=5&page=3`);
    expect(page.body).toMatchObject({ total: 12, page: 3, limit: 5 });
    expect(page.body.items.map((t: { name: string }) => t.name)).toEqual(["build-10", "build-11"]);
    const desc = await getJson(c, `${path}?order=desc&limit=1`);
    expect(desc.body.items[0].name).toBe("build-11");
    const none = await getJson(c, `${path}?q=nothing-like-this`);
    expect(none.body).toMatchObject({ total: 0, items: [] });
  });
});

describe("manifest detail", () => {
  it("shows an image: platform, layers, config, history and annotations", async () => {
    const { status, body } = await getJson(c, `/api/v1/repositories/team/web/-/manifests/${amd.digest}`);
    expect(status).toBe(200);
    expect(body).toMatchObject({
      repository: "team/web",
      digest: amd.digest,
      kind: "image",
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      size: amd.size,
      totalSize: amd.totalSize,
      annotations: { "org.opencontainers.image.title": "web" },
      platform: { os: "linux", architecture: "amd64" },
      tags: [],
      parents: [indexDigest],
    });
    expect(body.layers).toEqual(amd.layers);
    expect(body.config).toMatchObject({ digest: amd.config.digest, size: amd.config.size });
    expect(body.config.image).toEqual({
      created: "2024-05-01T12:00:00Z",
      author: null,
      os: "linux",
      architecture: "amd64",
      variant: null,
      entrypoint: ["node", "server.js"],
      cmd: ["--port", "8080"],
      env: ["PATH=/usr/local/bin:/usr/bin:/bin", "NODE_ENV=production"],
      workingDir: "/app",
      exposedPorts: ["8080/tcp", "9090/tcp"],
      user: "app",
      labels: {
        "org.opencontainers.image.source": "https://example.com/team/web",
        "org.opencontainers.image.version": "1.4.2",
      },
      volumes: [],
      stopSignal: null,
    });
    expect(body.history.map((h: { created_by: string }) => h.created_by)).toEqual(
      buildkitHistory().map((h) => h.created_by),
    );
    expect(body.history[1].empty_layer).toBe(true);
  });

  it("lists referrers with their artifact types", async () => {
    const { body } = await getJson(c, `/api/v1/repositories/team/web/-/manifests/${amd.digest}`);
    expect(body.referrers.map((r: { artifactType: string }) => r.artifactType).sort()).toEqual([
      "application/spdx+json",
      "application/vnd.dev.cosign.artifact.sig.v1+json",
    ]);
    const sbom = body.referrers.find(
      (r: { artifactType: string }) => r.artifactType === "application/spdx+json",
    );
    expect(sbom.annotations["org.opencontainers.image.created"]).toBe("2024-05-02T08:00:00Z");
    expect(sbom.size).toBeGreaterThan(0);
    // The referrer itself is an artifact that names its subject.
    const detail = await getJson(c, `/api/v1/repositories/team/web/-/manifests/${sbom.digest}`);
    expect(detail.body).toMatchObject({
      kind: "artifact",
      artifactType: "application/spdx+json",
      subject: amd.digest,
    });
    expect(detail.body.layers[0].annotations["org.opencontainers.image.title"]).toBe("sbom.json");
    expect(detail.body.history).toEqual([]);
  });

  it("shows an index by tag: each platform, the attestation and the tags on it", async () => {
    const { status, body } = await getJson(c, "/api/v1/repositories/team/web/-/manifests/latest");
    expect(status).toBe(200);
    expect(body).toMatchObject({
      kind: "index",
      digest: indexDigest,
      tags: ["1.4.2", "latest"],
      annotations: { "org.opencontainers.image.revision": "abc123" },
      config: null,
      layers: [],
    });
    expect(body.manifests).toHaveLength(3);
    expect(body.manifests[0]).toMatchObject({
      digest: amd.digest,
      platform: { os: "linux", architecture: "amd64" },
      present: true,
      totalSize: amd.totalSize,
    });
    expect(body.manifests[1]).toMatchObject({
      digest: arm.digest,
      platform: { architecture: "arm64", variant: "v8" },
    });
    expect(body.manifests[2]).toMatchObject({
      attestationFor: amd.digest,
      platform: { os: "unknown", architecture: "unknown" },
    });
    expect(body.totalSize).toBe(indexSize + amd.totalSize + arm.totalSize - base.size + attestationSize);
  });

  it("answers unknown manifests and references with the registry's errors", async () => {
    const missing = await getJson(c, `/api/v1/repositories/team/web/-/manifests/sha256:${"0".repeat(64)}`);
    expect(missing.status).toBe(404);
    expect(missing.body.errors[0].code).toBe("MANIFEST_UNKNOWN");
    const tag = await getJson(c, "/api/v1/repositories/team/web/-/manifests/nope");
    expect(tag.status).toBe(404);
    const bad = await getJson(c, "/api/v1/repositories/team/web/-/manifests/sha256:xyz");
    // As in the v2 API: nothing can be stored under a reference that is neither tag nor digest.
    expect(bad.status).toBe(404);
    expect(bad.body.errors[0].code).toBe("MANIFEST_UNKNOWN");
    const route = await getJson(c, "/api/v1/repositories/team/web/-/wat");
    expect(route.status).toBe(404);
    const api404 = await getJson(c, "/api/v1/nothing-here");
    expect(api404.status).toBe(404);
    expect(api404.body.errors[0].code).toBe("NOT_FOUND");
  });
});

describe("usage", () => {
  it("totals storage, per repository, and what repositories share", async () => {
    const { status, body } = await usageAfter(c, "/api/v1/usage?limit=10", Date.now());
    expect(status).toBe(200);
    const repos: Array<{ name: string; size: number; unique: number; shared: number }> =
      body.repositories.items;
    expect(body.repositories.total).toBe(4);
    // The base layer is the only blob in more than one repository.
    expect(body.shared).toEqual({ bytes: base.size, blobs: 1 });
    const sum = repos.reduce((s, r) => s + r.unique, 0);
    expect(body.total.bytes).toBe(sum + base.size);
    expect(body.unlinked).toEqual({ bytes: 0, blobs: 0 });
    for (const r of repos) expect(r.size).toBe(r.unique + r.shared);
    const alpineUsage = repos.find((r) => r.name === "library/alpine")!;
    expect(alpineUsage).toEqual({
      name: "library/alpine",
      size: alpine.totalSize,
      unique: alpine.totalSize - base.size,
      shared: base.size,
    });
    // Largest first.
    expect(repos.map((r) => r.size)).toEqual([...repos.map((r) => r.size)].sort((a, b) => b - a));
    const byName = await getJson(c, "/api/v1/usage?sort=name&q=team");
    expect(byName.body.repositories.items.map((r: { name: string }) => r.name)).toEqual([
      "team/api",
      "team/web",
    ]);
  });
});

describe("whoami", () => {
  it("says that auth is off and deletes are allowed", async () => {
    const { body } = await getJson(c, "/api/v1/whoami");
    expect(body).toEqual({
      user: null,
      auth: "none",
      deleteEnabled: true,
      readOnly: false,
      admin: true,
      notifications: 0,
    });
  });
});

describe("the web UI on the same port", () => {
  it("serves index.html at / and at every client-side route, with a strict CSP", async () => {
    for (const path of [
      "/",
      "/r/team/web",
      "/r/team/web:1.4.2",
      `/r/team/web@${indexDigest}`,
      "/storage",
      "/events",
      "/login",
    ]) {
      const res = await fetch(`${c.base}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
      expect(res.headers.get("cache-control")).toBe("no-cache");
      expect(res.headers.get("content-security-policy")).toContain("default-src 'self'");
      expect(res.headers.get("x-frame-options")).toBe("DENY");
      const html = await res.text();
      expect(html).toContain('<div id="app">');
      // Everything is bundled: no script or stylesheet from another origin.
      expect(html).not.toMatch(/(src|href)="https?:/);
    }
  });

  it("serves hashed assets with long caching, compression and ETags", async () => {
    const html = await (await fetch(`${c.base}/`)).text();
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    const style = /href="(\/assets\/[^"]+\.css)"/.exec(html)?.[1];
    expect(script).toBeTruthy();
    expect(style).toBeTruthy();
    const js = await fetch(`${c.base}${script}`, { headers: { "accept-encoding": "identity" } });
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(js.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    const plain = Buffer.from(await js.arrayBuffer());
    const css = await fetch(`${c.base}${style}`);
    expect(css.headers.get("content-type")).toBe("text/css; charset=utf-8");

    // Node's fetch decompresses by itself; ask over a raw request to see the encoding.
    const { request } = await import("node:http");
    const raw = await new Promise<{ encoding: string | undefined; body: Buffer; etag: string | undefined }>(
      (resolve, reject) => {
        const req = request(`${c.base}${script}`, { headers: { "accept-encoding": "gzip" } }, (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (d: Buffer) => chunks.push(d));
          res.on("end", () =>
            resolve({
              encoding: res.headers["content-encoding"],
              body: Buffer.concat(chunks),
              etag: res.headers.etag,
            }),
          );
        });
        req.on("error", reject);
        req.end();
      },
    );
    expect(raw.encoding).toBe("gzip");
    expect(gunzipSync(raw.body).equals(plain)).toBe(true);
    const again = await fetch(`${c.base}${script}`, { headers: { "if-none-match": raw.etag! } });
    expect(again.status).toBe(304);
    const favicon = await fetch(`${c.base}/favicon.svg`);
    expect(favicon.headers.get("content-type")).toBe("image/svg+xml");
    const missing = await fetch(`${c.base}/assets/nope.js`);
    expect(missing.status).toBe(404);
  });

  it("never answers for the registry's own paths", async () => {
    const v2 = await fetch(`${c.base}/v2/`);
    expect(v2.headers.get("content-type")).toMatch(/^application\/json/);
    expect(v2.headers.get("docker-distribution-api-version")).toBe("registry/2.0");
    for (const path of [
      "/v2/nope/tags/list",
      "/api/v1/unknown",
      "/auth/token",
      "/healthz",
      "/readyz",
      "/metrics",
      "/nope",
    ]) {
      const res = await fetch(`${c.base}${path}`);
      expect(res.headers.get("content-type") ?? "", path).not.toMatch(/^text\/html/);
    }
  });
});
