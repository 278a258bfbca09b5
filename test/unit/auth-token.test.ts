import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import * as jose from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import {
  generateSigningKeyPem,
  legacyKeyFile,
  libtrustKeyId,
  loadSigningKey,
  readCertificateBundle,
  type SharedSettings,
  SIGNING_KEY_SETTING,
  type SigningKey,
  sharedSigningKey,
  signingKeyFromPem,
  TokenError,
  TokenService,
} from "../../src/auth/token.js";
import { openSqlite } from "../../src/metadata/db.js";
import { readSetting, settleSetting } from "../../src/metadata/settings-queries.js";
import { makePki, type Pki, tmp } from "../integration/auth-fixtures.js";

const OPTIONS = {
  issuer: "berth",
  service: "registry.test",
  expirationMs: 300_000,
  refreshExpirationMs: 86_400_000,
  leewayMs: 30_000,
};
const ACCESS = [
  { type: "repository" as const, name: "team-a/app", actions: ["pull" as const, "push" as const] },
];

let key: SigningKey;
let tokens: TokenService;
beforeAll(() => {
  key = signingKeyFromPem(generateSigningKeyPem(), "test");
  tokens = TokenService.own(OPTIONS, key);
});

async function sign(
  claims: jose.JWTPayload,
  signer: crypto.KeyObject = key.privateKey,
  alg = "ES256",
  header: Partial<jose.JWTHeaderParameters> = {},
) {
  return new jose.SignJWT(claims).setProtectedHeader({ alg, typ: "JWT", ...header }).sign(signer);
}

function goodClaims(overrides: jose.JWTPayload = {}): jose.JWTPayload {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: "berth",
    sub: "alice",
    aud: "registry.test",
    iat: now,
    nbf: now,
    exp: now + 300,
    access: ACCESS,
    ...overrides,
  };
}

async function refused(token: string, message: RegExp) {
  await expect(tokens.verifyAccess(token)).rejects.toThrow(TokenError);
  await expect(tokens.verifyAccess(token)).rejects.toThrow(message);
}

