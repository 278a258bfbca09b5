import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import bcrypt from "bcryptjs";
import { afterEach, describe, expect, it } from "vitest";
import {
  editHtpasswd,
  HtpasswdError,
  HtpasswdStore,
  listHtpasswdUsers,
  parseHtpasswd,
} from "../../src/auth/htpasswd.js";
import { htpasswdText, tmp, waitFor } from "../integration/auth-fixtures.js";

const hash = (pw: string, prefix = "$2y$") => bcrypt.hashSync(pw, 4).replace(/^\$2b\$/, prefix);

function hasHtpasswd(): boolean {
  try {
    execFileSync("htpasswd", ["-h"], { stdio: "ignore" });
    return true;
  } catch (err) {
    // htpasswd -h exits non-zero but exists.
    return (err as NodeJS.ErrnoException).code !== "ENOENT";
  }
}

describe("parseHtpasswd", () => {
  it("accepts the three bcrypt spellings, comments and blank lines", () => {
    const text = `# users\nalice:${hash("a", "$2y$")}\n\nbob:${hash("b", "$2a$")}\r\ncarol:${hash("c", "$2b$")}\n`;
    const users = parseHtpasswd(text, "f");
    expect([...users.keys()]).toEqual(["alice", "bob", "carol"]);
    expect(users.get("bob")!.line).toBe(4);
    expect(bcrypt.compareSync("b", users.get("bob")!.hash)).toBe(true);
  });

  it.each([
    ["$apr1$", "x:$apr1$abc$0123456789012345678901", /Apache MD5/],
    ["{SHA}", "x:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", /SHA-1/],
    ["crypt", "x:abJnggxhB/yWI", /DES crypt/],
    ["plain", "x:secret", /plain text/],
    ["sha512-crypt", "x:$6$salt$hash", /SHA-512-crypt/],
    ["truncated bcrypt", "x:$2y$10$tooshort", /malformed bcrypt/],
  ])("refuses %s with an error naming file and line", (_name, line, scheme) => {
    const text = `alice:${hash("a")}\n# comment\n${line}\n`;
    expect(() => parseHtpasswd(text, "/etc/htpasswd")).toThrow(HtpasswdError);
    try {
      parseHtpasswd(text, "/etc/htpasswd");
    } catch (err) {
      expect((err as Error).message).toMatch(/^\/etc\/htpasswd:3: user "x"/);
      expect((err as Error).message).toMatch(scheme);
    }
  });

  it("refuses a line without a colon", () => {
    expect(() => parseHtpasswd("justaname\n", "f")).toThrow(/f:1: expected "user:password-hash"/);
  });

  it("keeps the first line of a user listed twice, as Apache does", () => {
    const first = hash("one");
    const users = parseHtpasswd(`u:${first}\nu:${hash("two")}\n`);
    expect(users.get("u")!.hash).toBe(first);
  });
});

describe("editHtpasswd", () => {
  it("adds, replaces and removes lines, keeping comments", () => {
    let text = "# keep me\n";
    text = editHtpasswd(text, "alice", "H1");
    text = editHtpasswd(text, "bob", "H2");
    expect(text).toBe("# keep me\nalice:H1\nbob:H2\n");
    text = editHtpasswd(text, "alice", "H3");
    expect(text).toBe("# keep me\nalice:H3\nbob:H2\n");
    text = editHtpasswd(text, "alice", null);
    expect(text).toBe("# keep me\nbob:H2\n");
    expect(listHtpasswdUsers(text)).toEqual(["bob"]);
    expect(editHtpasswd("", "x", "H")).toBe("x:H\n");
  });

  it("appends after everything there, blank lines and a missing last newline included", () => {
    expect(editHtpasswd("alice:H1\n\n", "bob", "H2")).toBe("alice:H1\n\nbob:H2\n");
    expect(editHtpasswd("alice:H1", "bob", "H2")).toBe("alice:H1\nbob:H2\n");
    expect(editHtpasswd("\n# c\n\nalice:H1\n", "bob", "H2")).toBe("\n# c\n\nalice:H1\nbob:H2\n");
    expect(editHtpasswd("b:1\na:2\nc:3\n", "a", "9")).toBe("b:1\na:9\nc:3\n");
  });

  it("keeps CRLF line ends in a file that has them", () => {
    expect(editHtpasswd("alice:H1\r\n\r\n", "bob", "H2")).toBe("alice:H1\r\n\r\nbob:H2\r\n");
    expect(editHtpasswd("alice:H1\r\nbob:H2\r\n", "alice", null)).toBe("bob:H2\r\n");
  });

  it("does not treat a user whose name is a prefix as the same user", () => {
    expect(editHtpasswd("al:H1\nalice:H2\n", "al", null)).toBe("alice:H2\n");
  });
});

