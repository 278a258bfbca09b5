import crypto from "node:crypto";
import bcrypt from "bcryptjs";
import type { HtpasswdStore } from "./htpasswd.js";
import type { LoginThrottle } from "./throttle.js";

/**
 * Remembers the outcome of bcrypt checks for a short time, so that a pull of 50 layers costs one
 * bcrypt run, not 50. Entries are keyed by an HMAC (with a random per-process key) of user, password
 * and the stored hash: neither the password nor anything that could be tested offline against it is
 * kept, and a changed password (new hash) misses the cache at once.
 */
export class CredentialCache {
  private readonly key = crypto.randomBytes(32);
  private readonly entries = new Map<string, { ok: boolean; expires: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  keyOf(user: string, password: string, hash: string): string {
    return crypto
      .createHmac("sha256", this.key)
      .update(user)
      .update("\0")
      .update(password)
      .update("\0")
      .update(hash)
      .digest("base64");
  }

  get(key: string): boolean | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expires <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return e.ok;
  }

  set(key: string, ok: boolean): void {
    if (this.ttlMs <= 0) return;
    this.entries.delete(key);
    this.entries.set(key, { ok, expires: this.now() + this.ttlMs });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}

export type VerifyResult =
  | { ok: true; user: string; hash: string }
  | { ok: false; reason: "invalid" }
  | { ok: false; reason: "throttled"; retryAfterMs: number };

export type BcryptCompare = (password: string, hash: string) => Promise<boolean>;

/** Checks user/password pairs against an htpasswd store, with the cache and the throttle. */
export class CredentialVerifier {
  /** Number of bcrypt comparisons run (for tests and metrics). */
  bcryptRuns = 0;
  private readonly dummyHashes = new Map<number, string>();
  /** bcrypt runs under way, by cache key: a burst of requests with one password costs one run. */
  private readonly checking = new Map<string, Promise<boolean>>();

  constructor(
    private readonly store: HtpasswdStore,
    private readonly cache: CredentialCache,
    private readonly throttle: LoginThrottle | null,
    private readonly compare: BcryptCompare = (password, hash) => bcrypt.compare(password, hash),
  ) {
    this.dummyHash();
  }

  /**
   * An unknown user still costs a bcrypt run, at the cost most users of the file have, so that
   * timing does not tell which users exist.
   */
  private dummyHash(): string {
    const cost = Math.min(Math.max(this.store.typicalCost, 4), 14);
    let hash = this.dummyHashes.get(cost);
    if (!hash) {
      hash = bcrypt.hashSync(crypto.randomBytes(16).toString("hex"), cost);
      this.dummyHashes.set(cost, hash);
    }
    return hash;
  }

  async verify(user: string, password: string, client: string): Promise<VerifyResult> {
    const clientKey = `client:${client}`;
    const userKey = `user:${user}`;
    const throttle = this.throttle;
    if (throttle) {
      const wait = throttle.wait([clientKey]);
      if (wait > 0) return { ok: false, reason: "throttled", retryAfterMs: wait };
    }
    const entry = this.store.get(user);
    const hash = entry?.hash ?? this.dummyHash();
    const cacheKey = this.cache.keyOf(entry ? user : "", password, hash);
    const cached = entry ? this.cache.get(cacheKey) : undefined;
    // A pair checked good moments ago passes even while the user name is locked: the lock holds back
    // guessers, and must not lock out the owner who already proved the password.
    if (cached === true) return { ok: true, user, hash };
    if (throttle) {
      const wait = throttle.wait([userKey]);
      if (wait > 0) return { ok: false, reason: "throttled", retryAfterMs: wait };
    }
    let ok: boolean;
    if (cached === false) {
      ok = false;
    } else if (entry && this.checking.has(cacheKey)) {
      ok = await this.checking.get(cacheKey)!;
    } else {
      this.bcryptRuns++;
      const run = this.compare(password, hash).then((matches) => matches && entry !== undefined);
      if (entry) this.checking.set(cacheKey, run);
      try {
        ok = await run;
      } finally {
        if (entry) this.checking.delete(cacheKey);
      }
      if (entry) this.cache.set(cacheKey, ok);
    }
    if (!ok) {
      throttle?.fail([clientKey, userKey]);
      return { ok: false, reason: "invalid" };
    }
    throttle?.reset(userKey);
    return { ok: true, user, hash };
  }
}

/** Constant-time string equality (for secrets that are not hashed by someone else). */
export function safeEqual(a: string, b: string): boolean {
  const ha = crypto.createHash("sha256").update(a).digest();
  const hb = crypto.createHash("sha256").update(b).digest();
  return crypto.timingSafeEqual(ha, hb) && a.length === b.length;
}
