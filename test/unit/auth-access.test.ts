import fs from "node:fs";
import path from "node:path";
import Fastify, { type FastifyInstance } from "fastify";
import * as jose from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateSigningKeyPem, signingKeyFromPem } from "../../src/auth/token.js";
import { type ConfigInput, configSchema } from "../../src/config/schema.js";
import { canList, canPull, getIdentity, registerAuth, requireAccess } from "../../src/http/access.js";
import type { AppContext } from "../../src/http/context.js";
import { sendError } from "../../src/http/errors.js";
import { registerTokenRoutes } from "../../src/http/routes/token.js";
import { basic, htpasswdText, tmp } from "../integration/auth-fixtures.js";

const ACCESS = {
  groups: { devs: ["dev"] },
  anonymous: { pull: ["public/*"] },
  admins: { users: ["admin"] },
  rules: [{ repositories: ["team/*"], groups: ["devs"], actions: ["pull", "push"] }],
};

async function makeApp(auth: ConfigInput["auth"]): Promise<FastifyInstance> {
  const dataDir = tmp();
  const file = path.join(dataDir, "htpasswd");
  fs.writeFileSync(file, htpasswdText({ dev: "devpw", admin: "adminpw", outsider: "outpw" }));
  const config = configSchema.parse({ auth: JSON.parse(JSON.stringify(auth).replaceAll("HTPASSWD", file)) });
  // The key replicas share through the database (src/cli/token-key.ts); one of its own here.
  const tokenKey = signingKeyFromPem(generateSigningKeyPem(), "test");
  const ctx = { config, dataDir, log: undefined, tokenKey } as unknown as AppContext;
  const app = Fastify();
  app.setErrorHandler((err, request, reply) => sendError(err, request, reply));
  await registerAuth(app, ctx);
  await registerTokenRoutes(app, ctx);
  app.get("/v2/", async (request) => {
    await requireAccess(request, []);
    return { who: getIdentity(request)?.subject ?? null };
  });
  app.get<{ Params: { "*": string } }>("/pull/*", async (request) => {
    await requireAccess(request, [{ type: "repository", name: request.params["*"], actions: ["pull"] }]);
    return "pulled";
  });
  app.post<{ Params: { "*": string } }>("/push/*", async (request) => {
    await requireAccess(request, [
      { type: "repository", name: request.params["*"], actions: ["pull", "push"] },
    ]);
    return "pushed";
  });
  app.get("/visible", async (request) =>
    ["public/a", "team/a", "secret/a"].filter((r) => canList(request, r)),
  );
  app.get("/pullable", async (request) =>
    ["public/a", "team/a", "secret/a"].filter((r) => canPull(request, r)),
  );
  await app.ready();
  return app;
}

describe("access with auth off", () => {
  it("allows everything", async () => {
    const app = await makeApp({});
    expect((await app.inject({ url: "/push/x/y", method: "POST" })).statusCode).toBe(200);
    expect((await app.inject({ url: "/visible" })).json()).toEqual(["public/a", "team/a", "secret/a"]);
    expect((await app.inject({ url: "/auth/token" })).statusCode).toBe(404);
    await app.close();
  });
});

