// The access matrix: users and groups × repositories × pull/push/delete, over HTTP against a real
// Berth, in htpasswd (Basic) mode and in token mode. Every case checks the exact status, and every
// refused case checks that nothing changed.
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { blobOf, OCI_MANIFEST, RegistryClient, randomBlob, sha256 } from "../helpers/registry.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { basic, htpasswdText } from "./auth-fixtures.js";

const PASSWORDS: Record<string, string> = {
  admin: "admin-pw",
  olga: "olga-pw", // admin through the ops group
  alice: "alice-pw", // team-a: pull+push on team-a/*, plus delete on team-a/* as a user rule
  bob: "bob-pw", // team-b: everything on team-b/*
  carol: "carol-pw", // readers: pull on *
  dave: "dave-pw", // no grants: only what anonymous callers get
};
const USERS = [...Object.keys(PASSWORDS), "anonymous"] as const;
const REPOS = ["team-a/app", "team-b/app", "public/app", "other/app"] as const;
type Act = "pull" | "push" | "delete";

function configYaml(htpasswd: string, token: boolean): string {
  return [
    "auth:",
    "  htpasswd:",
    "    realm: Matrix",
    `    path: ${htpasswd}`,
    ...(token ? ["  token:", "    service: matrix-registry", "    issuer: matrix-issuer"] : []),
    "  throttle:",
    "    enabled: false",
    "  access:",
    "    admins:",
    "      users: [admin]",
    "      groups: [ops]",
    "    groups:",
    "      ops: [olga]",
    "      team-a: [alice]",
    "      team-b: [bob]",
    "      readers: [carol]",
    "    anonymous:",
    '      pull: ["public/*"]',
    "    rules:",
    '      - { repositories: ["team-a/*"], groups: [team-a], actions: [pull, push] }',
    '      - { repository: "team-a/*", users: [alice], actions: [delete] }',
    '      - { repository: "team-b/*", groups: [team-b], actions: ["*"] }',
    '      - { repository: "*", groups: [readers], actions: [pull] }',
    "storage:",
    "  delete:",
    "    enabled: true",
    "",
  ].join("\n");
}

/** What each user may do on each repository, written out by hand (not computed by the rules engine). */
function allowed(user: string, repo: string, act: Act): boolean {
  if (user === "admin" || user === "olga") return true;
  const team = repo.split("/")[0];
  if (act === "pull" && repo.startsWith("public/")) return true;
  switch (user) {
    case "alice":
      return team === "team-a";
    case "bob":
      return team === "team-b";
    case "carol":
      return act === "pull";
    default:
      return false;
  }
}

