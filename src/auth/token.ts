import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type * as Jose from "jose";

/** jose is loaded at the first token signed or checked: registries without token auth never load it. */
let joseModule: typeof Jose | undefined;
async function loadJose(): Promise<typeof Jose> {
  joseModule ??= await import("jose");
  return joseModule;
}

import { mergeScopes } from "./scope.js";
import type { AccessRequest, Action } from "./types.js";

/** Why a token was refused (the message goes into the 401 body; nothing secret in it). */
export class TokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenError";
  }
}

/**
 * The key ID format of docker/libtrust, which Distribution matches against its root certificates:
 * SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32, in 12 groups of 4.
 */
export function libtrustKeyId(key: crypto.KeyObject): string {
  const der =
    key.type === "private"
      ? crypto.createPublicKey(key).export({ type: "spki", format: "der" })
      : key.export({ type: "spki", format: "der" });
  const digest = crypto.createHash("sha256").update(der).digest().subarray(0, 30);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  let out = "";
  for (const byte of digest) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out.match(/.{4}/g)!.join(":");
}

/** The JWS algorithm that goes with a key. */
export function algorithmFor(key: crypto.KeyObject): string {
  const type = key.asymmetricKeyType;
  if (type === "ec") {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === "prime256v1" || curve === "P-256") return "ES256";
    if (curve === "secp384r1" || curve === "P-384") return "ES384";
    if (curve === "secp521r1" || curve === "P-521") return "ES512";
    throw new TokenError(`unsupported EC curve ${curve}`);
  }
  if (type === "rsa") return "RS256";
  if (type === "ed25519") return "EdDSA";
  throw new TokenError(`unsupported key type ${type}`);
}

export interface SigningKey {
  privateKey: crypto.KeyObject;
  publicKey: crypto.KeyObject;
  alg: string;
  kid: string;
  /** Where it came from (for the log). */
  file: string;
}

/** A signing key from a PEM private key; `file` says where it came from (for the log). */
export function signingKeyFromPem(pem: string, file: string): SigningKey {
  const privateKey = crypto.createPrivateKey(pem);
  const publicKey = crypto.createPublicKey(privateKey);
  return { privateKey, publicKey, alg: algorithmFor(privateKey), kid: libtrustKeyId(publicKey), file };
}

/** A new EC P-256 private key, as PKCS#8 PEM. */
export function generateSigningKeyPem(): string {
  const { privateKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  return privateKey.export({ type: "pkcs8", format: "pem" }) as string;
}

/** The operator's signing key file (`auth.token.signingkey`). */
export function loadSigningKey(keyFile: string): SigningKey {
  const file = path.resolve(keyFile);
  return signingKeyFromPem(fs.readFileSync(file, "utf8"), file);
}

/** Where Berth before 0006_settings generated its key, inside the data directory. */
export function legacyKeyFile(dataDir: string): string {
  return path.join(dataDir, "berth", "token-key.pem");
}

/** Name of the setting that holds the generated signing key. */
export const SIGNING_KEY_SETTING = "auth.token.signingkey";

/** The two calls on the shared metadata database that sharedSigningKey needs (src/metadata/settings-queries.ts). */
export interface SharedSettings {
  read(name: string): Promise<string | undefined>;
  /** Stores the candidate unless a value is there, and returns the stored value (the first writer's). */
  settle(name: string, candidate: string): Promise<string>;
}

/**
 * The generated signing key when the operator names no key file: kept in the metadata database, so that
 * every replica (each with a data directory of its own, scratch only with S3) signs and verifies with
 * one key. On first start the key of an older Berth, `<dataDir>/berth/token-key.pem`, is moved into the
 * database, so that tokens already issued stay valid; otherwise a new EC P-256 key is generated. Ten
 * replicas starting at once each offer a candidate, and all read back the one that was stored first.
 */
export async function sharedSigningKey(
  settings: SharedSettings,
  dataDir: string,
  log?: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void },
): Promise<SigningKey> {
  const source = "metadata database (settings)";
  const stored = await settings.read(SIGNING_KEY_SETTING);
  if (stored !== undefined) return signingKeyFromPem(stored, source);
  const legacy = legacyKeyFile(dataDir);
  let candidate: string;
  let from: string | undefined;
  try {
    candidate = fs.readFileSync(legacy, "utf8");
    signingKeyFromPem(candidate, legacy); // refuse to share a key that does not parse
    from = legacy;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    candidate = generateSigningKeyPem();
  }
  const value = await settings.settle(SIGNING_KEY_SETTING, candidate);
  if (from && value === candidate) {
    log?.info({ file: from }, "token signing key moved from the data directory into the metadata database");
  } else if (from) {
    log?.warn(
      { file: from },
      "another replica stored its token signing key first; tokens signed with the key in this data directory are no longer accepted",
    );
  }
  return signingKeyFromPem(value, source);
}