describe("access with htpasswd (Basic)", () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await makeApp({ htpasswd: { realm: "Test Realm", path: "HTPASSWD" }, access: ACCESS });
  });
  afterAll(() => app.close());

  it("asks anonymous callers to log in with a Basic challenge", async () => {
    const res = await app.inject({ url: "/v2/" });
    expect(res.statusCode).toBe(401);
    expect(res.headers["www-authenticate"]).toBe('Basic realm="Test Realm"');
    expect(res.json().errors[0].code).toBe("UNAUTHORIZED");
  });

  it("lets anonymous callers pull only the anonymous patterns", async () => {
    expect((await app.inject({ url: "/pull/public/app" })).statusCode).toBe(200);
    const res = await app.inject({ url: "/pull/team/app" });
    expect(res.statusCode).toBe(401);
    expect(res.headers["www-authenticate"]).toMatch(/^Basic /);
  });

  it("treats empty Basic credentials (as containers/image sends) as anonymous", async () => {
    expect(
      (await app.inject({ url: "/pull/public/app", headers: { authorization: basic("", "") } })).statusCode,
    ).toBe(200);
  });

  it("authenticates, authorizes, and answers 403 for what is not granted", async () => {
    expect(
      (await app.inject({ url: "/v2/", headers: { authorization: basic("dev", "devpw") } })).json(),
    ).toEqual({ who: "dev" });
    expect(
      (
        await app.inject({
          url: "/push/team/app",
          method: "POST",
          headers: { authorization: basic("dev", "devpw") },
        })
      ).statusCode,
    ).toBe(200);
    const denied = await app.inject({
      url: "/push/other/app",
      method: "POST",
      headers: { authorization: basic("dev", "devpw") },
    });
    expect(denied.statusCode).toBe(403);
    expect(denied.json().errors[0].code).toBe("DENIED");
    expect(
      (
        await app.inject({
          url: "/push/any/thing",
          method: "POST",
          headers: { authorization: basic("admin", "adminpw") },
        })
      ).statusCode,
    ).toBe(200);
  });

  it("answers 401 for a wrong password, an unknown user, a Bearer token and garbage", async () => {
    for (const authorization of [
      basic("dev", "nope"),
      basic("ghost", "x"),
      "Bearer abc.def.ghi",
      "Basic !!!",
      "Digest x",
    ]) {
      const res = await app.inject({
        url: "/pull/public/app",
        headers: { authorization, "x-forwarded-for": "1.1.1.1" },
      });
      expect(res.statusCode, authorization).toBe(401);
      expect(res.headers["www-authenticate"]).toBe('Basic realm="Test Realm"');
    }
  });

  it("filters by pull permission", async () => {
    expect((await app.inject({ url: "/visible" })).json()).toEqual(["public/a"]);
    expect(
      (await app.inject({ url: "/visible", headers: { authorization: basic("dev", "devpw") } })).json(),
    ).toEqual(["public/a", "team/a"]);
    expect(
      (await app.inject({ url: "/visible", headers: { authorization: basic("admin", "adminpw") } })).json(),
    ).toEqual(["public/a", "team/a", "secret/a"]);
    expect(
      (await app.inject({ url: "/visible", headers: { authorization: basic("dev", "bad") } })).json(),
    ).toEqual([]);
  });

  it("does not issue tokens in Basic mode", async () => {
    expect((await app.inject({ url: "/auth/token" })).statusCode).toBe(404);
  });
});

describe("throttling over HTTP", () => {
  it("answers 429 with Retry-After once a client has failed too often, even with the right password", async () => {
    const app = await makeApp({
      htpasswd: { path: "HTPASSWD" },
      throttle: { freeattempts: 2, delay: "5s" },
      access: ACCESS,
    });
    const remote = { remoteAddress: "10.9.8.7" };
    for (let i = 0; i < 3; i++) {
      const res = await app.inject({
        url: "/v2/",
        headers: { authorization: basic("dev", `bad${i}`) },
        ...remote,
      });
      expect(res.statusCode).toBe(401);
    }
    const locked = await app.inject({
      url: "/v2/",
      headers: { authorization: basic("dev", "devpw") },
      ...remote,
    });
    expect(locked.statusCode).toBe(429);
    expect(locked.json().errors[0].code).toBe("TOOMANYREQUESTS");
    expect(Number(locked.headers["retry-after"])).toBeGreaterThanOrEqual(4);
    // Another client and another user are not held back.
    expect(
      (
        await app.inject({
          url: "/v2/",
          headers: { authorization: basic("admin", "adminpw") },
          remoteAddress: "10.0.0.1",
        })
      ).statusCode,
    ).toBe(200);
    await app.close();
  });
});

