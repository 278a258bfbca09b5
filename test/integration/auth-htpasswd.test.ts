// htpasswd mode against a real Berth: start-up errors, `berth user` and live reload, files shared
// with Apache's htpasswd, the bcrypt cache, throttling, and secrets kept out of the logs.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import bcrypt from "bcryptjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, CLI, startBerth, tempDir } from "../helpers/server.js";
import { basic, htpasswdText, waitFor } from "./auth-fixtures.js";

function writeConfig(dir: string, htpasswd: string, extra: string[] = []): string {
  const file = path.join(dir, "config.yml");
  fs.writeFileSync(
    file,
    ["auth:", "  htpasswd:", "    realm: Berth Test", `    path: ${htpasswd}`, ...extra, ""].join("\n"),
  );
  return file;
}

function berthCli(args: string[], input?: string) {
  return spawnSync(process.execPath, [CLI, ...args], { input, encoding: "utf8", timeout: 60_000 });
}

async function status(url: string, authorization?: string, method = "GET"): Promise<number> {
  const res = await fetch(url, { method, headers: authorization ? { authorization } : {} });
  await res.arrayBuffer();
  return res.status;
}

describe("start-up", () => {
  it.each([
    ["{SHA}", "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", /htpasswd:3: user "bob" has a password in SHA-1/],
    [
      "MD5",
      "bob:$apr1$9Fsr2/ul$oXkK6AJ8bQhk6BFZ3vbgK0",
      /htpasswd:3: user "bob" has a password in Apache MD5/,
    ],
  ])(
    "refuses an htpasswd file with a %s line, naming the line (several workers too)",
    (_name, line, message) => {
      const dir = tempDir();
      const htpasswd = path.join(dir, "htpasswd");
      fs.writeFileSync(htpasswd, `${htpasswdText({ alice: "a" })}# a comment\n${line}\n`);
      const config = writeConfig(dir, htpasswd);
      const result = spawnSync(
        process.execPath,
        [CLI, "serve", "--config", config, "--addr", "127.0.0.1:0", "--data-dir", dir, "--workers", "2"],
        {
          encoding: "utf8",
          timeout: 30_000,
        },
      );
      expect(result.status).not.toBe(0);
      expect(result.stderr + result.stdout).toMatch(message);
      expect(result.stderr + result.stdout).toContain(htpasswd);
    },
  );

  it("refuses a missing htpasswd file", () => {
    const dir = tempDir();
    const config = writeConfig(dir, path.join(dir, "missing"));
    const result = spawnSync(
      process.execPath,
      [CLI, "serve", "--config", config, "--addr", "127.0.0.1:0", "--data-dir", dir, "--workers", "1"],
      {
        encoding: "utf8",
        timeout: 30_000,
      },
    );
    expect(result.status).not.toBe(0);
    expect(result.stderr + result.stdout).toMatch(/cannot read htpasswd file .*missing/);
  });
});

