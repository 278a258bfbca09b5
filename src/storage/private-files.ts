/**
 * Files that hold secrets stay private on disk: 0600 in a 0700 folder. The metadata database (it holds
 * the token signing key), its -wal and -shm, the legacy token key file, the private CA's and the ACME
 * keys live in such folders (`<data>/berth`, `<data>/tls`). One home for how they are created and for
 * tightening what an older Berth (or a restored backup) left readable by others; the callers name
 * the paths.
 */
import fs from "node:fs";
import path from "node:path";

export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

/** A mode changed to keep a path private, for the start-up log line. */
export interface Tightened {
  path: string;
  kind: "dir" | "file";
  from: number;
  to: number;
}

/** A path that should be private but could not be made so (another owner, a read-only mount). */
export interface NotTightened {
  path: string;
  mode: number;
  error: string;
}

export interface TightenReport {
  changed: Tightened[];
  failed: NotTightened[];
}

/**
 * Creates `dir` (its missing parents with the usual mode) readable by this user only; an existing one
 * is left as it is (`tightenPrivate` changes it, and says so).
 */
export function makePrivateDir(dir: string): void {
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  try {
    fs.mkdirSync(dir, { mode: PRIVATE_DIR_MODE });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
}

/**
 * Creates `file` empty and 0600 if it does not exist (its folder private too), without touching one
 * that does. SQLite then gives the -wal and -shm it creates beside a database the database file's mode.
 */
export function makePrivateFile(file: string): void {
  makePrivateDir(path.dirname(file));
  // "a": create if missing, never truncate; the mode applies only to a file created here.
  fs.closeSync(fs.openSync(file, "a", PRIVATE_FILE_MODE));
}

/**
 * Takes away every group and other permission from those of `dirs` and `files` that exist (0700 and
 * 0600 at most). Missing paths are skipped; a symbolic link (a folder the operator moved to another
 * disk) is followed. A path of the wrong kind is reported, never changed.
 */
export function tightenPrivate(paths: { dirs?: string[]; files?: string[] }): TightenReport {
  const report: TightenReport = { changed: [], failed: [] };
  const visit = (p: string, max: number, kind: "dir" | "file") => {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      return;
    }
    const mode = st.mode & 0o777;
    if ((mode & ~max) === 0) return;
    if (kind === "dir" ? !st.isDirectory() : !st.isFile()) {
      report.failed.push({ path: p, mode, error: `not a ${kind === "dir" ? "directory" : "regular file"}` });
      return;
    }
    const to = mode & max;
    try {
      fs.chmodSync(p, to);
      report.changed.push({ path: p, kind, from: mode, to });
    } catch (err) {
      report.failed.push({ path: p, mode, error: (err as NodeJS.ErrnoException).code ?? String(err) });
    }
  };
  for (const d of paths.dirs ?? []) visit(d, PRIVATE_DIR_MODE, "dir");
  for (const f of paths.files ?? []) visit(f, PRIVATE_FILE_MODE, "file");
  return report;
}

/** `0644` for a mode. */
export function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, "0")}`;
}