/** Every certificate in a PEM bundle. */
export function readCertificateBundle(file: string): crypto.X509Certificate[] {
  const text = fs.readFileSync(file, "utf8");
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`no certificate found in ${file}`);
  return blocks.map((b) => new crypto.X509Certificate(b));
}

function validNow(cert: crypto.X509Certificate, leewayMs: number): boolean {
  const now = Date.now();
  return Date.parse(cert.validFrom) - leewayMs <= now && now <= Date.parse(cert.validTo) + leewayMs;
}

const ASYMMETRIC_ALGS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
];

function parseAccessClaim(value: unknown): AccessRequest[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new TokenError("token access claim is not a list");
  const out: AccessRequest[] = [];
  for (const item of value) {
    if (typeof item !== "object" || item === null) throw new TokenError("token access claim is malformed");
    const { type, name, actions } = item as Record<string, unknown>;
    if (
      (type !== "repository" && type !== "registry") ||
      typeof name !== "string" ||
      !Array.isArray(actions)
    ) {
      continue; // unknown resource types (plugins, ...) grant nothing here
    }
    const known = actions.filter(
      (a): a is Action => a === "pull" || a === "push" || a === "delete" || a === "*",
    );
    out.push({ type, name, actions: known });
  }
  return mergeScopes(out);
}

export interface VerifiedToken {
  subject: string | null;
  access: AccessRequest[];
  issuer: "berth" | "external";
  expiresAt: number;
}

export interface IssuedToken {
  token: string;
  expiresIn: number;
  issuedAt: string;
}

export interface TokenServiceOptions {
  issuer: string;
  service: string;
  expirationMs: number;
  refreshExpirationMs: number;
  leewayMs: number;
}

/** Issues and verifies the JWTs of the Docker token specification. */
export class TokenService {
  private constructor(
    private readonly options: TokenServiceOptions,
    /** Berth's own key (null with an external issuer). */
    readonly signing: SigningKey | null,
    /** An external issuer's certificates (empty when Berth issues). */
    private readonly roots: crypto.X509Certificate[],
  ) {}

  static own(options: TokenServiceOptions, key: SigningKey): TokenService {
    return new TokenService(options, key, []);
  }

  static external(options: TokenServiceOptions, roots: crypto.X509Certificate[]): TokenService {
    return new TokenService(options, null, roots);
  }

  get issues(): boolean {
    return this.signing !== null;
  }

  get service(): string {
    return this.options.service;
  }

  get expirationSeconds(): number {
    return Math.max(1, Math.floor(this.options.expirationMs / 1000));
  }

  async issueAccess(subject: string | null, access: AccessRequest[]): Promise<IssuedToken> {
    const key = this.requireKey();
    const now = Math.floor(Date.now() / 1000);
    const { SignJWT } = await loadJose();
    const token = await new SignJWT({ access })
      .setProtectedHeader({ alg: key.alg, typ: "JWT", kid: key.kid })
      .setIssuer(this.options.issuer)
      .setSubject(subject ?? "")
      .setAudience(this.options.service)
      .setIssuedAt(now)
      .setNotBefore(now - 1)
      .setExpirationTime(now + this.expirationSeconds)
      .setJti(crypto.randomBytes(16).toString("hex"))
      .sign(key.privateKey);
    return { token, expiresIn: this.expirationSeconds, issuedAt: new Date(now * 1000).toISOString() };
  }

  /**
   * A refresh (offline) token: a JWT of its own kind that only the token endpoint accepts. It names
   * a digest of the user's password hash, so that changing the password or removing the user
   * revokes it.
   */
  async issueRefresh(subject: string, passwordFingerprint: string): Promise<string> {
    const key = this.requireKey();
    const now = Math.floor(Date.now() / 1000);
    const { SignJWT } = await loadJose();
    return new SignJWT({ token_use: "refresh", pwf: passwordFingerprint })
      .setProtectedHeader({ alg: key.alg, typ: "JWT", kid: key.kid })
      .setIssuer(this.options.issuer)
      .setSubject(subject)
      .setAudience(this.options.service)
      .setIssuedAt(now)
      .setExpirationTime(now + Math.max(1, Math.floor(this.options.refreshExpirationMs / 1000)))
      .setJti(crypto.randomBytes(16).toString("hex"))
      .sign(key.privateKey);
  }

