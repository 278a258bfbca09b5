// How Berth's tests (test/helpers/postgres.ts) and bench (bench/lib/postgres.mjs) run a throwaway
// PostgreSQL 15 cluster: the commands and arguments they share. PostgreSQL refuses to run as root, so
// when they run as root the cluster's folder is given to the `postgres` system user and every binary
// runs as that user.
import { execFileSync } from "node:child_process";
import path from "node:path";

/** The superuser both create, with trust authentication. */
export const PG_USER = "berth";

/** The `postgres` system user's uid and gid when we are root (the folder must be theirs), else null. */
export function postgresOwner() {
  if (process.getuid?.() !== 0) return null;
  const id = (flag) => Number(execFileSync("id", [flag, "postgres"]).toString().trim());
  return { uid: id("-u"), gid: id("-g") };
}

/** [command, args] running `binary` from `binDir`, as the postgres user when we are root. */
export function pgCommand(binDir, binary, args) {
  const bin = path.join(binDir, binary);
  return process.getuid?.() === 0 ? ["runuser", ["-u", "postgres", "--", bin, ...args]] : [bin, args];
}

/** initdb's arguments for a cluster in `data`: PG_USER with trust authentication, UTF-8, no locale. */
export function initdbArgs(data) {
  return ["-D", data, "-U", PG_USER, "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"];
}

/** postgres's arguments: `port` on 127.0.0.1, its socket in `socketDir`, and `settings` as `-c`. */
export function serverArgs(data, port, socketDir, settings) {
  return [
    "-D",
    data,
    "-p",
    String(port),
    "-k",
    socketDir,
    "-c",
    "listen_addresses=127.0.0.1",
    ...Object.entries(settings).flatMap(([name, value]) => ["-c", `${name}=${value}`]),
  ];
}
