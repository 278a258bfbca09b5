import crypto from "node:crypto";
import type { Logger } from "pino";
import type { Config } from "../config/schema.js";
import { isValidName } from "../registry/names.js";
import { CredentialCache, CredentialVerifier, type VerifyResult } from "./credentials.js";
import { HtpasswdStore } from "./htpasswd.js";
import { AccessRules, expandActions } from "./rules.js";
import { LoginThrottle } from "./throttle.js";
import {
  loadSigningKey,
  readCertificateBundle,
  type SigningKey,
  TokenError,
  TokenService,
  type VerifiedToken,
} from "./token.js";
import { type AccessRequest, ANONYMOUS, type Identity } from "./types.js";

export type AuthMode = "none" | "basic" | "token";

/** What the credentials of a request amount to. */
export type AuthOutcome =
  | { kind: "ok"; identity: Identity }
  | { kind: "invalid"; scheme: "basic" | "bearer"; message: string }
  | { kind: "throttled"; retryAfterMs: number };

/** The verdict on one request against what it needs. */
export type Decision =
  | { kind: "allow" }
  /** No or bad credentials, or (token mode) a token without the needed scope: 401 with a challenge. */
  | { kind: "unauthenticated"; error?: "invalid_token" | "insufficient_scope"; message: string }
  /** Authenticated, not permitted: 403. */
  | { kind: "denied"; message: string }
  | { kind: "throttled"; retryAfterMs: number };

export interface AuthServiceOptions {
  config: Config;
  dataDir: string;
  log?: Logger;
  /** Watch the htpasswd file for changes (default true). */
  watch?: boolean;
  /**
   * The signing key shared through the metadata database (sharedSigningKey), used when token auth
   * names neither a key file nor an external issuer's certificates.
   */
  signingKey?: SigningKey;
}

/** sha256 of a password hash, shortened: ties refresh tokens to the password they were issued for. */
export function passwordFingerprint(hash: string): string {
  return crypto.createHash("sha256").update(hash).digest("base64url").slice(0, 22);
}

/**
 * Everything about who a caller is and what they may do: the htpasswd users, the credential cache
 * and throttle, Berth's access rules and the token service. One per process.
 */
export class AuthService {
  readonly mode: AuthMode;
  readonly rules: AccessRules;
  readonly htpasswd: HtpasswdStore | null;
  readonly verifier: CredentialVerifier | null;
  readonly tokens: TokenService | null;
  readonly throttle: LoginThrottle | null;
  readonly cache: CredentialCache;
  readonly basicRealm: string;
  readonly config: Config;

  constructor(options: AuthServiceOptions) {
    const { config, log } = options;
    const auth = config.auth;
    this.config = config;
    this.mode = auth.token ? "token" : auth.htpasswd ? "basic" : "none";
    this.rules = new AccessRules(auth.access);
    this.basicRealm = auth.htpasswd?.realm ?? "Berth Registry";
    this.cache = new CredentialCache(auth.cache.ttl, auth.cache.size);
    this.throttle = auth.throttle.enabled
      ? new LoginThrottle({
          freeAttempts: auth.throttle.freeattempts,
          delayMs: auth.throttle.delay,
          maxDelayMs: auth.throttle.maxdelay,
          windowMs: auth.throttle.window,
        })
      : null;
    if (auth.htpasswd) {
      this.htpasswd = new HtpasswdStore(auth.htpasswd.path, log);
      this.htpasswd.load();
      if (options.watch !== false) this.htpasswd.watch();
      this.verifier = new CredentialVerifier(this.htpasswd, this.cache, this.throttle);
    } else {
      this.htpasswd = null;
      this.verifier = null;
    }
    if (auth.token) {
      const tokenOptions = {
        issuer: auth.token.issuer,
        service: auth.token.service,
        expirationMs: auth.token.expiration,
        refreshExpirationMs: auth.token.refreshexpiration,
        leewayMs: auth.token.leeway,
      };
      if (auth.token.rootcertbundle) {
        this.tokens = TokenService.external(tokenOptions, readCertificateBundle(auth.token.rootcertbundle));
      } else {
        const key = auth.token.signingkey ? loadSigningKey(auth.token.signingkey) : options.signingKey;
        if (!key)
          throw new Error("auth.token: no signing key (neither auth.token.signingkey nor a shared one)");
        log?.info({ file: key.file, alg: key.alg, kid: key.kid }, "token signing key loaded");
        this.tokens = TokenService.own(tokenOptions, key);
      }
    } else {
      this.tokens = null;
    }
    if (this.mode === "none" && auth.access) {
      log?.warn("auth.access has no effect without auth.htpasswd or auth.token");
    }
  }

