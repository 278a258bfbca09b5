import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { editHtpasswd, isValidUserName, listHtpasswdUsers, writeFileAtomic } from "../auth/htpasswd.js";

interface FileOptions {
  htpasswd?: string;
  config?: string;
}

/** The htpasswd file to edit: --htpasswd, else auth.htpasswd.path of the configuration. */
async function htpasswdPath(options: FileOptions): Promise<string> {
  if (options.htpasswd) return path.resolve(options.htpasswd);
  // Loaded here, not at the top: `berth --help` and `--htpasswd FILE` need no configuration schema.
  const { loadConfig } = await import("../config/load.js");
  const { config } = loadConfig(options.config ? { file: options.config } : {});
  const file = config.auth.htpasswd?.path;
  if (!file)
    throw new Error("no htpasswd file: pass --htpasswd FILE or set auth.htpasswd.path in the configuration");
  return path.resolve(file);
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw err;
  }
}

/** Runs `fn` while holding `<file>.lock`, so that two `berth user` commands do not lose each other's edit. */
async function withLock<T>(file: string, fn: () => T): Promise<T> {
  const lock = `${file}.lock`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      fs.closeSync(fs.openSync(lock, "wx", 0o600));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      try {
        // A lock left by a crashed command is stale after 30 s.
        if (Date.now() - fs.statSync(lock).mtimeMs > 30_000) fs.rmSync(lock, { force: true });
      } catch {}
      if (Date.now() > deadline) throw new Error(`${lock} is held by another command`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return fn();
  } finally {
    fs.rmSync(lock, { force: true });
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  // One trailing newline (as `echo` and most secret stores add) is not part of the password.
  return Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
}

/** Reads a line from the terminal without echoing it. */
function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  return new Promise((resolve, reject) => {
    process.stderr.write(question);
    stdin.setRawMode(true);
    stdin.setEncoding("utf8");
    stdin.resume();
    let value = "";
    const done = (err: Error | null) => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write("\n");
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === "\r" || ch === "\n") return done(null);
        if (ch === "\u0003" || ch === "\u0004") return done(new Error("cancelled"));
        if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on("data", onData);
  });
}

async function readPassword(fromStdin: boolean): Promise<string> {
  let password: string;
  if (fromStdin) {
    password = await readStdin();
  } else {
    if (!process.stdin.isTTY) throw new Error("no terminal to ask for the password: use --password-stdin");
    password = await promptHidden("Password: ");
    const again = await promptHidden("Repeat password: ");
    if (again !== password) throw new Error("the passwords do not match");
  }
  if (password === "") throw new Error("the password is empty");
  if (Buffer.byteLength(password) > 72) {
    process.stderr.write("warning: bcrypt uses only the first 72 bytes of a password\n");
  }
  return password;
}

/** A bcrypt hash in Apache's spelling (`$2y$`), so that `htpasswd -v` and Berth read each other's files. */
export async function hashPassword(password: string, cost = 10): Promise<string> {
  const { default: bcrypt } = await import("bcryptjs");
  const hash = await bcrypt.hash(password, cost);
  return hash.replace(/^\$2[ab]\$/, "$2y$");
}

function fail(err: unknown): void {
  process.stderr.write(`berth user: ${(err as Error).message}\n`);
  process.exitCode = 1;
}

/** `berth user add|rm|list`: manage the users of the htpasswd file (the same format as `htpasswd -B`). */
export function registerUserCommand(program: Command): void {
  const user = program
    .command("user")
    .description("manage the users of the htpasswd file (auth.htpasswd.path)");
  const fileOptions = (cmd: Command) =>
    cmd
      .option("--htpasswd <file>", "htpasswd file (default: auth.htpasswd.path of the configuration)")
      .option("-c, --config <file>", "configuration file to read auth.htpasswd.path from");

  fileOptions(
    user
      .command("add <name>")
      .description("add a user (or, with --update, set a new password for one)")
      .option("--password-stdin", "read the password from standard input")
      .option("--update", "replace the password of an existing user")
      .option("--cost <n>", "bcrypt cost (4-31)", "10"),
  ).action(
    async (
      name: string,
      options: FileOptions & { passwordStdin?: boolean; update?: boolean; cost: string },
    ) => {
      try {
        if (!isValidUserName(name))
          throw new Error(`"${name}" is not a valid user name (no ":", spaces or control characters)`);
        const cost = Number(options.cost);
        if (!Number.isInteger(cost) || cost < 4 || cost > 31)
          throw new Error("--cost must be an integer from 4 to 31");
        const file = await htpasswdPath(options);
        const exists = listHtpasswdUsers(readText(file)).includes(name);
        if (exists && !options.update)
          throw new Error(`user "${name}" already exists (use --update to change the password)`);
        const password = await readPassword(options.passwordStdin === true);
        const hash = await hashPassword(password, cost);
        await withLock(file, () => {
          const text = readText(file);
          if (!options.update && listHtpasswdUsers(text).includes(name))
            throw new Error(`user "${name}" already exists`);
          writeFileAtomic(file, editHtpasswd(text, name, hash));
        });
        process.stdout.write(`${exists ? "updated" : "added"} user ${name} in ${file}\n`);
      } catch (err) {
        fail(err);
      }
    },
  );

  fileOptions(user.command("rm <name>").alias("remove").description("remove a user")).action(
    async (name: string, options: FileOptions) => {
      try {
        const file = await htpasswdPath(options);
        await withLock(file, () => {
          const text = readText(file);
          if (!listHtpasswdUsers(text).includes(name)) throw new Error(`no user "${name}" in ${file}`);
          writeFileAtomic(file, editHtpasswd(text, name, null));
        });
        process.stdout.write(`removed user ${name} from ${file}\n`);
      } catch (err) {
        fail(err);
      }
    },
  );

  fileOptions(user.command("list").alias("ls").description("list the users")).action(
    async (options: FileOptions) => {
      try {
        const file = await htpasswdPath(options);
        if (!fs.existsSync(file)) throw new Error(`${file} does not exist`);
        for (const name of listHtpasswdUsers(readText(file))) process.stdout.write(`${name}\n`);
      } catch (err) {
        fail(err);
      }
    },
  );
}