describe("Berth-issued tokens", () => {
  it("round-trip: subject, audience, issuer and the access claim", async () => {
    const issued = await tokens.issueAccess("alice", ACCESS);
    expect(issued.expiresIn).toBe(300);
    const header = jose.decodeProtectedHeader(issued.token);
    expect(header).toMatchObject({ alg: "ES256", typ: "JWT", kid: key.kid });
    const payload = jose.decodeJwt(issued.token);
    expect(payload).toMatchObject({ iss: "berth", sub: "alice", aud: "registry.test", access: ACCESS });
    expect(typeof payload.jti).toBe("string");
    const verified = await tokens.verifyAccess(issued.token);
    expect(verified).toMatchObject({ subject: "alice", access: ACCESS, issuer: "berth" });
  });

  it("anonymous tokens have an empty subject", async () => {
    const issued = await tokens.issueAccess(null, []);
    expect(jose.decodeJwt(issued.token).sub).toBe("");
    expect((await tokens.verifyAccess(issued.token)).subject).toBeNull();
  });

  it("refuses a tampered payload (access widened, signature kept)", async () => {
    const { token } = await tokens.issueAccess("alice", ACCESS);
    const [h, , s] = token.split(".");
    const widened = Buffer.from(
      JSON.stringify({
        ...jose.decodeJwt(token),
        access: [{ type: "repository", name: "team-b/app", actions: ["push"] }],
      }),
    ).toString("base64url");
    await refused(`${h}.${widened}.${s}`, /signature/);
  });

  it("refuses a flipped signature byte", async () => {
    const { token } = await tokens.issueAccess("alice", ACCESS);
    const sig = Buffer.from(token.split(".")[2]!, "base64url");
    sig[5] = sig[5]! ^ 0xff;
    await refused(`${token.split(".").slice(0, 2).join(".")}.${sig.toString("base64url")}`, /signature/);
  });

  it("refuses an expired token (beyond the leeway)", async () => {
    const now = Math.floor(Date.now() / 1000);
    await refused(await sign(goodClaims({ iat: now - 4000, nbf: now - 4000, exp: now - 3600 })), /expired/);
  });

  it("accepts a token that expired within the leeway", async () => {
    const now = Math.floor(Date.now() / 1000);
    await expect(tokens.verifyAccess(await sign(goodClaims({ exp: now - 5 })))).resolves.toBeTruthy();
  });

  it("refuses a token not valid yet", async () => {
    const now = Math.floor(Date.now() / 1000);
    await refused(await sign(goodClaims({ nbf: now + 3600, exp: now + 7200 })), /nbf/);
  });

  it("refuses a token without expiry", async () => {
    const claims = goodClaims();
    delete claims.exp;
    await refused(await sign(claims), /exp/);
  });

  it("refuses a token signed with another key", async () => {
    const { privateKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
    await refused(await sign(goodClaims(), privateKey), /signature/);
  });

  it("refuses another algorithm, and alg none", async () => {
    const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
    await refused(await sign(goodClaims(), privateKey, "RS256"), /algorithm/);
    const unsecured = new jose.UnsecuredJWT(goodClaims()).encode();
    await refused(unsecured, /algorithm|malformed/);
    const hmac = await new jose.SignJWT(goodClaims())
      .setProtectedHeader({ alg: "HS256" })
      .sign(new TextEncoder().encode("secret-secret-secret-secret-secret"));
    await refused(hmac, /algorithm/);
  });

  it("refuses the wrong audience and the wrong issuer", async () => {
    await refused(await sign(goodClaims({ aud: "other-registry" })), /aud/);
    await refused(await sign(goodClaims({ iss: "somebody-else" })), /iss/);
  });

  it("refuses garbage", async () => {
    await refused("not-a-jwt", /malformed/);
    await refused("", /malformed/);
  });

  it("keeps refresh and access tokens apart", async () => {
    const refresh = await tokens.issueRefresh("alice", "fp");
    await refused(refresh, /refresh token is not an access token/);
    expect(await tokens.verifyRefresh(refresh)).toEqual({ subject: "alice", passwordFingerprint: "fp" });
    const { token } = await tokens.issueAccess("alice", ACCESS);
    await expect(tokens.verifyRefresh(token)).rejects.toThrow(/not a refresh token/);
  });

  it("drops unknown resource types and actions from the access claim", async () => {
    const token = await sign(
      goodClaims({
        access: [
          { type: "plugin", name: "x", actions: ["pull"] },
          { type: "repository", name: "a", actions: ["pull", "fly"] },
        ],
      }),
    );
    expect((await tokens.verifyAccess(token)).access).toEqual([
      { type: "repository", name: "a", actions: ["pull"] },
    ]);
  });
});

describe("signing keys", () => {
  async function withSettings<T>(dir: string, body: (settings: SharedSettings) => Promise<T>): Promise<T> {
    const meta = await openSqlite(dir);
    try {
      return await body({
        read: (name) => readSetting(meta.db, name),
        settle: (name, candidate) => settleSetting(meta.db, name, candidate),
      });
    } finally {
      await meta.close();
    }
  }

  it("generates the key once into the metadata database and reuses it, writing no file", async () => {
    const dir = tmp();
    const a = await withSettings(dir, (s) => sharedSigningKey(s, dir));
    const b = await withSettings(dir, (s) => sharedSigningKey(s, tmp()));
    expect(a.kid).toBe(b.kid);
    expect(a.alg).toBe("ES256");
    expect(fs.existsSync(legacyKeyFile(dir))).toBe(false);
    const stored = await withSettings(dir, (s) => s.read(SIGNING_KEY_SETTING));
    expect(signingKeyFromPem(stored!, "db").kid).toBe(a.kid);
  });

  it("moves the key an older Berth generated in <dataDir>/berth/token-key.pem into the database", async () => {
    const dir = tmp();
    const pem = generateSigningKeyPem();
    fs.mkdirSync(path.dirname(legacyKeyFile(dir)), { recursive: true });
    fs.writeFileSync(legacyKeyFile(dir), pem, { mode: 0o600 });
    const old = signingKeyFromPem(pem, "old");
    const { token } = await TokenService.own(OPTIONS, old).issueAccess("bob", ACCESS);
    const moved = await withSettings(dir, (s) => sharedSigningKey(s, dir));
    expect(moved.kid).toBe(old.kid);
    // Another replica, whose data directory holds no key, now signs and verifies with the same key.
    const other = await withSettings(dir, (s) => sharedSigningKey(s, tmp()));
    expect((await TokenService.own(OPTIONS, other).verifyAccess(token)).subject).toBe("bob");
    // A second legacy key found later does not replace the stored one.
    const late = tmp();
    fs.mkdirSync(path.dirname(legacyKeyFile(late)), { recursive: true });
    fs.writeFileSync(legacyKeyFile(late), generateSigningKeyPem());
    expect((await withSettings(dir, (s) => sharedSigningKey(s, late))).kid).toBe(old.kid);
  });

  it("refuses a legacy key file that is not a key, rather than sharing it", async () => {
    const dir = tmp();
    fs.mkdirSync(path.dirname(legacyKeyFile(dir)), { recursive: true });
    fs.writeFileSync(legacyKeyFile(dir), "not a key\n");
    await expect(withSettings(dir, (s) => sharedSigningKey(s, dir))).rejects.toThrow();
    expect(await withSettings(dir, (s) => s.read(SIGNING_KEY_SETTING))).toBeUndefined();
  });

  it("several processes starting at once on one database end up with one key", async () => {
    const dir = tmp();
    await (await openSqlite(dir)).close(); // the schema exists; the key does not
    const script = path.join(dir, "gen.mts");
    const src = (f: string) => JSON.stringify(path.resolve(f));
    fs.writeFileSync(
      script,
      [
        `import { sharedSigningKey } from ${src("src/auth/token.ts")};`,
        `import { openSqlite } from ${src("src/metadata/db.ts")};`,
        `import { readSetting, settleSetting } from ${src("src/metadata/settings-queries.ts")};`,
        `import fs from "node:fs";`,
        `const meta = await openSqlite(${JSON.stringify(dir)});`,
        `const settings = { read: (n) => readSetting(meta.db, n), settle: (n, c) => settleSetting(meta.db, n, c) };`,
        `const key = await sharedSigningKey(settings, fs.mkdtempSync("/tmp/berth-key-"));`,
        "console.log(key.kid);",
        "await meta.close();",
      ].join("\n"),
    );
    const runs = Array.from({ length: 6 }, () => {
      const child = spawn(process.execPath, ["--import", "tsx", script], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      let out = "";
      child.stdout.on("data", (c) => (out += c));
      return new Promise<string>((resolve) => child.on("exit", () => resolve(out.trim())));
    });
    const kids = await Promise.all(runs);
    expect(kids.every((k) => /^[A-Z2-7]{4}(:[A-Z2-7]{4}){11}$/.test(k))).toBe(true);
    expect(new Set(kids).size).toBe(1);
  });

  it("uses an operator-provided RSA or Ed25519 key", async () => {
    const dir = tmp();
    for (const [type, alg] of [
      ["rsa", "RS256"],
      ["ed25519", "EdDSA"],
    ] as const) {
      const { privateKey } =
        type === "rsa"
          ? crypto.generateKeyPairSync("rsa", { modulusLength: 2048 })
          : crypto.generateKeyPairSync("ed25519");
      const file = path.join(dir, `${type}.pem`);
      fs.writeFileSync(file, privateKey.export({ type: "pkcs8", format: "pem" }));
      const k = loadSigningKey(file);
      expect(k.alg).toBe(alg);
      const svc = TokenService.own(OPTIONS, k);
      const { token } = await svc.issueAccess("bob", ACCESS);
      expect((await svc.verifyAccess(token)).subject).toBe("bob");
    }
  });

  it("computes libtrust key IDs in Distribution's format", () => {
    expect(libtrustKeyId(key.publicKey)).toMatch(/^[A-Z2-7]{4}(:[A-Z2-7]{4}){11}$/);
    expect(libtrustKeyId(key.privateKey)).toBe(libtrustKeyId(key.publicKey));
  });
});

describe("an external issuer (rootcertbundle)", () => {
  let pki: Pki;
  let external: TokenService;
  beforeAll(() => {
    pki = makePki();
    external = TokenService.external(OPTIONS, readCertificateBundle(pki.caCert));
  });
  const caKey = () => crypto.createPrivateKey(fs.readFileSync(pki.caKey));
  const der = (file: string) => new crypto.X509Certificate(fs.readFileSync(file)).raw.toString("base64");

  it("accepts a token whose kid names the root's key", async () => {
    const token = await sign(goodClaims(), caKey(), "ES256", { kid: libtrustKeyId(caKey()) });
    expect(await external.verifyAccess(token)).toMatchObject({
      subject: "alice",
      access: ACCESS,
      issuer: "external",
    });
  });

  it("accepts a token with an x5c chain that leads to the root", async () => {
    const leafKey = crypto.createPrivateKey(fs.readFileSync(pki.serverKey));
    const token = await sign(goodClaims(), leafKey, "ES256", {
      x5c: [der(pki.serverCert), der(path.join(pki.dir, "intermediate.crt"))],
    });
    expect((await external.verifyAccess(token)).subject).toBe("alice");
  });

  it("refuses an x5c chain from another CA, a kid of no trusted key, and a key of its own", async () => {
    const strangerKey = crypto.createPrivateKey(fs.readFileSync(pki.strangerKey));
    const viaStranger = await sign(goodClaims(), strangerKey, "ES256", {
      x5c: [der(pki.strangerCert), der(path.join(pki.dir, "strangerca.crt"))],
    });
    await expect(external.verifyAccess(viaStranger)).rejects.toThrow(/trusted/);
    const wrongKid = await sign(goodClaims(), strangerKey, "ES256", { kid: libtrustKeyId(strangerKey) });
    await expect(external.verifyAccess(wrongKid)).rejects.toThrow(/kid/);
    const noKid = await sign(goodClaims(), strangerKey);
    await expect(external.verifyAccess(noKid)).rejects.toThrow(/signature/);
    // An x5c leaf signed by the chain but the token signed by another key.
    const forged = await sign(goodClaims(), strangerKey, "ES256", {
      x5c: [der(pki.serverCert), der(path.join(pki.dir, "intermediate.crt"))],
    });
    await expect(external.verifyAccess(forged)).rejects.toThrow(/signature/);
  });

  it("still checks audience and issuer", async () => {
    const kid = libtrustKeyId(caKey());
    await expect(
      external.verifyAccess(await sign(goodClaims({ aud: "elsewhere" }), caKey(), "ES256", { kid })),
    ).rejects.toThrow(/aud/);
    await expect(
      external.verifyAccess(await sign(goodClaims({ iss: "mallory" }), caKey(), "ES256", { kid })),
    ).rejects.toThrow(/iss/);
  });

  it("issues nothing itself", async () => {
    expect(external.issues).toBe(false);
    await expect(external.issueAccess("a", [])).rejects.toThrow(TokenError);
  });
});
