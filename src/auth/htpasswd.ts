import fs from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import { PRIVATE_FILE_MODE } from "../storage/private-files.js";
import { watchFiles } from "./file-watch.js";

/** A bcrypt hash as Apache's htpasswd -B and Berth write it: `$2y$`, `$2a$` or `$2b$`, cost 04..31. */
const BCRYPT_RE = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/;

export interface HtpasswdEntry {
  user: string;
  hash: string;
  /** 1-based line number in the file. */
  line: number;
}

export class HtpasswdError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HtpasswdError";
  }
}

/** Names the password scheme of a hash that is not bcrypt, for the error message. */
function describeScheme(hash: string): string {
  if (hash.startsWith("$apr1$")) return 'Apache MD5 ("$apr1$")';
  if (hash.startsWith("{SHA}")) return 'SHA-1 ("{SHA}")';
  if (hash.startsWith("$1$")) return 'MD5-crypt ("$1$")';
  if (hash.startsWith("$5$")) return 'SHA-256-crypt ("$5$")';
  if (hash.startsWith("$6$")) return 'SHA-512-crypt ("$6$")';
  if (hash.startsWith("$2")) return "a malformed bcrypt hash";
  if (/^[./A-Za-z0-9]{13}$/.test(hash)) return "DES crypt";
  if (hash === "") return "an empty password field";
  return "an unknown scheme or plain text";
}

/** Whether a user name can be stored in an htpasswd file. */
export function isValidUserName(user: string): boolean {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  return user.length > 0 && user.length <= 255 && !/[:\s\x00-\x1f\x7f]/.test(user);
}

export function isBcryptHash(hash: string): boolean {
  return BCRYPT_RE.test(hash);
}

/**
 * Parses an htpasswd file. Blank lines and `#` comments are skipped; every other line must be
 * `user:bcrypt-hash`. Any other scheme is an error naming the file and line. A user listed twice
 * keeps its first line, as Apache does.
 */
export function parseHtpasswd(text: string, source = "htpasswd"): Map<string, HtpasswdEntry> {
  const users = new Map<string, HtpasswdEntry>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.replace(/\r$/, "");
    const trimmed = raw.trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const colon = trimmed.indexOf(":");
    if (colon <= 0) {
      throw new HtpasswdError(`${source}:${i + 1}: expected "user:password-hash"`);
    }
    const user = trimmed.slice(0, colon);
    const hash = trimmed.slice(colon + 1).trim();
    if (!isBcryptHash(hash)) {
      throw new HtpasswdError(
        `${source}:${i + 1}: user "${user}" has a password in ${describeScheme(hash)}; only bcrypt ($2y$, $2a$, $2b$) is supported: set it again with "berth user add --update ${user}" or "htpasswd -B"`,
      );
    }
    if (!users.has(user)) users.set(user, { user, hash, line: i + 1 });
  }
  return users;
}

/**
 * Returns `text` with `user`'s line replaced by `user:hash` (appended when absent) or, when `hash`
 * is null, removed. Comments and other lines are kept as they are.
 */
export function editHtpasswd(text: string, user: string, hash: string | null): string {
  // A file written with CRLF line ends keeps them; the last line always ends with one.
  const eol = /\r\n/.test(text) && !/(^|[^\r])\n/.test(text) ? "\r\n" : "\n";
  const lines = text === "" ? [] : text.replace(/\r?\n$/, "").split(/\r?\n/);
  const out: string[] = [];
  let done = false;
  for (const line of lines) {
    const trimmed = line.trim();
    const isUser = !trimmed.startsWith("#") && trimmed.slice(0, trimmed.indexOf(":")) === user;
    if (isUser) {
      // The first line of the user is replaced in place (later duplicates go, as Apache's htpasswd does).
      if (hash !== null && !done) out.push(`${user}:${hash}`);
      done = true;
      continue;
    }
    out.push(line);
  }
  if (!done && hash !== null) out.push(`${user}:${hash}`);
  return out.length === 0 ? "" : `${out.join(eol)}${eol}`;
}

/** Lists the user names of an htpasswd text without judging their hashes. */
export function listHtpasswdUsers(text: string): string[] {
  const users: string[] = [];
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const colon = trimmed.indexOf(":");
    if (colon > 0) users.push(trimmed.slice(0, colon));
  }
  return users;
}

/**
 * Writes a file atomically (temp file + rename), keeping, where the process may (root), the old file's
 * owner and group, so that the server reading it as another user still can. The hashes are secrets:
 * a new file is 0600; an existing one keeps its owner's permissions and its group's read permission
 * (a server may read it through its group) and loses every other: 0644 becomes 0640, 0666 0640.
 */
export function writeFileAtomic(file: string, text: string): void {
  let mode = PRIVATE_FILE_MODE;
  let owner: { uid: number; gid: number } | undefined;
  try {
    const st = fs.statSync(file);
    mode = st.mode & (PRIVATE_FILE_MODE | 0o040);
    owner = { uid: st.uid, gid: st.gid };
  } catch {}
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  const fd = fs.openSync(tmp, "wx", mode);
  try {
    if (owner && (owner.uid !== process.getuid?.() || owner.gid !== process.getgid?.())) {
      try {
        fs.fchownSync(fd, owner.uid, owner.gid);
      } catch {}
    }
    fs.fchmodSync(fd, mode);
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * The users of one htpasswd file, kept current: the file is read at start (an error there stops
 * start-up) and read again whenever it changes. A file that has become unreadable or invalid is
 * reported in the log and the last good contents stay in force, as a failed nginx reload does.
 */
export class HtpasswdStore {
  readonly path: string;
  private users = new Map<string, HtpasswdEntry>();
  private stopWatching?: () => void;
  /** Increases with every successful (re)load. */
  generation = 0;
  /** The most common bcrypt cost in the file (unknown users are checked at this cost). */
  typicalCost = 10;

  constructor(
    file: string,
    private readonly log?: Logger,
  ) {
    this.path = path.resolve(file);
  }

  /** Reads the file now; throws HtpasswdError when it is missing or holds an unsupported line. */
  load(): void {
    let text: string;
    try {
      text = fs.readFileSync(this.path, "utf8");
    } catch (err) {
      throw new HtpasswdError(`cannot read htpasswd file ${this.path}: ${(err as Error).message}`);
    }
    this.users = parseHtpasswd(text, this.path);
    this.generation++;
    const costs = new Map<number, number>();
    for (const { hash } of this.users.values()) {
      const cost = Number(hash.slice(4, 6));
      costs.set(cost, (costs.get(cost) ?? 0) + 1);
    }
    this.typicalCost = [...costs.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 10;
  }

  /** Reloads, keeping the previous users when the new contents are not usable. */
  reload(): boolean {
    try {
      this.load();
      this.log?.info({ path: this.path, users: this.users.size }, "htpasswd file reloaded");
      return true;
    } catch (err) {
      this.log?.error(
        { path: this.path, err: (err as Error).message },
        "htpasswd file not reloaded; keeping the previous users",
      );
      return false;
    }
  }

  watch(options?: { pollMs?: number; debounceMs?: number }): void {
    this.stopWatching?.();
    this.stopWatching = watchFiles([this.path], () => this.reload(), options);
  }

  close(): void {
    this.stopWatching?.();
    this.stopWatching = undefined;
  }

  get(user: string): HtpasswdEntry | undefined {
    return this.users.get(user);
  }

  has(user: string): boolean {
    return this.users.has(user);
  }

  list(): string[] {
    return [...this.users.keys()];
  }
}
