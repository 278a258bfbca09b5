// Token mode against a real Berth: the generated key shared by workers, refused tokens (tampered,
// expired, wrongly signed, wrong audience), refresh tokens, an operator's key, an external issuer,
// and the challenge over TLS.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import * as jose from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { libtrustKeyId, SIGNING_KEY_SETTING } from "../../src/auth/token.js";
import { openTestDb } from "../helpers/metadata-db.js";
import { RegistryClient } from "../helpers/registry.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { basic, htpasswdText, httpsRequest, makePki, waitFor } from "./auth-fixtures.js";

interface TokenBody {
  token: string;
  access_token: string;
  refresh_token?: string;
  expires_in: number;
  issued_at: string;
}

function setup(
  extraToken: string[] = [],
  users: Record<string, string> = { dev: "dev-pw", admin: "admin-pw" },
) {
  const dir = tempDir();
  const htpasswd = path.join(dir, "htpasswd");
  fs.writeFileSync(htpasswd, htpasswdText(users));
  const config = path.join(dir, "config.yml");
  fs.writeFileSync(
    config,
    [
      "auth:",
      "  htpasswd:",
      `    path: ${htpasswd}`,
      "  token:",
      "    service: tok-registry",
      "    issuer: tok-issuer",
      ...extraToken,
      "  throttle:",
      "    enabled: false",
      "  access:",
      "    admins: { users: [admin] }",
      '    anonymous: { pull: ["public/*"] }',
      '    rules: [{ repository: "dev/*", users: [dev], actions: [pull, push] }]',
      "",
    ].join("\n"),
  );
  return { dir, htpasswd, config };
}

