export interface ThrottleOptions {
  /** Failures allowed within `windowMs` before delays start. */
  freeAttempts: number;
  /** First delay in ms; doubles per further failure. */
  delayMs: number;
  maxDelayMs: number;
  /** Failures older than this (since the last one) are forgotten. */
  windowMs: number;
  /** Most keys remembered; the oldest are dropped beyond it. */
  maxKeys?: number;
  now?: () => number;
}

interface Entry {
  failures: number;
  last: number;
  lockedUntil: number;
}

/**
 * Slows down failed logins. Each key (a client address, a user name) counts its recent failures;
 * past `freeAttempts` every failure locks the key for a delay that doubles each time, and while a
 * key is locked no password is checked for it at all (the caller answers 429 with Retry-After), so
 * a guesser gets a handful of tries per window, not thousands.
 *
 * The counters live in this process's memory: with several worker processes each keeps its own,
 * which multiplies the allowance by the number of workers but keeps the exponential slope.
 */
export class LoginThrottle {
  private readonly entries = new Map<string, Entry>();
  private readonly now: () => number;
  private readonly maxKeys: number;

  constructor(private readonly options: ThrottleOptions) {
    this.now = options.now ?? Date.now;
    this.maxKeys = options.maxKeys ?? 100_000;
  }

  /** Milliseconds the longest-locked of `keys` must still wait; 0 when none is locked. */
  wait(keys: string[]): number {
    const now = this.now();
    let wait = 0;
    for (const key of keys) {
      const e = this.entries.get(key);
      if (e && e.lockedUntil > now) wait = Math.max(wait, e.lockedUntil - now);
    }
    return wait;
  }

  /** Records a failure for each key. */
  fail(keys: string[]): void {
    const now = this.now();
    for (const key of keys) {
      let e = this.entries.get(key);
      if (!e || now - e.last > this.options.windowMs) e = { failures: 0, last: now, lockedUntil: 0 };
      e.failures++;
      e.last = now;
      const over = e.failures - this.options.freeAttempts;
      if (over > 0) {
        const delay = Math.min(this.options.maxDelayMs, this.options.delayMs * 2 ** Math.min(over - 1, 30));
        e.lockedUntil = now + delay;
      }
      // Re-insert so that Map order is least-recently-failed first.
      this.entries.delete(key);
      this.entries.set(key, e);
    }
    this.prune(now);
  }

  /** Forgets a key's failures (after a successful login as that user). */
  reset(key: string): void {
    this.entries.delete(key);
  }

  /** Number of keys remembered (for tests). */
  get size(): number {
    return this.entries.size;
  }

  private prune(now: number): void {
    if (this.entries.size <= this.maxKeys) return;
    for (const [key, e] of this.entries) {
      if (this.entries.size <= this.maxKeys * 0.9) break;
      if (now - e.last > this.options.windowMs || this.entries.size > this.maxKeys) this.entries.delete(key);
    }
  }
}
