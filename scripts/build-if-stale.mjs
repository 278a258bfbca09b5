#!/usr/bin/env node
// `npm start` and `npm pack` build only when dist/ is older than what it is built from.
//
//   node scripts/build-if-stale.mjs           runs `npm run build` when the build is missing or stale
//   node scripts/build-if-stale.mjs --begin   (the first step of `npm run build`)
//   node scripts/build-if-stale.mjs --stamp   (its last step) records a finished build
//
// The stamp is dist/.build-stamp, holding the time the build started (so that an edit made during a build
// leaves it stale). The inputs are every file under
// src/, ui/ (but ui/dist), native/ (but the addons' build/), scripts/, and the package and compiler
// configuration: about 400 stats, a few milliseconds.
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const stampFile = path.join(root, "dist", ".build-stamp");
const startedFile = path.join(root, "dist", ".build-started");
const SKIP = new Set(["node_modules", "dist", "build"]);

/** The newest modification time (ms) of the files under `dir`, or of `dir` itself when it is a file. */
function newest(file) {
  let st;
  try {
    st = statSync(file);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.mtimeMs;
  let max = 0;
  for (const entry of readdirSync(file)) {
    if (SKIP.has(entry)) continue;
    max = Math.max(max, newest(path.join(file, entry)));
  }
  return max;
}

const INPUTS = ["src", "ui", "native", "scripts", "package.json", "package-lock.json", "tsconfig.json"];

// `npm run build` begins with --begin (the time it started, in dist/.build-started) and ends with --stamp
// (which makes that dist/.build-stamp): a build that fails half-way leaves no stamp.
if (process.argv.includes("--begin")) {
  mkdirSync(path.dirname(stampFile), { recursive: true });
  rmSync(stampFile, { force: true });
  writeFileSync(startedFile, `${Date.now()}\n`);
  process.exit(0);
}
if (process.argv.includes("--stamp")) {
  renameSync(startedFile, stampFile);
  process.exit(0);
}

let built = 0;
try {
  built = Number(readFileSync(stampFile, "utf8").trim()) || 0;
} catch {}
const changed = Math.max(...INPUTS.map((input) => newest(path.join(root, input))));
if (built > 0 && changed <= built) process.exit(0);
console.error(
  built ? "berth: sources changed since the last build; building" : "berth: no build yet; building",
);
const npm = process.env.npm_execpath;
const res = npm
  ? spawnSync(process.execPath, [npm, "run", "build"], { cwd: root, stdio: "inherit" })
  : spawnSync("npm", ["run", "build"], { cwd: root, stdio: "inherit", shell: process.platform === "win32" });
process.exit(res.status ?? 1);