  close(): void {
    this.htpasswd?.close();
  }

  get enabled(): boolean {
    return this.mode !== "none";
  }

  /** The realm that Bearer challenges send clients to; `base` is the external origin plus http.prefix. */
  tokenRealm(base: string): string {
    return this.config.auth.token?.realm || `${base.replace(/\/+$/, "")}/auth/token`;
  }

  identityFor(subject: string | null, extra: Partial<Identity> = {}): Identity {
    if (subject === null) return { ...ANONYMOUS, ...extra };
    return { subject, groups: this.rules.groupsOf(subject), admin: this.rules.isAdmin(subject), ...extra };
  }

  /** Checks a user name and password (used by Basic auth and the token endpoint). */
  async checkPassword(user: string, password: string, client: string): Promise<VerifyResult> {
    if (!this.verifier) return { ok: false, reason: "invalid" };
    return this.verifier.verify(user, password, client);
  }

  /** Works out who sent a request from its Authorization header. */
  async authenticate(authorization: string | undefined, client: string): Promise<AuthOutcome> {
    if (this.mode === "none") return { kind: "ok", identity: ANONYMOUS };
    if (!authorization) return { kind: "ok", identity: ANONYMOUS };
    const space = authorization.indexOf(" ");
    const scheme = (space < 0 ? authorization : authorization.slice(0, space)).toLowerCase();
    const value = space < 0 ? "" : authorization.slice(space + 1).trim();
    if (scheme === "basic") {
      const creds = parseBasic(value);
      if (!creds) return { kind: "invalid", scheme: "basic", message: "malformed basic credentials" };
      // Some clients (containers/image) send an empty user and password when they have none.
      if (creds.user === "" && creds.password === "") return { kind: "ok", identity: ANONYMOUS };
      if (!this.verifier || this.tokens?.issues === false) {
        return { kind: "invalid", scheme: "basic", message: "basic credentials are not accepted here" };
      }
      const result = await this.verifier.verify(creds.user, creds.password, client);
      if (result.ok) return { kind: "ok", identity: this.identityFor(result.user, { method: "basic" }) };
      if (result.reason === "throttled") return { kind: "throttled", retryAfterMs: result.retryAfterMs };
      return { kind: "invalid", scheme: "basic", message: "incorrect username or password" };
    }
    if (scheme === "bearer" && this.tokens) {
      let verified: VerifiedToken;
      try {
        verified = await this.tokens.verifyAccess(value);
      } catch (err) {
        const message = err instanceof TokenError ? err.message : "token is invalid";
        return { kind: "invalid", scheme: "bearer", message };
      }
      if (verified.issuer === "berth" && verified.subject !== null && !this.htpasswd?.has(verified.subject)) {
        return { kind: "invalid", scheme: "bearer", message: "token names a user that no longer exists" };
      }
      const extra: Partial<Identity> = {
        method: "token",
        issuer: verified.issuer,
        tokenAccess: verified.access,
      };
      if (verified.issuer === "external") {
        return { kind: "ok", identity: { subject: verified.subject, groups: [], admin: false, ...extra } };
      }
      return { kind: "ok", identity: this.identityFor(verified.subject, extra) };
    }
    return {
      kind: "invalid",
      scheme: this.mode === "token" ? "bearer" : "basic",
      message: "unsupported authorization scheme",
    };
  }

