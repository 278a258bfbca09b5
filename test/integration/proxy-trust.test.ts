// What the pull-through cache may serve and believe (issue 21): a blob stored for a private repository
// never enters a mirrored one unless the upstream confirms it under that name (both URL forms: the
// prefix, and containerd's ?ns=), and a miss writes nothing; a size a manifest declares is a hint of
// that manifest's repository alone, and the upstream's answer and the verified bytes win over it; an
// upstream's redirects lead only where it may send the cache (never out of http(s), and from a loopback
// upstream never into private or link-local ranges: refused before any connection), and its credentials
// go to no token realm off its domain unless configured; an upstream's failure is logged with its cause.
// The upstreams are small registries on loopback (proxy-fixtures.ts).
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { blobOf, RegistryClient, randomBlob, sha256 } from "../helpers/registry.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { basic, htpasswdText } from "./auth-fixtures.js";
import { type FakeUpstream, imageManifest, loggedEntries, startFakeUpstream } from "./proxy-fixtures.js";

const ACCEPT = { accept: "application/vnd.oci.image.manifest.v1+json" };

describe("pull-through cache: trust in the upstream and in the callers", () => {
  let upstream: FakeUpstream;
  let tokened: FakeUpstream;
  let mirror: Berth;
  const alice = { authorization: basic("alice", "alice-pw") };

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    tokened = await startFakeUpstream();
    const dir = tempDir("berth-proxy-trust-");
    const htpasswd = path.join(dir, "htpasswd");
    fs.writeFileSync(htpasswd, htpasswdText({ alice: "alice-pw" }));
    const config = path.join(dir, "config.yml");
    fs.writeFileSync(
      config,
      [
        "auth:",
        "  htpasswd:",
        "    realm: berth",
        `    path: ${htpasswd}`,
        "  throttle:",
        "    enabled: false",
        "  access:",
        '    anonymous: { pull: ["hub/*"] }',
        '    rules: [{ repository: "*", users: [alice], actions: ["*"] }]',
        "proxy:",
        "  upstreams:",
        "    - prefix: hub",
        `      remoteurl: ${upstream.url}`,
        // Two views of an upstream whose token realm is on another host name (localhost): the
        // credentials may go there only when it is listed.
        "    - prefix: tokened",
        `      remoteurl: ${tokened.url}`,
        "      username: puller",
        "      password: realm-secret-pw",
        "    - prefix: listed",
        `      remoteurl: ${tokened.url}`,
        "      username: puller",
        "      password: realm-secret-pw",
        "      realmhosts: [localhost]",
        "",
      ].join("\n"),
    );
    mirror = await startBerth({ args: ["--config", config] });
  });
  afterAll(async () => {
    await mirror?.cleanup();
    await upstream?.close();
    await tokened?.close();
  });

  async function catalog(): Promise<string[]> {
    const res = await fetch(`${mirror.url}/v2/_catalog`, { headers: alice });
    expect(res.status).toBe(200);
    return ((await res.json()) as { repositories: string[] }).repositories;
  }

  it("a private blob is not served through a mirrored name, in either URL form, and nothing is created", async () => {
    const secret = randomBlob(50_000);
    await new RegistryClient(mirror.url, alice).pushImage("private/app", "v1", { layers: [secret] });
    expect((await fetch(`${mirror.url}/v2/private/app/blobs/${secret.digest}`)).status).toBe(401);
    const before = await catalog();
    expect(before).toEqual(["private/app"]);
    for (const url of [
      `/v2/hub/anything/blobs/${secret.digest}`,
      `/v2/whatever/blobs/${secret.digest}?ns=${encodeURIComponent(upstream.host)}`,
    ]) {
      for (const method of ["HEAD", "GET"]) {
        const res = await fetch(`${mirror.url}${url}`, { method });
        expect(res.status, `${method} ${url}`).toBe(404);
        if (method === "GET") {
          const body = (await res.json()) as { errors: { code: string }[] };
          expect(body.errors[0]?.code).toBe("BLOB_UNKNOWN");
        }
      }
    }
    // The upstream was asked, under the remote names; the misses left no repository behind.
    expect(upstream.count("HEAD", `/v2/anything/blobs/${secret.digest}`)).toBeGreaterThan(0);
    expect(upstream.count("HEAD", `/v2/whatever/blobs/${secret.digest}`)).toBeGreaterThan(0);
    expect(await catalog()).toEqual(before);
  });

  it("a stored blob that the upstream confirms under the remote name is linked, not fetched again", async () => {
    const shared = randomBlob(40_000);
    await new RegistryClient(mirror.url, alice).pushImage("private/other", "v1", { layers: [shared] });
    upstream.addBlob("library/shared", shared.data);
    const res = await fetch(`${mirror.url}/v2/hub/library/shared/blobs/${shared.digest}`);
    expect(res.status).toBe(200);
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(shared.digest);
    expect(upstream.count("HEAD", `/v2/library/shared/blobs/${shared.digest}`)).toBe(1);
    expect(upstream.count("GET", `/v2/library/shared/blobs/${shared.digest}`)).toBe(0);
  });

  it("a manifest that declares a wrong size for a shared layer poisons neither its own pulls nor others'", async () => {
    const layer = randomBlob(300_000);
    const config = blobOf('{"architecture":"amd64","os":"linux"}');
    for (const repo of ["evil/app", "good/app"]) {
      upstream.addBlob(repo, layer.data);
      upstream.addBlob(repo, config.data);
    }
    upstream.addManifest("evil/app", "latest", imageManifest(config, [{ digest: layer.digest, size: 1 }]));
    upstream.addManifest("good/app", "latest", imageManifest(config, [layer]));
    expect((await fetch(`${mirror.url}/v2/hub/evil/app/manifests/latest`, { headers: ACCEPT })).status).toBe(
      200,
    );
    // Another repository's HEAD is not answered from the lying manifest.
    const head = await fetch(`${mirror.url}/v2/hub/good/app/blobs/${layer.digest}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(layer.size));
    // The lying repository's own GET gets the upstream's verified bytes, with their true length.
    for (const repo of ["evil/app", "good/app", "evil/app"]) {
      const res = await fetch(`${mirror.url}/v2/hub/${repo}/blobs/${layer.digest}`);
      expect(res.status, repo).toBe(200);
      expect(res.headers.get("content-length")).toBe(String(layer.size));
      expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(layer.digest);
    }
    const again = await fetch(`${mirror.url}/v2/hub/evil/app/blobs/${layer.digest}`, { method: "HEAD" });
    expect(again.headers.get("content-length")).toBe(String(layer.size));
    // Fetched once; the other repository's copy was linked after the upstream confirmed it.
    expect(upstream.count("GET", `/blobs/${layer.digest}`)).toBe(1);
  });

  it("follows an upstream's redirect only to http(s) destinations it may send the cache to", async () => {
    const blob = randomBlob(20_000);
    const port = new URL(upstream.url).port;
    const targets: Record<string, string> = {
      scheme: "ftp://127.0.0.1/blob",
      file: "file:///etc/passwd",
      private: "http://10.255.255.1/blob",
      linklocal: "http://169.254.169.254/latest/meta-data",
      mapped: "http://[::ffff:a9fe:a9fe]/latest",
      loopback: `http://127.0.0.1:${port}/cdn/${blob.digest}`,
    };
    upstream.override = (req, res) => {
      const m = /^\/v2\/redir\/(\w+)\/blobs\/(sha256:[0-9a-f]+)$/.exec(req.url ?? "");
      if (m && targets[m[1]!]) {
        res.writeHead(307, { location: targets[m[1]!]! });
        res.end();
        return true;
      }
      if (req.url === `/cdn/${blob.digest}`) {
        res.writeHead(200, { "content-length": blob.size });
        res.end(req.method === "HEAD" ? undefined : blob.data);
        return true;
      }
      return false;
    };
    try {
      for (const kind of ["scheme", "file", "private", "linklocal", "mapped"]) {
        const res = await fetch(`${mirror.url}/v2/hub/redir/${kind}/blobs/${blob.digest}`);
        expect(res.status, kind).toBe(503);
        expect(((await res.json()) as { errors: { code: string }[] }).errors[0]?.code).toBe("UNAVAILABLE");
      }
      // The server log names the cause, at warn level.
      const warnings = (await loggedEntries(
        mirror,
        (e) => e.msg === "proxy: the upstream failed a request" && e.level === 40 && e.kind === "redirect",
        5,
      )) as { reason?: string }[];
      expect(warnings.length).toBeGreaterThanOrEqual(5);
      const reasons = () => mirror.logs.join("\n");
      expect(reasons()).toContain("redirected to a ftp URL");
      expect(reasons()).toContain("a private address (10.255.255.1)");
      expect(reasons()).toContain("a link-local address (169.254.169.254)");
      // A loopback upstream may send the cache to loopback (its own CDN, say).
      const ok = await fetch(`${mirror.url}/v2/hub/redir/loopback/blobs/${blob.digest}`);
      expect(ok.status).toBe(200);
      expect(sha256(Buffer.from(await ok.arrayBuffer()))).toBe(blob.digest);
    } finally {
      upstream.override = null;
    }
  });

  it("sends the upstream's credentials to no token realm off its domain unless it is listed", async () => {
    const port = new URL(tokened.url).port;
    const image = imageManifest({ digest: sha256("{}"), size: 2 }, []);
    tokened.addManifest("team/app", "v1", image);
    tokened.override = (req, res) => {
      if (req.url?.startsWith("/token")) {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ token: "upstream-token", expires_in: 300 }));
        return true;
      }
      if (req.headers.authorization !== "Bearer upstream-token") {
        res.writeHead(401, {
          "www-authenticate": `Bearer realm="http://localhost:${port}/token",service="fake"`,
          "content-type": "application/json",
        });
        res.end('{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}');
        return true;
      }
      return false;
    };
    const refused = await fetch(`${mirror.url}/v2/tokened/team/app/manifests/v1`, {
      headers: { ...ACCEPT, ...alice },
    });
    expect(refused.status).toBe(503);
    expect(tokened.count("GET", "/token")).toBe(0);
    const refusal = await loggedEntries(
      mirror,
      (e) => typeof e.reason === "string" && e.reason.includes("token realm http://localhost"),
    );
    expect(String(refusal[0]?.reason)).toContain("realmhosts");
    const listed = await fetch(`${mirror.url}/v2/listed/team/app/manifests/v1`, {
      headers: { ...ACCEPT, ...alice },
    });
    expect(listed.status).toBe(200);
    const tokenRequests = tokened.requests.filter((r) => r.path.startsWith("/token"));
    expect(tokenRequests.length).toBe(1);
    expect(tokenRequests[0]?.authorization).toBe(basic("puller", "realm-secret-pw"));
    expect(mirror.logs.join("\n")).not.toContain("realm-secret-pw");
  });
});