for (const mode of ["basic", "token"] as const) {
  describe(`access matrix (${mode})`, () => {
    let berth: Berth;
    let admin: RegistryClient;
    const seeded = new Map<string, { digest: string; layer: string }>();

    /** Headers for `user` doing something that needs `scopes` (a token fetched as docker would in token mode). */
    async function headersFor(user: string, scopes: string[]): Promise<Record<string, string>> {
      const creds = user === "anonymous" ? undefined : basic(user, PASSWORDS[user]!);
      if (mode === "basic") return creds ? { authorization: creds } : {};
      const qs = new URLSearchParams([["service", "matrix-registry"], ...scopes.map((s) => ["scope", s])]);
      const res = await fetch(`${berth.url}/auth/token?${qs}`, {
        headers: creds ? { authorization: creds } : {},
      });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { token: string };
      return { authorization: `Bearer ${body.token}` };
    }

    async function client(user: string, scopes: string[]) {
      return new RegistryClient(berth.url, await headersFor(user, scopes));
    }

    /** The status a refusal must have: Basic mode 401 for anonymous and 403 for a known user; token mode 401. */
    function refusal(user: string): number {
      return mode === "token" || user === "anonymous" ? 401 : 403;
    }

    function expectRefusal(res: Response, user: string) {
      expect(res.status).toBe(refusal(user));
      const challenge = res.headers.get("www-authenticate");
      if (res.status === 401) {
        if (mode === "basic") expect(challenge).toBe('Basic realm="Matrix"');
        else
          expect(challenge).toMatch(
            /^Bearer realm="[^"]+\/auth\/token",service="matrix-registry",scope="repository:[^"]+",error="insufficient_scope"$/,
          );
      }
    }

    beforeAll(async () => {
      const dir = tempDir("berth-matrix-");
      const htpasswd = path.join(dir, "htpasswd");
      fs.writeFileSync(htpasswd, htpasswdText(PASSWORDS));
      fs.writeFileSync(path.join(dir, "config.yml"), configYaml(htpasswd, mode === "token"));
      berth = await startBerth({ args: ["--config", path.join(dir, "config.yml")] });
      for (const repo of REPOS) {
        admin = await client("admin", [`repository:${repo}:pull,push,delete`]);
        const pushed = await admin.pushImage(repo, "v1");
        seeded.set(repo, { digest: pushed.digest, layer: pushed.layers[0]!.digest });
      }
    });
    afterAll(async () => {
      await berth?.cleanup();
    });

    describe.each(USERS)("%s", (user) => {
      it.each(REPOS)("pull %s", async (repo) => {
        const c = await client(user, [`repository:${repo}:pull`]);
        const seed = seeded.get(repo)!;
        const manifest = await c.fetch(`/v2/${repo}/manifests/v1`, { headers: { accept: OCI_MANIFEST } });
        const blob = await c.fetch(`/v2/${repo}/blobs/${seed.layer}`, { method: "HEAD" });
        const tags = await c.fetch(`/v2/${repo}/tags/list`);
        if (allowed(user, repo, "pull")) {
          expect(manifest.status).toBe(200);
          expect(sha256(Buffer.from(await manifest.arrayBuffer()))).toBe(seed.digest);
          expect(blob.status).toBe(200);
          expect(tags.status).toBe(200);
        } else {
          expectRefusal(manifest, user);
          expect(blob.status).toBe(refusal(user));
          expectRefusal(tags, user);
        }
      });

      it.each(REPOS)("push %s", async (repo) => {
        const c = await client(user, [`repository:${repo}:pull,push`]);
        const tag = `pushed-by-${user}`;
        const layer = randomBlob(512);
        const config = blobOf(JSON.stringify({ architecture: "amd64", os: "linux", who: user, repo }));
        const check = await client("admin", [`repository:${repo}:pull`]);
        if (allowed(user, repo, "push")) {
          const pushed = await c.pushImage(repo, tag, { layers: [layer], config: { who: user, repo } });
          expect(
            (
              await check.fetch(`/v2/${repo}/manifests/${tag}`, {
                method: "HEAD",
                headers: { accept: OCI_MANIFEST },
              })
            ).status,
          ).toBe(200);
          expect(pushed.digest).toMatch(/^sha256:/);
          return;
        }
        // Each step of a push is refused on its own: starting an upload, a monolithic upload, a manifest.
        expectRefusal(await c.fetch(`/v2/${repo}/blobs/uploads/`, { method: "POST" }), user);
        expectRefusal(
          await c.fetch(`/v2/${repo}/blobs/uploads/?digest=${layer.digest}`, {
            method: "POST",
            body: layer.data,
            headers: { "content-type": "application/octet-stream" },
          }),
          user,
        );
        const seed = seeded.get(repo)!;
        const manifest = {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: {
            mediaType: "application/vnd.oci.image.config.v1+json",
            digest: config.digest,
            size: config.size,
          },
          layers: [
            { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: seed.layer, size: 1024 },
          ],
        };
        expectRefusal(await c.putManifest(repo, tag, manifest), user);
        // Nothing changed: no blob, no tag.
        expect((await check.fetch(`/v2/${repo}/blobs/${layer.digest}`, { method: "HEAD" })).status).toBe(404);
        expect(
          (
            await check.fetch(`/v2/${repo}/manifests/${tag}`, {
              method: "HEAD",
              headers: { accept: OCI_MANIFEST },
            })
          ).status,
        ).toBe(404);
        const tags = (await (await check.fetch(`/v2/${repo}/tags/list`)).json()) as { tags: string[] };
        expect(tags.tags).not.toContain(tag);
      });

      it.each(REPOS)("delete %s", async (repo) => {
        // A manifest of its own for each case, so that deletes do not disturb other cases.
        const seeder = await client("admin", [`repository:${repo}:pull,push,delete`]);
        const victim = await seeder.pushImage(repo, `victim-${user}`, { config: { victim: user, repo } });
        const c = await client(user, [`repository:${repo}:delete`]);
        const res = await c.fetch(`/v2/${repo}/manifests/${victim.digest}`, { method: "DELETE" });
        const blobRes = await c.fetch(`/v2/${repo}/blobs/${victim.layers[0]!.digest}`, { method: "DELETE" });
        const still = await seeder.fetch(`/v2/${repo}/manifests/${victim.digest}`, {
          method: "HEAD",
          headers: { accept: OCI_MANIFEST },
        });
        const blobStill = await seeder.fetch(`/v2/${repo}/blobs/${victim.layers[0]!.digest}`, {
          method: "HEAD",
        });
        if (allowed(user, repo, "delete")) {
          expect(res.status).toBe(202);
          expect(blobRes.status).toBe(202);
          expect(still.status).toBe(404);
          expect(blobStill.status).toBe(404);
        } else {
          expectRefusal(res, user);
          expect(blobRes.status).toBe(refusal(user));
          expect(still.status).toBe(200);
          expect(blobStill.status).toBe(200);
        }
      });
    });

    it("the catalog lists only what the caller may pull", async () => {
      const expected: Record<string, string[]> = {
        admin: [...REPOS].sort(),
        olga: [...REPOS].sort(),
        alice: ["public/app", "team-a/app"],
        bob: ["public/app", "team-b/app"],
        carol: [...REPOS].sort(),
        dave: ["public/app"],
      };
      for (const [user, repos] of Object.entries(expected)) {
        const c = await client(user, ["registry:catalog:*"]);
        const res = await c.fetch("/v2/_catalog");
        expect(res.status, user).toBe(200);
        expect(((await res.json()) as { repositories: string[] }).repositories.sort(), user).toEqual(repos);
      }
      const anon = await (await client("anonymous", ["registry:catalog:*"])).fetch("/v2/_catalog");
      if (mode === "basic") expect(anon.status).toBe(401);
      else expect(((await anon.json()) as { repositories: string[] }).repositories).toEqual(["public/app"]);
    });

    it("a mount needs pull on the source; without it the registry falls back to a plain upload", async () => {
      const fromB = seeded.get("team-b/app")!.layer;
      const fromPublic = seeded.get("public/app")!.layer;
      const c = await client("alice", [
        "repository:team-a/app:pull,push",
        "repository:team-b/app:pull",
        "repository:public/app:pull",
      ]);
      const refused = await c.fetch(`/v2/team-a/app/blobs/uploads/?mount=${fromB}&from=team-b/app`, {
        method: "POST",
      });
      expect(refused.status).toBe(202);
      const check = await client("admin", ["repository:team-a/app:pull"]);
      expect((await check.fetch(`/v2/team-a/app/blobs/${fromB}`, { method: "HEAD" })).status).toBe(404);
      const mounted = await c.fetch(`/v2/team-a/app/blobs/uploads/?mount=${fromPublic}&from=public/app`, {
        method: "POST",
      });
      expect(mounted.status).toBe(201);
      expect((await check.fetch(`/v2/team-a/app/blobs/${fromPublic}`, { method: "HEAD" })).status).toBe(200);
    });

    it("GET /v2/ needs a known caller", async () => {
      const anon = await fetch(`${berth.url}/v2/`);
      expect(anon.status).toBe(401);
      expect(anon.headers.get("www-authenticate")).toMatch(
        mode === "basic" ? /^Basic realm="Matrix"$/ : /^Bearer realm="[^"]+",service="matrix-registry"$/,
      );
      const ok = await (await client("dave", [])).fetch("/v2/");
      expect(ok.status).toBe(200);
    });

    if (mode === "token") {
      it("a mount challenge names both scopes", async () => {
        const layer = seeded.get("public/app")!.layer;
        const res = await fetch(`${berth.url}/v2/team-a/app/blobs/uploads/?mount=${layer}&from=public/app`, {
          method: "POST",
        });
        expect(res.status).toBe(401);
        expect(res.headers.get("www-authenticate")).toContain(
          'scope="repository:team-a/app:pull,push repository:public/app:pull"',
        );
      });

      it("a token for repository A does not open repository B", async () => {
        const c = await client("admin", ["repository:team-a/app:pull,push,delete"]);
        expect(
          (
            await c.fetch("/v2/team-a/app/manifests/v1", {
              method: "HEAD",
              headers: { accept: OCI_MANIFEST },
            })
          ).status,
        ).toBe(200);
        for (const repo of ["team-b/app", "team-a/app2", "team-a", "team-a/app/sub"]) {
          const res = await c.fetch(`/v2/${repo}/manifests/v1`, {
            method: "HEAD",
            headers: { accept: OCI_MANIFEST },
          });
          expect(res.status, repo).toBe(401);
        }
      });
    }
  });
}
