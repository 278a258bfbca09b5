import fs from "node:fs";
import path from "node:path";
import bcrypt from "bcryptjs";
import { describe, expect, it } from "vitest";
import { CredentialCache, CredentialVerifier, safeEqual } from "../../src/auth/credentials.js";
import { HtpasswdStore } from "../../src/auth/htpasswd.js";
import { LoginThrottle } from "../../src/auth/throttle.js";
import { htpasswdText, tmp } from "../integration/auth-fixtures.js";

function store(users: Record<string, string>): { store: HtpasswdStore; file: string } {
  const file = path.join(tmp(), "htpasswd");
  fs.writeFileSync(file, htpasswdText(users));
  const s = new HtpasswdStore(file);
  s.load();
  return { store: s, file };
}

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe("CredentialCache + CredentialVerifier", () => {
  it("runs bcrypt once for many checks of the same pair, and again after the ttl", async () => {
    const c = clock();
    const { store: s } = store({ alice: "secret" });
    let runs = 0;
    const compare = (pw: string, h: string) => {
      runs++;
      return bcrypt.compare(pw, h);
    };
    const v = new CredentialVerifier(s, new CredentialCache(60_000, 100, c.now), null, compare);
    for (let i = 0; i < 50; i++) expect((await v.verify("alice", "secret", "1.2.3.4")).ok).toBe(true);
    expect(runs).toBe(1);
    c.advance(60_001);
    expect((await v.verify("alice", "secret", "1.2.3.4")).ok).toBe(true);
    expect(runs).toBe(2);
  });

  it("runs bcrypt once for a burst of simultaneous requests with the same credentials", async () => {
    const { store: s } = store({ alice: "secret" });
    const v = new CredentialVerifier(s, new CredentialCache(60_000), null);
    const results = await Promise.all(Array.from({ length: 64 }, () => v.verify("alice", "secret", "c")));
    expect(results.every((r) => r.ok)).toBe(true);
    expect(v.bcryptRuns).toBe(1);
    const wrong = await Promise.all(Array.from({ length: 8 }, () => v.verify("alice", "nope", "c")));
    expect(wrong.every((r) => !r.ok)).toBe(true);
    expect(v.bcryptRuns).toBe(2);
  });

  it("remembers failures too, but never lets a wrong password through", async () => {
    const { store: s } = store({ alice: "secret" });
    const v = new CredentialVerifier(s, new CredentialCache(60_000), null);
    expect((await v.verify("alice", "wrong", "c")).ok).toBe(false);
    expect((await v.verify("alice", "wrong", "c")).ok).toBe(false);
    expect(v.bcryptRuns).toBe(1);
    expect((await v.verify("alice", "secret", "c")).ok).toBe(true);
    expect((await v.verify("alice", "Secret", "c")).ok).toBe(false);
    expect((await v.verify("alice", "secret ", "c")).ok).toBe(false);
    expect((await v.verify("bob", "secret", "c")).ok).toBe(false);
    expect((await v.verify("", "", "c")).ok).toBe(false);
  });

  it("misses the cache once the password has changed in the file", async () => {
    const { store: s, file } = store({ alice: "old" });
    const v = new CredentialVerifier(s, new CredentialCache(60_000), null);
    expect((await v.verify("alice", "old", "c")).ok).toBe(true);
    fs.writeFileSync(file, htpasswdText({ alice: "new" }));
    s.load();
    expect((await v.verify("alice", "old", "c")).ok).toBe(false);
    expect((await v.verify("alice", "new", "c")).ok).toBe(true);
  });

  it("a ttl of 0 disables the cache", async () => {
    const { store: s } = store({ alice: "secret" });
    const v = new CredentialVerifier(s, new CredentialCache(0), null);
    for (let i = 0; i < 3; i++) await v.verify("alice", "secret", "c");
    expect(v.bcryptRuns).toBe(3);
  });

  it("keys hold neither the password nor a plain hash of it", () => {
    const cache = new CredentialCache(1000);
    const key = cache.keyOf("alice", "hunter2", "$2y$04$abc");
    expect(key).not.toContain("hunter2");
    const other = new CredentialCache(1000).keyOf("alice", "hunter2", "$2y$04$abc");
    expect(other).not.toBe(key); // per-process random HMAC key
  });

  it("checks unknown users against a hash of the file's usual cost", async () => {
    const file = path.join(tmp(), "htpasswd");
    fs.writeFileSync(file, htpasswdText({ a: "x", b: "y" }, 5) + htpasswdText({ c: "z" }, 4));
    const s = new HtpasswdStore(file);
    s.load();
    expect(s.typicalCost).toBe(5);
    const seen: string[] = [];
    const v = new CredentialVerifier(s, new CredentialCache(60_000), null, async (_pw, hash) => {
      seen.push(hash);
      return true; // even a "match" against the dummy hash must not let an unknown user in
    });
    expect((await v.verify("ghost", "x", "c")).ok).toBe(false);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.slice(0, 7)).toMatch(/^\$2[aby]\$05\$/);
  });

  it("still spends a bcrypt run on unknown users", async () => {
    const { store: s } = store({ alice: "secret" });
    const v = new CredentialVerifier(s, new CredentialCache(60_000), null);
    await v.verify("ghost", "x", "c");
    await v.verify("ghost", "x", "c");
    expect(v.bcryptRuns).toBe(2);
  });
});