describe("the throttle behind a trusted proxy", () => {
  it("counts clients by X-Forwarded-For from a trusted proxy, and ignores it from anyone else", async () => {
    const app = await makeApp({
      htpasswd: { path: "HTPASSWD" },
      throttle: { freeattempts: 1, delay: "5s" },
      access: ACCESS,
    });
    const via = (remoteAddress: string, xff: string, user: string, password: string) =>
      app.inject({
        url: "/v2/",
        remoteAddress,
        headers: { authorization: basic(user, password), "x-forwarded-for": xff },
      });
    // 127.0.0.1 is a trusted proxy by default: clients behind it are told apart.
    expect((await via("127.0.0.1", "198.51.100.1", "dev", "bad")).statusCode).toBe(401);
    expect((await via("127.0.0.1", "198.51.100.1", "dev", "bad")).statusCode).toBe(401);
    expect((await via("127.0.0.1", "198.51.100.2", "admin", "adminpw")).statusCode).toBe(200);
    // 198.51.100.1 is locked, whichever user it tries, and forged hops to its left change nothing.
    expect((await via("127.0.0.1", "198.51.100.1", "admin", "adminpw")).statusCode).toBe(429);
    expect((await via("127.0.0.1", "203.0.113.9, 198.51.100.1", "admin", "adminpw")).statusCode).toBe(429);
    // From an untrusted peer, X-Forwarded-For is ignored: the peer itself is the client.
    expect((await via("192.0.2.50", "198.51.100.3", "outsider", "bad")).statusCode).toBe(401);
    expect((await via("192.0.2.50", "198.51.100.4", "outsider", "bad")).statusCode).toBe(401);
    expect((await via("192.0.2.50", "198.51.100.5", "admin", "adminpw")).statusCode).toBe(429);
    await app.close();
  });
});