describe("Berth as token issuer", () => {
  let berth: Berth;
  let env: ReturnType<typeof setup>;
  let key: crypto.KeyObject;

  async function getToken(creds: string | null, scopes: string[], extra = ""): Promise<TokenBody> {
    const qs = scopes.map((s) => `&scope=${encodeURIComponent(s)}`).join("");
    const res = await fetch(`${berth.url}/auth/token?service=tok-registry${qs}${extra}`, {
      headers: creds ? { authorization: creds } : {},
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("no-store");
    return (await res.json()) as TokenBody;
  }

  async function withBearer(token: string, path = "/v2/dev/app/tags/list") {
    return fetch(`${berth.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  }

  function claims(overrides: jose.JWTPayload = {}): jose.JWTPayload {
    const now = Math.floor(Date.now() / 1000);
    return {
      iss: "tok-issuer",
      sub: "dev",
      aud: "tok-registry",
      iat: now,
      nbf: now,
      exp: now + 300,
      access: [{ type: "repository", name: "dev/app", actions: ["pull", "push"] }],
      ...overrides,
    };
  }

  const sign = (c: jose.JWTPayload, k: crypto.KeyObject = key) =>
    new jose.SignJWT(c).setProtectedHeader({ alg: "ES256", typ: "JWT" }).sign(k);

  beforeAll(async () => {
    env = setup();
    berth = await startBerth({ args: ["--config", env.config], workers: 2 });
    const db = await openTestDb(berth.dataDir);
    const row = await db.get<{ value: string }>(
      "select value from settings where name = ?",
      SIGNING_KEY_SETTING,
    );
    await db.close();
    key = crypto.createPrivateKey(row!.value);
    // Seed dev/app so that tag listing answers 200 rather than 404.
    const t = await getToken(basic("admin", "admin-pw"), ["repository:dev/app:pull,push"]);
    await new RegistryClient(berth.url, { authorization: `Bearer ${t.token}` }).pushImage("dev/app", "v1");
  });
  afterAll(() => berth?.cleanup());

  it("generated its signing key into the metadata database, and every worker verifies its tokens", async () => {
    expect(fs.existsSync(path.join(berth.dataDir, "berth", "token-key.pem"))).toBe(false);
    const t = await getToken(basic("dev", "dev-pw"), ["repository:dev/app:pull"]);
    for (let i = 0; i < 10; i++) expect((await withBearer(t.token)).status).toBe(200);
  });

  it("accepts a token it did not issue through the endpoint, as long as its key signed it (the test's control)", async () => {
    expect((await withBearer(await sign(claims()))).status).toBe(200);
  });

  it.each([
    [
      "tampered (access widened, signature kept)",
      async () => {
        const t = await getToken(basic("dev", "dev-pw"), ["repository:dev/app:pull"]);
        const [h, , s] = t.token.split(".");
        const widened = Buffer.from(JSON.stringify({ ...jose.decodeJwt(t.token), sub: "admin" })).toString(
          "base64url",
        );
        return `${h}.${widened}.${s}`;
      },
      /signature/,
    ],
    [
      "expired",
      async () => {
        const now = Math.floor(Date.now() / 1000);
        return sign(claims({ iat: now - 7200, nbf: now - 7200, exp: now - 3600 }));
      },
      /expired/,
    ],
    [
      "signed by another key",
      async () => sign(claims(), crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey),
      /signature/,
    ],
    ["for another audience", async () => sign(claims({ aud: "some-other-registry" })), /aud/],
    ["from another issuer", async () => sign(claims({ iss: "someone-else" })), /iss/],
    ["naming a user who does not exist", async () => sign(claims({ sub: "ghost" })), /no longer exists/],
  ])("refuses a token %s with 401 invalid_token", async (_name, make, reason) => {
    const res = await withBearer(await make());
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toContain('error="invalid_token"');
    const body = (await res.json()) as { errors: { code: string; message: string }[] };
    expect(body.errors[0]!.code).toBe("UNAUTHORIZED");
    expect(body.errors[0]!.message).toMatch(reason);
  });

  it("holds even a validly signed token to the rules as they are now", async () => {
    // The token claims push on a repository dev may not touch: the claim alone is not enough.
    const res = await withBearer(
      await sign(claims({ access: [{ type: "repository", name: "secret/app", actions: ["pull"] }] })),
      "/v2/secret/app/tags/list",
    );
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toContain('error="insufficient_scope"');
  });

  it("grants only what the user may do, and an anonymous token only the anonymous patterns", async () => {
    const t = await getToken(basic("dev", "dev-pw"), [
      "repository:dev/app:pull,push,delete",
      "repository:admin/app:pull",
      "registry:catalog:*",
    ]);
    expect(jose.decodeJwt(t.token)).toMatchObject({
      iss: "tok-issuer",
      sub: "dev",
      aud: "tok-registry",
      access: [
        { type: "repository", name: "dev/app", actions: ["pull", "push"] },
        { type: "registry", name: "catalog", actions: ["*"] },
      ],
    });
    expect(t.expires_in).toBe(300);
    const anon = await getToken(null, ["repository:public/x:pull,push", "repository:dev/app:pull"]);
    expect(jose.decodeJwt(anon.token).access).toEqual([
      { type: "repository", name: "public/x", actions: ["pull"] },
    ]);
  });

  it("refresh tokens work through the OAuth2 form, and die with a password change", async () => {
    const t = await getToken(basic("dev", "dev-pw"), [], "&offline_token=true&client_id=test");
    const refresh = async () => {
      const form = new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: t.refresh_token!,
        service: "tok-registry",
        client_id: "test",
        scope: "repository:dev/app:pull",
      });
      return fetch(`${berth.url}/auth/token`, {
        method: "POST",
        body: form,
        headers: { "content-type": "application/x-www-form-urlencoded" },
      });
    };
    const ok = await refresh();
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as { access_token: string; scope: string };
    expect(body.scope).toBe("repository:dev/app:pull");
    expect((await withBearer(body.access_token)).status).toBe(200);
    fs.writeFileSync(env.htpasswd, htpasswdText({ dev: "new-dev-pw", admin: "admin-pw" }));
    const refused = await waitFor(refresh, (r) => r.status === 401);
    expect(refused.status).toBe(401);
    expect(((await refused.json()) as { error: string }).error).toBe("invalid_grant");
    // And the old access token dies with the user's removal.
    fs.writeFileSync(env.htpasswd, htpasswdText({ admin: "admin-pw" }));
    expect(
      (
        await waitFor(
          () => withBearer(body.access_token),
          (r) => r.status === 401,
        )
      ).status,
    ).toBe(401);
  });
});

describe("an operator-provided signing key", () => {
  it("signs the tokens", async () => {
    const { privateKey, publicKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
    const dir = tempDir();
    const keyFile = path.join(dir, "signing.pem");
    fs.writeFileSync(keyFile, privateKey.export({ type: "pkcs1", format: "pem" }));
    const env = setup([`    signingkey: ${keyFile}`]);
    const berth = await startBerth({ args: ["--config", env.config] });
    try {
      const res = await fetch(`${berth.url}/auth/token?service=tok-registry&scope=repository:dev/app:pull`, {
        headers: { authorization: basic("dev", "dev-pw") },
      });
      const { token } = (await res.json()) as TokenBody;
      const { payload, protectedHeader } = await jose.jwtVerify(token, publicKey, {
        audience: "tok-registry",
        issuer: "tok-issuer",
      });
      expect(protectedHeader.alg).toBe("RS256");
      expect(protectedHeader.kid).toBe(libtrustKeyId(publicKey));
      expect(payload.sub).toBe("dev");
      expect(fs.existsSync(path.join(berth.dataDir, "berth", "token-key.pem"))).toBe(false);
    } finally {
      await berth.cleanup();
    }
  });
});

describe("an external token issuer", () => {
  let berth: Berth;
  let caKey: crypto.KeyObject;
  beforeAll(async () => {
    const pki = makePki();
    caKey = crypto.createPrivateKey(fs.readFileSync(pki.caKey));
    const dir = tempDir();
    const config = path.join(dir, "config.yml");
    fs.writeFileSync(
      config,
      [
        "auth:",
        "  token:",
        "    realm: https://auth.example.test/token",
        "    service: ext-registry",
        "    issuer: ext-issuer",
        `    rootcertbundle: ${pki.caCert}`,
        "",
      ].join("\n"),
    );
    berth = await startBerth({ args: ["--config", config] });
  });
  afterAll(() => berth?.cleanup());

  const sign = (access: unknown[], audience = "ext-registry") => {
    const now = Math.floor(Date.now() / 1000);
    return new jose.SignJWT({ access })
      .setProtectedHeader({ alg: "ES256", kid: libtrustKeyId(caKey) })
      .setIssuer("ext-issuer")
      .setAudience(audience)
      .setSubject("someone")
      .setIssuedAt(now)
      .setExpirationTime(now + 300)
      .sign(caKey);
  };

  it("sends clients to the configured realm and issues nothing itself", async () => {
    const res = await fetch(`${berth.url}/v2/x/y/tags/list`);
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe(
      'Bearer realm="https://auth.example.test/token",service="ext-registry",scope="repository:x/y:pull"',
    );
    expect((await fetch(`${berth.url}/auth/token?service=ext-registry`)).status).toBe(404);
  });

  it("accepts the issuer's tokens for exactly what they grant", async () => {
    const token = await sign([{ type: "repository", name: "ext/app", actions: ["pull", "push"] }]);
    const client = new RegistryClient(berth.url, { authorization: `Bearer ${token}` });
    await client.pushImage("ext/app", "v1");
    expect((await client.fetch("/v2/ext/app/tags/list")).status).toBe(200);
    const other = await client.fetch("/v2/ext/other/tags/list");
    expect(other.status).toBe(401);
    expect(other.headers.get("www-authenticate")).toContain('error="insufficient_scope"');
  });

  it("never lets catalog access stand in for pull: a mount needs pull on its source", async () => {
    // Someone else's private repository, pushed with a token for it alone.
    const owner = await sign([{ type: "repository", name: "ext/secret", actions: ["pull", "push"] }]);
    const secret = await new RegistryClient(berth.url, { authorization: `Bearer ${owner}` }).pushImage(
      "ext/secret",
      "v1",
    );
    const layer = secret.layers[0]!.digest;
    // Push on one repository of its own, and the catalog.
    const token = await sign([
      { type: "repository", name: "ext/mine", actions: ["pull", "push"] },
      { type: "registry", name: "catalog", actions: ["*"] },
    ]);
    const client = new RegistryClient(berth.url, { authorization: `Bearer ${token}` });
    const catalog = await client.fetch("/v2/_catalog");
    expect(catalog.status).toBe(200);
    expect(((await catalog.json()) as { repositories: string[] }).repositories).toContain("ext/secret");

    const mount = await client.fetch(`/v2/ext/mine/blobs/uploads/?mount=${layer}&from=ext/secret`, {
      method: "POST",
    });
    expect(mount.status).toBe(202); // an ordinary upload, not a mount
    const anyMount = await client.fetch(`/v2/ext/mine/blobs/uploads/?mount=${layer}`, { method: "POST" });
    expect(anyMount.status).toBe(202);
    expect((await client.fetch(`/v2/ext/mine/blobs/${layer}`, { method: "HEAD" })).status).toBe(404);
    expect((await client.fetch(`/v2/ext/secret/blobs/${layer}`, { method: "HEAD" })).status).toBe(401);

    // With pull on the source the mount works.
    const both = await sign([
      { type: "repository", name: "ext/mine", actions: ["pull", "push"] },
      { type: "repository", name: "ext/secret", actions: ["pull"] },
    ]);
    const allowed = await new RegistryClient(berth.url, { authorization: `Bearer ${both}` }).fetch(
      `/v2/ext/mine/blobs/uploads/?mount=${layer}&from=ext/secret`,
      { method: "POST" },
    );
    expect(allowed.status).toBe(201);
  });

  it("refuses tokens with the wrong audience or signed by someone else", async () => {
    const wrongAud = await sign([{ type: "repository", name: "ext/app", actions: ["pull"] }], "elsewhere");
    const rightAud = await sign([{ type: "repository", name: "ext/app", actions: ["pull"] }]);
    expect(
      (await fetch(`${berth.url}/v2/ext/app/tags/list`, { headers: { authorization: `Bearer ${rightAud}` } }))
        .status,
    ).toBe(200);
    expect(
      (await fetch(`${berth.url}/v2/ext/app/tags/list`, { headers: { authorization: `Bearer ${wrongAud}` } }))
        .status,
    ).toBe(401);
    const mallory = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const forged = await new jose.SignJWT({
      access: [{ type: "repository", name: "ext/app", actions: ["pull"] }],
    })
      .setProtectedHeader({ alg: "ES256", kid: libtrustKeyId(caKey) })
      .setIssuer("ext-issuer")
      .setAudience("ext-registry")
      .setExpirationTime("5m")
      .sign(mallory);
    expect(
      (await fetch(`${berth.url}/v2/ext/app/tags/list`, { headers: { authorization: `Bearer ${forged}` } }))
        .status,
    ).toBe(401);
  });
});

describe("token mode over TLS", () => {
  it("challenges with an https realm and serves the token endpoint over HTTP/1.1", async () => {
    const pki = makePki();
    const env = setup();
    const berth = await startBerth({
      args: ["--config", env.config, "--tls-cert", pki.serverChain, "--tls-key", pki.serverKey],
      scheme: "https",
    });
    try {
      const ca = fs.readFileSync(pki.caCert);
      const res = await httpsRequest(`${berth.url}/v2/`, { ca });
      expect(res.status).toBe(401);
      expect(res.headers["www-authenticate"]).toBe(
        `Bearer realm="https://127.0.0.1:${berth.port}/auth/token",service="tok-registry"`,
      );
      const tok = await httpsRequest(`${berth.url}/auth/token?service=tok-registry`, {
        ca,
        headers: { authorization: basic("dev", "dev-pw") },
      });
      expect(tok.status).toBe(200);
      const { token } = JSON.parse(tok.body) as TokenBody;
      expect(
        (await httpsRequest(`${berth.url}/v2/`, { ca, headers: { authorization: `Bearer ${token}` } }))
          .status,
      ).toBe(200);
    } finally {
      await berth.cleanup();
    }
  });
});