  /** Decides whether a caller may do what a request needs. An empty `needs` asks only for a known caller. */
  decide(outcome: AuthOutcome, needs: AccessRequest[]): Decision {
    if (this.mode === "none") return { kind: "allow" };
    if (outcome.kind === "throttled") return { kind: "throttled", retryAfterMs: outcome.retryAfterMs };
    if (outcome.kind === "invalid") {
      return {
        kind: "unauthenticated",
        error: outcome.scheme === "bearer" ? "invalid_token" : undefined,
        message: outcome.message,
      };
    }
    const identity = outcome.identity;
    if (identity.method === "token") {
      if (needs.length === 0) return { kind: "allow" };
      const ok = needs.every((need) => this.tokenPermits(identity, need));
      return ok
        ? { kind: "allow" }
        : {
            kind: "unauthenticated",
            error: "insufficient_scope",
            message: "the token does not grant the access needed",
          };
    }
    if (identity.subject === null) {
      if (needs.length > 0 && needs.every((need) => this.rules.permits(null, need))) return { kind: "allow" };
      return { kind: "unauthenticated", message: "authentication required" };
    }
    if (needs.every((need) => this.rules.permits(identity.subject, need))) return { kind: "allow" };
    return { kind: "denied", message: "requested access to the resource is denied" };
  }

  private tokenPermits(identity: Identity, need: AccessRequest): boolean {
    const wanted = expandActions(need.actions);
    const granted = identity.tokenAccess?.find((a) => a.type === need.type && a.name === need.name);
    if (!granted) return false;
    const grantedActions = expandActions(granted.actions);
    if (!wanted.every((a) => grantedActions.includes(a))) return false;
    // Berth's own tokens are also held to the rules as they are now, so that a revoked grant ends at once.
    if (identity.issuer === "berth") return this.rules.permits(identity.subject, need);
    return true;
  }

  /**
   * Whether the caller may pull `repository` (mounts, browsing). A token must grant pull on that very
   * repository: catalog access lists names, it never reads content.
   */
  canPull(outcome: AuthOutcome | undefined, repository: string): boolean {
    if (this.mode === "none") return true;
    if (!outcome)
      return this.rules.permits(null, { type: "repository", name: repository, actions: ["pull"] });
    if (outcome.kind !== "ok") return false;
    const identity = outcome.identity;
    const need: AccessRequest = { type: "repository", name: repository, actions: ["pull"] };
    if (identity.method === "token") return this.tokenPermits(identity, need);
    return this.rules.permits(identity.subject, need);
  }

  /**
   * Whether `repository` shows in the caller's `/v2/_catalog`: what it may pull, and, for a token that
   * grants `registry:catalog:*`, what its issuer lets it see (an external issuer decided that itself;
   * Berth's own tokens list what the rules let the user pull).
   */
  canList(outcome: AuthOutcome | undefined, repository: string): boolean {
    if (this.canPull(outcome, repository)) return true;
    if (outcome?.kind !== "ok" || outcome.identity.method !== "token") return false;
    const identity = outcome.identity;
    const catalog = identity.tokenAccess?.some((a) => a.type === "registry" && a.name === "catalog");
    if (!catalog) return false;
    const need: AccessRequest = { type: "repository", name: repository, actions: ["pull"] };
    return identity.issuer === "external" || this.rules.permits(identity.subject, need);
  }

  /**
   * Whether the caller may pull every repository (registry-wide usage totals). A token is held to what it
   * grants, repository by repository, so it never qualifies.
   */
  pullsEverything(outcome: AuthOutcome | undefined): boolean {
    if (this.mode === "none") return true;
    if (!outcome) return this.rules.pullsEverything(null);
    if (outcome.kind !== "ok" || outcome.identity.method === "token") return false;
    return this.rules.pullsEverything(outcome.identity.subject);
  }

  /** Narrows requested scopes to what `subject` may do: the `access` claim of an issued token. */
  grant(subject: string | null, scopes: AccessRequest[]): AccessRequest[] {
    const out: AccessRequest[] = [];
    for (const scope of scopes) {
      if (scope.type === "repository" && !isValidName(scope.name)) continue;
      const granted = this.rules.grant(subject, scope);
      if (granted) out.push(granted);
    }
    return out;
  }
}

/** Decodes the value of a Basic Authorization header; null when malformed. */
export function parseBasic(value: string): { user: string; password: string } | null {
  if (value === "" || !/^[A-Za-z0-9+/]+=*$/.test(value)) return null;
  const decoded = Buffer.from(value, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) return null;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