describe("access with Berth-issued tokens", () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await makeApp({
      htpasswd: { path: "HTPASSWD" },
      token: { service: "test-registry" },
      access: ACCESS,
    });
  });
  afterAll(() => app.close());

  const token = async (creds: string | null, scopes: string[], extra = "") => {
    const qs = scopes.map((s) => `scope=${encodeURIComponent(s)}`).join("&");
    const res = await app.inject({
      url: `/auth/token?service=test-registry&${qs}${extra}`,
      headers: creds ? { authorization: creds } : {},
    });
    expect(res.statusCode).toBe(200);
    return res.json() as { token: string; access_token: string; expires_in: number; refresh_token?: string };
  };

  it("challenges with Bearer realm, service and the scope needed", async () => {
    const res = await app.inject({ url: "/pull/team/app", headers: { host: "reg.example:5000" } });
    expect(res.statusCode).toBe(401);
    expect(res.headers["www-authenticate"]).toBe(
      'Bearer realm="http://reg.example:5000/auth/token",service="test-registry",scope="repository:team/app:pull"',
    );
    const base = await app.inject({ url: "/v2/", headers: { host: "reg.example:5000" } });
    expect(base.headers["www-authenticate"]).toBe(
      'Bearer realm="http://reg.example:5000/auth/token",service="test-registry"',
    );
  });

  it("issues tokens whose access holds only what the user may do", async () => {
    const t = await token(basic("dev", "devpw"), [
      "repository:team/app:pull,push,delete",
      "repository:secret/x:pull",
    ]);
    expect(jose.decodeJwt(t.token).access).toEqual([
      { type: "repository", name: "team/app", actions: ["pull", "push"] },
    ]);
    expect(t.access_token).toBe(t.token);
    expect(t.expires_in).toBe(300);
    expect(t.refresh_token).toBeUndefined();
  });

  it("a token opens what it grants, and nothing else", async () => {
    const t = await token(basic("dev", "devpw"), ["repository:team/app:pull,push"]);
    const bearer = { authorization: `Bearer ${t.token}` };
    expect((await app.inject({ url: "/v2/", headers: bearer })).statusCode).toBe(200);
    expect((await app.inject({ url: "/pull/team/app", headers: bearer })).statusCode).toBe(200);
    expect((await app.inject({ url: "/push/team/app", method: "POST", headers: bearer })).statusCode).toBe(
      200,
    );
    const other = await app.inject({ url: "/pull/team/other", headers: bearer });
    expect(other.statusCode).toBe(401);
    expect(other.headers["www-authenticate"]).toContain(
      'scope="repository:team/other:pull",error="insufficient_scope"',
    );
  });

  it("an anonymous token opens the anonymous patterns only", async () => {
    const t = await token(null, ["repository:public/app:pull,push", "repository:team/app:pull"]);
    expect(jose.decodeJwt(t.token).access).toEqual([
      { type: "repository", name: "public/app", actions: ["pull"] },
    ]);
    expect(jose.decodeJwt(t.token).sub).toBe("");
    const bearer = { authorization: `Bearer ${t.token}` };
    expect((await app.inject({ url: "/pull/public/app", headers: bearer })).statusCode).toBe(200);
    expect((await app.inject({ url: "/push/public/app", method: "POST", headers: bearer })).statusCode).toBe(
      401,
    );
  });

  it("refuses a bad token with error=invalid_token", async () => {
    const t = await token(basic("dev", "devpw"), ["repository:team/app:pull"]);
    const res = await app.inject({
      url: "/pull/team/app",
      headers: { authorization: `Bearer ${t.token.slice(0, -3)}AAA` },
    });
    expect(res.statusCode).toBe(401);
    expect(res.headers["www-authenticate"]).toContain('error="invalid_token"');
  });

  it("refuses wrong credentials at the token endpoint with 401", async () => {
    const res = await app.inject({
      url: "/auth/token?service=test-registry",
      headers: { authorization: basic("dev", "wrong") },
    });
    expect(res.statusCode).toBe(401);
    expect(res.json().details).toBe("incorrect username or password");
  });

  it("refuses an unknown service", async () => {
    expect((await app.inject({ url: "/auth/token?service=other" })).statusCode).toBe(400);
  });

  it("gives refresh tokens for offline_token=true and takes them in the OAuth2 POST form", async () => {
    const t = await token(basic("dev", "devpw"), [], "&offline_token=true&client_id=test");
    expect(t.refresh_token).toBeTruthy();
    const res = await app.inject({
      url: "/auth/token",
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: t.refresh_token!,
        service: "test-registry",
        client_id: "test",
        scope: "repository:team/app:pull,push repository:secret/x:pull",
      }).toString(),
    });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body.scope).toBe("repository:team/app:pull,push");
    expect(
      (
        await app.inject({
          url: "/push/team/app",
          method: "POST",
          headers: { authorization: `Bearer ${body.access_token}` },
        })
      ).statusCode,
    ).toBe(200);
    // A refresh token is not an access token.
    expect(
      (await app.inject({ url: "/v2/", headers: { authorization: `Bearer ${t.refresh_token}` } })).statusCode,
    ).toBe(401);
  });

  it("takes the OAuth2 password grant and returns a refresh token for access_type=offline", async () => {
    const form = (password: string) =>
      app.inject({
        url: "/auth/token",
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        payload: new URLSearchParams({
          grant_type: "password",
          username: "dev",
          password,
          service: "test-registry",
          client_id: "docker",
          access_type: "offline",
          scope: "repository:team/app:pull",
        }).toString(),
      });
    const ok = await form("devpw");
    expect(ok.statusCode).toBe(200);
    expect(ok.json().refresh_token).toBeTruthy();
    expect(ok.json().scope).toBe("repository:team/app:pull");
    const bad = await form("wrong");
    expect(bad.statusCode).toBe(401);
    expect(bad.json().error).toBe("invalid_grant");
    const unsupported = await app.inject({
      url: "/auth/token",
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: "grant_type=client_credentials",
    });
    expect(unsupported.statusCode).toBe(400);
    expect(unsupported.json().error).toBe("unsupported_grant_type");
  });

  it("still accepts Basic credentials directly (curl -u)", async () => {
    expect(
      (await app.inject({ url: "/pull/team/app", headers: { authorization: basic("dev", "devpw") } }))
        .statusCode,
    ).toBe(200);
    expect(
      (await app.inject({ url: "/pull/team/app", headers: { authorization: basic("outsider", "outpw") } }))
        .statusCode,
    ).toBe(403);
  });

  it("filters by the token's grants, or by the rules with a catalog token", async () => {
    const t = await token(basic("dev", "devpw"), ["repository:team/a:pull"]);
    expect(
      (await app.inject({ url: "/visible", headers: { authorization: `Bearer ${t.token}` } })).json(),
    ).toEqual(["team/a"]);
    const c = await token(basic("dev", "devpw"), ["registry:catalog:*"]);
    expect(
      (await app.inject({ url: "/visible", headers: { authorization: `Bearer ${c.token}` } })).json(),
    ).toEqual(["public/a", "team/a"]);
    // Listing names is all a catalog token allows: it pulls nothing (mounts check this).
    expect(
      (await app.inject({ url: "/pullable", headers: { authorization: `Bearer ${c.token}` } })).json(),
    ).toEqual([]);
    expect(
      (await app.inject({ url: "/pullable", headers: { authorization: `Bearer ${t.token}` } })).json(),
    ).toEqual(["team/a"]);
  });
});