  async verifyAccess(token: string): Promise<VerifiedToken> {
    const payload = await this.verifyJwt(token);
    if (payload.token_use === "refresh") throw new TokenError("a refresh token is not an access token");
    if (typeof payload.exp !== "number") throw new TokenError("token has no expiry");
    return {
      subject: typeof payload.sub === "string" && payload.sub !== "" ? payload.sub : null,
      access: parseAccessClaim(payload.access),
      issuer: this.signing ? "berth" : "external",
      expiresAt: payload.exp * 1000,
    };
  }

  async verifyRefresh(token: string): Promise<{ subject: string; passwordFingerprint: string }> {
    if (!this.signing) throw new TokenError("this registry issues no tokens");
    const payload = await this.verifyJwt(token);
    if (
      payload.token_use !== "refresh" ||
      typeof payload.sub !== "string" ||
      typeof payload.pwf !== "string"
    ) {
      throw new TokenError("not a refresh token");
    }
    return { subject: payload.sub, passwordFingerprint: payload.pwf };
  }

  private requireKey(): SigningKey {
    if (!this.signing) throw new TokenError("this registry issues no tokens");
    return this.signing;
  }

  private async verifyJwt(token: string): Promise<Jose.JWTPayload> {
    const jose = await loadJose();
    const verifyOptions: Jose.JWTVerifyOptions = {
      issuer: this.options.issuer,
      audience: this.options.service,
      clockTolerance: Math.floor(this.options.leewayMs / 1000),
      requiredClaims: ["exp"],
    };
    try {
      if (this.signing) {
        const { payload } = await jose.jwtVerify(token, this.signing.publicKey, {
          ...verifyOptions,
          algorithms: [this.signing.alg],
        });
        return payload;
      }
      const header = jose.decodeProtectedHeader(token);
      let lastError: unknown = new TokenError("no trusted key for this token");
      for (const key of this.externalKeys(header)) {
        try {
          const { payload } = await jose.jwtVerify(token, key, {
            ...verifyOptions,
            algorithms: ASYMMETRIC_ALGS,
          });
          return payload;
        } catch (err) {
          lastError = err;
        }
      }
      throw lastError;
    } catch (err) {
      if (err instanceof TokenError) throw err;
      throw new TokenError(describeJoseError(err, jose));
    }
  }

  /** The keys that may have signed a token of an external issuer, per its header. */
  private externalKeys(header: Jose.ProtectedHeaderParameters): crypto.KeyObject[] {
    if (Array.isArray(header.x5c) && header.x5c.length > 0) {
      let chain: crypto.X509Certificate[];
      try {
        chain = header.x5c.map((der) => new crypto.X509Certificate(Buffer.from(der, "base64")));
      } catch {
        throw new TokenError("token x5c chain is malformed");
      }
      for (let i = 0; i + 1 < chain.length; i++) {
        if (!chain[i]!.verify(chain[i + 1]!.publicKey) || !validNow(chain[i]!, this.options.leewayMs)) {
          throw new TokenError("token x5c chain does not verify");
        }
      }
      const top = chain[chain.length - 1]!;
      const anchored = this.roots.some(
        (root) =>
          (root.fingerprint256 === top.fingerprint256 ||
            (top.checkIssued(root) && top.verify(root.publicKey))) &&
          validNow(root, this.options.leewayMs) &&
          validNow(top, this.options.leewayMs),
      );
      if (!anchored) throw new TokenError("token x5c chain does not lead to a trusted certificate");
      return [chain[0]!.publicKey];
    }
    if (typeof header.kid === "string") {
      const match = this.roots.filter((root) => libtrustKeyId(root.publicKey) === header.kid);
      if (match.length === 0) throw new TokenError("token kid names no trusted certificate");
      return match.map((root) => root.publicKey);
    }
    return this.roots.map((root) => root.publicKey);
  }
}

function describeJoseError(err: unknown, jose: typeof Jose): string {
  if (err instanceof jose.errors.JWTExpired) return "token has expired";
  if (err instanceof jose.errors.JWTClaimValidationFailed) return `token ${err.claim} claim is not accepted`;
  if (err instanceof jose.errors.JWSSignatureVerificationFailed) return "token signature does not verify";
  if (err instanceof jose.errors.JOSEAlgNotAllowed) return "token signing algorithm is not accepted";
  if (err instanceof jose.errors.JOSEError) return "token is malformed";
  return "token is invalid";
}