describe.runIf(hasHtpasswd())("files made by Apache htpasswd -B", () => {
  it("are read, and their passwords verify", () => {
    const line = execFileSync("htpasswd", ["-Bbn", "apache", "s3cret"], { encoding: "utf8" });
    const users = parseHtpasswd(line);
    expect(bcrypt.compareSync("s3cret", users.get("apache")!.hash)).toBe(true);
    expect(bcrypt.compareSync("wrong", users.get("apache")!.hash)).toBe(false);
  });

  it("accept hashes Berth writes (htpasswd -v verifies them)", () => {
    const dir = tmp();
    const file = path.join(dir, "htpasswd");
    fs.writeFileSync(file, htpasswdText({ berth: "pw-from-berth" }));
    execFileSync("htpasswd", ["-vb", file, "berth", "pw-from-berth"], { stdio: "ignore" });
    expect(() => execFileSync("htpasswd", ["-vb", file, "berth", "nope"], { stdio: "ignore" })).toThrow();
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe("HtpasswdStore", () => {
  const stores: HtpasswdStore[] = [];
  afterEach(() => {
    for (const s of stores.splice(0)) s.close();
  });

  function open(file: string) {
    const store = new HtpasswdStore(file);
    store.load();
    store.watch({ pollMs: 200, debounceMs: 20 });
    stores.push(store);
    return store;
  }

  it("fails to load a missing file with a message naming it", () => {
    expect(() => new HtpasswdStore("/nonexistent/htpasswd").load()).toThrow(
      /cannot read htpasswd file \/nonexistent\/htpasswd/,
    );
  });

  it("picks up a file written in place", async () => {
    const dir = tmp();
    const file = path.join(dir, "htpasswd");
    fs.writeFileSync(file, htpasswdText({ alice: "a" }));
    const store = open(file);
    expect(store.list()).toEqual(["alice"]);
    fs.appendFileSync(file, htpasswdText({ bob: "b" }));
    expect(await waitFor(() => store.has("bob"), Boolean)).toBe(true);
  });

  it("picks up a file replaced by rename (as editors do), again and again", async () => {
    const dir = tmp();
    const file = path.join(dir, "htpasswd");
    fs.writeFileSync(file, htpasswdText({ alice: "a" }));
    const store = open(file);
    for (const name of ["bob", "carol", "dave"]) {
      fs.writeFileSync(`${file}.swp`, htpasswdText({ [name]: "x" }));
      fs.renameSync(`${file}.swp`, file);
      expect(await waitFor(() => store.has(name), Boolean)).toBe(true);
      expect(store.has("alice")).toBe(false);
    }
  });

  it("keeps the previous users when the new file is invalid, and recovers", async () => {
    const dir = tmp();
    const file = path.join(dir, "htpasswd");
    fs.writeFileSync(file, htpasswdText({ alice: "a" }));
    const store = open(file);
    const generation = store.generation;
    fs.writeFileSync(file, "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
    await new Promise((r) => setTimeout(r, 600));
    expect(store.generation).toBe(generation);
    expect(store.has("alice")).toBe(true);
    fs.writeFileSync(file, htpasswdText({ zed: "z" }));
    expect(await waitFor(() => store.has("zed"), Boolean)).toBe(true);
  });

  it("survives the file disappearing for a while", async () => {
    const dir = tmp();
    const file = path.join(dir, "htpasswd");
    fs.writeFileSync(file, htpasswdText({ alice: "a" }));
    const store = open(file);
    fs.rmSync(file);
    await new Promise((r) => setTimeout(r, 400));
    expect(store.has("alice")).toBe(true);
    fs.writeFileSync(file, htpasswdText({ back: "b" }));
    expect(await waitFor(() => store.has("back"), Boolean)).toBe(true);
  });
});