describe("LoginThrottle", () => {
  it("allows the free attempts, then locks with a doubling delay up to the maximum", () => {
    const c = clock();
    const t = new LoginThrottle({
      freeAttempts: 3,
      delayMs: 1000,
      maxDelayMs: 5000,
      windowMs: 60_000,
      now: c.now,
    });
    for (let i = 0; i < 3; i++) {
      expect(t.wait(["k"])).toBe(0);
      t.fail(["k"]);
    }
    expect(t.wait(["k"])).toBe(0);
    t.fail(["k"]); // 4th failure: 1 s
    expect(t.wait(["k"])).toBe(1000);
    c.advance(1000);
    t.fail(["k"]); // 5th: 2 s
    expect(t.wait(["k"])).toBe(2000);
    c.advance(2000);
    t.fail(["k"]); // 6th: 4 s
    expect(t.wait(["k"])).toBe(4000);
    c.advance(4000);
    t.fail(["k"]); // 7th: capped at 5 s
    expect(t.wait(["k"])).toBe(5000);
    expect(t.wait(["other"])).toBe(0);
  });

  it("forgets failures after the window and on reset", () => {
    const c = clock();
    const t = new LoginThrottle({
      freeAttempts: 1,
      delayMs: 1000,
      maxDelayMs: 5000,
      windowMs: 10_000,
      now: c.now,
    });
    t.fail(["k"]);
    t.fail(["k"]);
    expect(t.wait(["k"])).toBe(1000);
    c.advance(10_001);
    t.fail(["k"]);
    expect(t.wait(["k"])).toBe(0);
    t.fail(["k"]);
    expect(t.wait(["k"])).toBeGreaterThan(0);
    t.reset("k");
    expect(t.wait(["k"])).toBe(0);
  });

  it("bounds its memory", () => {
    const t = new LoginThrottle({ freeAttempts: 1, delayMs: 1, maxDelayMs: 1, windowMs: 1e9, maxKeys: 100 });
    for (let i = 0; i < 1000; i++) t.fail([`k${i}`]);
    expect(t.size).toBeLessThanOrEqual(100);
  });
});

describe("CredentialVerifier with the throttle", () => {
  const setup = () => {
    const c = clock();
    const { store: s } = store({ alice: "secret", bob: "bobpw" });
    const throttle = new LoginThrottle({
      freeAttempts: 3,
      delayMs: 10_000,
      maxDelayMs: 60_000,
      windowMs: 600_000,
      now: c.now,
    });
    const v = new CredentialVerifier(s, new CredentialCache(60_000, 100, c.now), throttle);
    return { c, v };
  };

  it("locks a client out after repeated failures, even for the right password, and no bcrypt runs meanwhile", async () => {
    const { c, v } = setup();
    for (let i = 0; i < 4; i++)
      expect(await v.verify("alice", `guess${i}`, "10.0.0.9")).toEqual({ ok: false, reason: "invalid" });
    const runs = v.bcryptRuns;
    const locked = await v.verify("alice", "secret", "10.0.0.9");
    expect(locked).toMatchObject({ ok: false, reason: "throttled" });
    expect((locked as { retryAfterMs: number }).retryAfterMs).toBe(10_000);
    expect(v.bcryptRuns).toBe(runs);
    // Another user from the same client is held back as well: the client is locked.
    expect(await v.verify("bob", "bobpw", "10.0.0.9")).toMatchObject({ reason: "throttled" });
    c.advance(10_000);
    expect((await v.verify("alice", "secret", "10.0.0.9")).ok).toBe(true);
  });

  it("locks a user name attacked from many addresses, but not its owner whose pair is cached", async () => {
    const { v } = setup();
    expect((await v.verify("alice", "secret", "192.0.2.1")).ok).toBe(true); // the owner, cached
    for (let i = 0; i < 4; i++) await v.verify("alice", `guess${i}`, `198.51.100.${i}`);
    expect(await v.verify("alice", "anotherguess", "198.51.100.200")).toMatchObject({ reason: "throttled" });
    // Other users are not affected, and the owner's recently proven pair still passes.
    expect((await v.verify("bob", "bobpw", "198.51.100.201")).ok).toBe(true);
    expect(await v.verify("alice", "secret", "203.0.113.7")).toMatchObject({ ok: true });
  });

  it("while a user name is locked, even its right password is not checked unless just proven", async () => {
    const { v } = setup();
    for (let i = 0; i < 4; i++) await v.verify("alice", `guess${i}`, `198.51.100.${i}`);
    const runs = v.bcryptRuns;
    expect(await v.verify("alice", "secret", "203.0.113.7")).toMatchObject({ reason: "throttled" });
    expect(v.bcryptRuns).toBe(runs);
  });

  it("a success resets the user's count but not the client's", async () => {
    const { v } = setup();
    for (let i = 0; i < 3; i++) await v.verify("alice", `guess${i}`, "c1");
    expect((await v.verify("alice", "secret", "c1")).ok).toBe(true);
    // Client c1 has 3 failures: the next failure locks it.
    await v.verify("bob", "wrong", "c1");
    expect(await v.verify("bob", "bobpw", "c1")).toMatchObject({ reason: "throttled" });
  });
});

describe("safeEqual", () => {
  it("compares", () => {
    expect(safeEqual("abc", "abc")).toBe(true);
    expect(safeEqual("abc", "abd")).toBe(false);
    expect(safeEqual("abc", "abcd")).toBe(false);
    expect(safeEqual("", "")).toBe(true);
  });
});