describe("berth user and live reload", () => {
  let berth: Berth;
  let dir: string;
  let htpasswd: string;
  let config: string;
  beforeAll(async () => {
    dir = tempDir();
    htpasswd = path.join(dir, "htpasswd");
    fs.writeFileSync(htpasswd, htpasswdText({ first: "first-pw" }));
    // Polling for reloads sends wrong passwords: the throttle has its own test below.
    config = writeConfig(dir, htpasswd, ["  throttle:", "    enabled: false"]);
    berth = await startBerth({ args: ["--config", config], workers: 2 });
  });
  afterAll(() => berth?.cleanup());

  it("answers anonymous callers with a Basic challenge", async () => {
    const res = await fetch(`${berth.url}/v2/`);
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe('Basic realm="Berth Test"');
  });

  it("adds a user from stdin; the running server accepts it without a restart (every worker)", async () => {
    const r = berthCli(["user", "add", "newbie", "--password-stdin", "--config", config], "newbie-pw\n");
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("added user newbie");
    expect(fs.readFileSync(htpasswd, "utf8")).toMatch(/^newbie:\$2y\$10\$[./A-Za-z0-9]{53}$/m);
    // The trailing newline is not part of the password.
    const ok = await waitFor(
      () => status(`${berth.url}/v2/`, basic("newbie", "newbie-pw")),
      (s) => s === 200,
    );
    expect(ok).toBe(200);
    // Both workers: a handful of fresh connections all succeed.
    for (let i = 0; i < 8; i++)
      expect(await status(`${berth.url}/v2/`, basic("newbie", "newbie-pw"))).toBe(200);
    expect(await status(`${berth.url}/v2/`, basic("newbie", "newbie-pw\n"))).toBe(401);
  });

  it("lists users, refuses duplicates without --update, and updates passwords with it", async () => {
    const list = berthCli(["user", "list", "--htpasswd", htpasswd]);
    expect(list.stdout.split("\n").filter(Boolean)).toEqual(["first", "newbie"]);
    const dup = berthCli(["user", "add", "newbie", "--password-stdin", "--htpasswd", htpasswd], "other");
    expect(dup.status).toBe(1);
    expect(dup.stderr).toMatch(/already exists/);
    const upd = berthCli(
      ["user", "add", "newbie", "--update", "--password-stdin", "--htpasswd", htpasswd],
      "changed-pw",
    );
    expect(upd.status).toBe(0);
    expect(
      await waitFor(
        () => status(`${berth.url}/v2/`, basic("newbie", "changed-pw")),
        (s) => s === 200,
      ),
    ).toBe(200);
    expect(await status(`${berth.url}/v2/`, basic("newbie", "newbie-pw"))).toBe(401);
  });

  it("removes a user, who is then refused", async () => {
    const rm = berthCli(["user", "rm", "newbie", "--config", config]);
    expect(rm.status).toBe(0);
    expect(
      await waitFor(
        () => status(`${berth.url}/v2/`, basic("newbie", "changed-pw")),
        (s) => s === 401,
      ),
    ).toBe(401);
    expect(berthCli(["user", "rm", "newbie", "--config", config]).status).toBe(1);
  });

  it("refuses bad names, empty passwords, and a missing terminal", () => {
    expect(berthCli(["user", "add", "a:b", "--password-stdin", "--htpasswd", htpasswd], "x").stderr).toMatch(
      /not a valid user name/,
    );
    expect(
      berthCli(["user", "add", "empty", "--password-stdin", "--htpasswd", htpasswd], "\n").stderr,
    ).toMatch(/empty/);
    expect(berthCli(["user", "add", "notty", "--htpasswd", htpasswd], "").stderr).toMatch(/--password-stdin/);
  });

  it("shares files with Apache htpasswd both ways", async () => {
    // A line written by `htpasswd -B` works for logging in...
    execFileSync("htpasswd", ["-Bb", htpasswd, "apache", "apache-pw"], { stdio: "ignore" });
    expect(
      await waitFor(
        () => status(`${berth.url}/v2/`, basic("apache", "apache-pw")),
        (s) => s === 200,
      ),
    ).toBe(200);
    // ...and a user added by Berth verifies with `htpasswd -v`.
    berthCli(["user", "add", "berthy", "--password-stdin", "--htpasswd", htpasswd], "berthy-pw");
    execFileSync("htpasswd", ["-vb", htpasswd, "berthy", "berthy-pw"], { stdio: "ignore" });
    expect(berthCli(["user", "list", "--htpasswd", htpasswd]).stdout).toContain("apache");
  });

  it("picks up a file replaced by an editor (write a copy, rename over)", async () => {
    fs.writeFileSync(`${htpasswd}.tmp`, htpasswdText({ edited: "edited-pw" }));
    fs.renameSync(`${htpasswd}.tmp`, htpasswd);
    expect(
      await waitFor(
        () => status(`${berth.url}/v2/`, basic("edited", "edited-pw")),
        (s) => s === 200,
      ),
    ).toBe(200);
    expect(await status(`${berth.url}/v2/`, basic("first", "first-pw"))).toBe(401);
  });

  it("keeps the last good users when the file turns invalid", async () => {
    fs.writeFileSync(htpasswd, "edited:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
    await new Promise((r) => setTimeout(r, 1500));
    expect(await status(`${berth.url}/v2/`, basic("edited", "edited-pw"))).toBe(200);
    expect(berth.logs.join("\n")).toMatch(/htpasswd file not reloaded/);
  });
});

describe("an htpasswd file edited in turn by Apache's htpasswd and berth user", () => {
  it("stays well formed and readable by both, keeping blank lines, comments and the order of users", async () => {
    const dir = tempDir();
    const file = path.join(dir, "htpasswd");
    // `htpasswd -Bbn` prints the line and an empty line; that output, with a comment, starts the file.
    const first = execFileSync("htpasswd", ["-Bbn", "alice", "alice-pw"], { encoding: "utf8" });
    expect(first.endsWith("\n\n")).toBe(true);
    fs.writeFileSync(file, `# registry users\n${first}`, { mode: 0o640 });
    const add = (user: string, extra: string[] = []) => {
      const r = berthCli(
        ["user", "add", user, "--password-stdin", "--cost", "4", "--htpasswd", file, ...extra],
        `${user}-pw`,
      );
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
    };

    const before = fs.readFileSync(file, "utf8");
    add("bob");
    let text = fs.readFileSync(file, "utf8");
    // What was there is kept byte for byte; the new user is one newline-terminated line after it.
    expect(text.startsWith(before)).toBe(true);
    expect(text.slice(before.length)).toMatch(/^bob:\$2y\$04\$[./A-Za-z0-9]{53}\n$/);

    execFileSync("htpasswd", ["-Bb", "-C", "4", file, "carol", "carol-pw"], { stdio: "ignore" });
    add("dave");
    execFileSync("htpasswd", ["-Bb", "-C", "4", file, "erin", "erin-pw"], { stdio: "ignore" });
    add("alice", ["--update"]);
    execFileSync("htpasswd", ["-Bb", "-C", "4", file, "bob", "bob-pw2"], { stdio: "ignore" });

    text = fs.readFileSync(file, "utf8");
    expect(text.endsWith("\n")).toBe(true);
    expect(text.startsWith("# registry users\nalice:")).toBe(true);
    expect(text).toContain("\n\n"); // the empty line htpasswd -Bbn wrote is still there
    const users = ["alice", "bob", "carol", "dave", "erin"];
    expect(berthCli(["user", "list", "--htpasswd", file]).stdout.trim().split("\n")).toEqual(users);
    expect((fs.statSync(file).mode & 0o777).toString(8)).toBe("640");

    // Apache verifies every password...
    const password = (u: string) => (u === "bob" ? "bob-pw2" : `${u}-pw`);
    for (const u of users) execFileSync("htpasswd", ["-vb", file, u, password(u)], { stdio: "ignore" });
    // ...and a Berth serving the file lets every user in.
    const server = await startBerth({
      args: ["--config", writeConfig(dir, file, ["  throttle:", "    enabled: false"])],
    });
    try {
      for (const u of users) expect(await status(`${server.url}/v2/`, basic(u, password(u))), u).toBe(200);
      expect(await status(`${server.url}/v2/`, basic("alice", "wrong"))).toBe(401);
    } finally {
      await server.cleanup();
    }
  });

  it.skipIf(process.getuid?.() !== 0)(
    "keeps the file's owner when root edits it for a server running as another user",
    () => {
      const dir = tempDir();
      const file = path.join(dir, "htpasswd");
      fs.writeFileSync(file, execFileSync("htpasswd", ["-Bbn", "alice", "alice-pw"], { encoding: "utf8" }), {
        mode: 0o600,
      });
      fs.chownSync(file, 4321, 4321);
      const r = berthCli(
        ["user", "add", "bob", "--password-stdin", "--cost", "4", "--htpasswd", file],
        "bob-pw",
      );
      expect(r.status).toBe(0);
      const st = fs.statSync(file);
      expect([st.uid, st.gid, (st.mode & 0o777).toString(8)]).toEqual([4321, 4321, "600"]);
    },
  );
});

describe("the bcrypt cache", () => {
  // Cost 11 costs bcryptjs about a quarter of a second per check on this machine.
  const slowUsers = () => `slow:${bcrypt.hashSync("slow-pw", 11)}\n`;

  async function timeHeads(url: string, n: number, authorization: string): Promise<number> {
    const start = performance.now();
    for (let i = 0; i < n; i++) expect(await status(url, authorization, "HEAD")).toBe(200);
    return performance.now() - start;
  }

  it("makes 50 authenticated requests cost one bcrypt run, and a ttl of 0 does not", async () => {
    const dir = tempDir();
    const htpasswd = path.join(dir, "htpasswd");
    fs.writeFileSync(htpasswd, slowUsers());
    const cached = await startBerth({ args: ["--config", writeConfig(dir, htpasswd)] });
    const dir2 = tempDir();
    fs.writeFileSync(path.join(dir2, "htpasswd"), slowUsers());
    const uncached = await startBerth({
      args: ["--config", writeConfig(dir2, path.join(dir2, "htpasswd"), ["  cache:", "    ttl: 0"])],
    });
    try {
      const auth = basic("slow", "slow-pw");
      const single = await timeHeads(`${uncached.url}/v2/`, 1, auth);
      const withCache = await timeHeads(`${cached.url}/v2/`, 50, auth);
      const withoutCache = await timeHeads(`${uncached.url}/v2/`, 10, auth);
      // Without the cache every request pays for bcrypt: 10 requests take several single checks...
      expect(withoutCache).toBeGreaterThan(single * 5);
      // ...with it 50 requests cost about one, well below even those 10.
      expect(withCache).toBeLessThan(withoutCache / 2);
      expect(withCache).toBeLessThan(single * 5);
    } finally {
      await cached.cleanup();
      await uncached.cleanup();
    }
  });
});

describe("throttling", () => {
  let berth: Berth;
  beforeAll(async () => {
    const dir = tempDir();
    const htpasswd = path.join(dir, "htpasswd");
    fs.writeFileSync(htpasswd, htpasswdText({ victim: "victim-pw", other: "other-pw" }));
    berth = await startBerth({
      args: [
        "--config",
        writeConfig(dir, htpasswd, [
          "  throttle:",
          "    freeattempts: 3",
          "    delay: 2s",
          "    maxdelay: 10s",
        ]),
      ],
    });
  });
  afterAll(() => berth?.cleanup());

  it("slows a guesser down: 429 with Retry-After, even for the right password, then lets the owner back in", async () => {
    for (let i = 0; i < 4; i++)
      expect(await status(`${berth.url}/v2/`, basic("victim", `guess-${i}`))).toBe(401);
    const res = await fetch(`${berth.url}/v2/`, { headers: { authorization: basic("victim", "victim-pw") } });
    expect(res.status).toBe(429);
    expect(((await res.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe("TOOMANYREQUESTS");
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    // The client is locked as a whole: another user from the same address waits too.
    expect(await status(`${berth.url}/v2/`, basic("other", "other-pw"))).toBe(429);
    // Anonymous requests carry no password and are not held back.
    expect(await status(`${berth.url}/v2/`)).toBe(401);
    await new Promise((r) => setTimeout(r, 2200));
    expect(await status(`${berth.url}/v2/`, basic("victim", "victim-pw"))).toBe(200);
    // Each further failure doubles the lock: the next one locks for about 4 s.
    expect(await status(`${berth.url}/v2/`, basic("victim", "wrong-again"))).toBe(401);
    const again = await fetch(`${berth.url}/v2/`, {
      headers: { authorization: basic("victim", "victim-pw") },
    });
    expect(again.status).toBe(429);
    expect(Number(again.headers.get("retry-after"))).toBeGreaterThanOrEqual(3);
  });
});

describe("secrets stay out of the logs", () => {
  it("logs neither passwords, Authorization headers nor tokens, even at trace level", async () => {
    const dir = tempDir();
    const htpasswd = path.join(dir, "htpasswd");
    fs.writeFileSync(htpasswd, htpasswdText({ logger: "Sup3r-Secret-Pw" }));
    const config = path.join(dir, "config.yml");
    fs.writeFileSync(
      config,
      ["auth:", "  htpasswd:", `    path: ${htpasswd}`, "  token:", "    service: logs", ""].join("\n"),
    );
    const berth = await startBerth({ args: ["--config", config, "--log-level", "trace"] });
    try {
      const creds = basic("logger", "Sup3r-Secret-Pw");
      const tokenRes = await fetch(
        `${berth.url}/auth/token?service=logs&scope=repository:a/b:pull&offline_token=true`,
        { headers: { authorization: creds } },
      );
      const { token, refresh_token } = (await tokenRes.json()) as { token: string; refresh_token: string };
      await status(`${berth.url}/v2/`, `Bearer ${token}`);
      await status(`${berth.url}/v2/`, creds);
      await status(`${berth.url}/v2/`, basic("logger", "Wr0ng-Secret-Pw"));
      const form = new URLSearchParams({
        grant_type: "password",
        username: "logger",
        password: "Sup3r-Secret-Pw",
        service: "logs",
        client_id: "t",
      });
      await fetch(`${berth.url}/auth/token`, {
        method: "POST",
        body: form,
        headers: { "content-type": "application/x-www-form-urlencoded" },
      });
      const form2 = new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token,
        service: "logs",
        client_id: "t",
      });
      await fetch(`${berth.url}/auth/token`, {
        method: "POST",
        body: form2,
        headers: { "content-type": "application/x-www-form-urlencoded" },
      });
      await new Promise((r) => setTimeout(r, 300));
      const logs = berth.logs.join("\n");
      expect(logs).toMatch(/"path":"\/auth\/token/); // the requests were logged...
      for (const secret of [
        "Sup3r-Secret-Pw",
        "Wr0ng-Secret-Pw",
        creds.slice(6),
        token,
        refresh_token,
        token.split(".")[2]!,
      ]) {
        expect(logs).not.toContain(secret); // ...without their secrets
      }
    } finally {
      await berth.cleanup();
    }
  });
});
