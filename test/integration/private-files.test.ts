/**
 * Secrets stay private on disk (issue 21): the SQLite database holds the token signing key (the
 * `settings` table), so it, its -wal and -shm, and the keys of `berth tls init` are 0600 in 0700
 * folders; what an older Berth left readable is tightened at start with one log line; another local
 * user (`nobody`) reads none of them. `berth user` never leaves an htpasswd file readable by others.
 * Runs in the `sqlite` project (the database file is what is checked).
 */
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import SQLite from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Berth, CLI, startBerth, TEST_DB, tempDir } from "../helpers/server.js";
import { htpasswdText } from "./auth-fixtures.js";

function berthCli(args: string[], input?: string) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", input, timeout: 60_000 });
}

const mode = (p: string) => statSync(p).mode & 0o777;
const asRoot = process.getuid?.() === 0;

/** Runs `command` as the unprivileged user nobody, with no supplementary groups. */
function asNobody(...command: string[]) {
  return spawnSync("setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", ...command], {
    encoding: "utf8",
  });
}

/** Every regular file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name));
}

describe.skipIf(TEST_DB === "postgres")("secrets in the data directory", () => {
  let dir: string;
  let dataDir: string;
  let config: string;
  let berth: Berth | undefined;

  beforeAll(() => {
    dir = tempDir("berth-private-");
    dataDir = path.join(dir, "data");
    // Where a deployment keeps its data (/var/lib/registry): a folder every local user may enter.
    chmodSync(dir, 0o755);
    const htpasswd = path.join(dir, "htpasswd");
    writeFileSync(htpasswd, htpasswdText({ admin: "admin-pw" }));
    config = path.join(dir, "config.yml");
    writeFileSync(
      config,
      ["auth:", "  htpasswd:", `    path: ${htpasswd}`, "  token:", "    service: private-test", ""].join(
        "\n",
      ),
    );
  });
  afterAll(async () => {
    await berth?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  const db = () => path.join(dataDir, "berth", "berth.db");

  it("a new data directory: berth/ and tls/ are 0700, the database, its -wal and -shm and the keys 0600", async () => {
    expect(berthCli(["tls", "init", "--data-dir", dataDir, "--host", "localhost"]).status).toBe(0);
    chmodSync(dataDir, 0o755);
    berth = await startBerth({ dataDir, args: ["--config", config], scheme: "https", captureLogs: true });
    // The key the database protects is there: the signing key Berth generated for its tokens.
    const reader = new SQLite(db(), { readonly: true });
    const key = reader.prepare("select value from settings where name = 'auth.token.signingkey'").get() as {
      value: string;
    };
    reader.close();
    expect(key.value).toContain("PRIVATE KEY");

    expect(mode(path.join(dataDir, "berth"))).toBe(0o700);
    expect(mode(path.join(dataDir, "tls"))).toBe(0o700);
    for (const file of [db(), `${db()}-wal`, `${db()}-shm`, path.join(dataDir, "tls", "ca.key")]) {
      expect(existsSync(file), file).toBe(true);
      expect(mode(file).toString(8), file).toBe("600");
    }
    // Every file Berth made there, but the CA certificate clients are given, is its owner's alone.
    const files = [...filesUnder(path.join(dataDir, "berth")), ...filesUnder(path.join(dataDir, "tls"))];
    expect(files.length).toBeGreaterThanOrEqual(5);
    for (const file of files) {
      if (file.endsWith(path.join("tls", "ca.crt"))) continue;
      expect(mode(file) & 0o077, `${file} ${mode(file).toString(8)}`).toBe(0);
    }
    expect(berth.logs.join("\n")).not.toContain("made private");

    if (asRoot) {
      // nobody may enter the data directory, and read none of the secrets.
      expect(asNobody("ls", dataDir).status).toBe(0);
      for (const file of [db(), `${db()}-wal`, path.join(dataDir, "tls", "ca.key")]) {
        const read = asNobody("cat", file);
        expect(read.status, file).not.toBe(0);
        expect(read.stderr).toContain("Permission denied");
      }
    }
  });

  it("tightens at start what an older Berth left readable, and says what it changed in one line", async () => {
    await berth?.stop();
    chmodSync(path.join(dataDir, "berth"), 0o755);
    chmodSync(db(), 0o644);
    for (const side of [`${db()}-wal`, `${db()}-shm`]) if (existsSync(side)) chmodSync(side, 0o644);
    chmodSync(path.join(dataDir, "tls", "ca.key"), 0o644);
    if (asRoot) expect(asNobody("cat", db()).status).toBe(0); // the hole, as an older Berth left it

    berth = await startBerth({ dataDir, args: ["--config", config], scheme: "https", captureLogs: true });
    expect(mode(path.join(dataDir, "berth"))).toBe(0o700);
    expect(mode(db())).toBe(0o600);
    expect(mode(`${db()}-wal`)).toBe(0o600);
    expect(mode(path.join(dataDir, "tls", "ca.key"))).toBe(0o600);
    const lines = berth.logs.filter((l) => l.includes("made private"));
    expect(lines).toHaveLength(1);
    const { msg, level } = JSON.parse(lines[0]!) as { msg: string; level: number };
    expect(level).toBe(40);
    expect(msg).toContain("berth 0755 -> 0700");
    expect(msg).toContain(`${path.join("berth", "berth.db")} 0644 -> 0600`);
    expect(msg).toContain(`${path.join("tls", "ca.key")} 0644 -> 0600`);
    expect(msg).toContain("rotate");
    if (asRoot) {
      const read = asNobody("cat", db());
      expect(read.status).not.toBe(0);
      expect(read.stderr).toContain("Permission denied");
    }
  });
});

describe("berth user", () => {
  it("creates an htpasswd file 0600 and takes other users' access away from an existing one", () => {
    const dir = tempDir("berth-private-htpasswd-");
    try {
      const created = path.join(dir, "new-htpasswd");
      expect(
        berthCli(["user", "add", "alice", "--htpasswd", created, "--password-stdin", "--cost", "4"], "pw\n")
          .status,
      ).toBe(0);
      expect(mode(created)).toBe(0o600);
      const loose = path.join(dir, "htpasswd");
      writeFileSync(loose, htpasswdText({ admin: "admin-pw" }));
      chmodSync(loose, 0o666);
      const add = berthCli(
        ["user", "add", "bob", "--htpasswd", loose, "--password-stdin", "--cost", "4"],
        "pw\n",
      );
      expect(add.stderr).toBe("");
      expect(mode(loose).toString(8)).toBe("640");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
