// Caching of pre-populated registry data directories (10,000 repositories take a while to push
// into Distribution). Entries live under bench/out/cache/datadirs/<key>/ and are keyed by the
// server implementation, its version (for Berth: a hash of the built dist/), the bench's data
// layout version and the population parameters. A run copies the entry to a fresh directory, so
// the cached copy is never served from directly.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { startServer, stopServer } from "./servers.mjs";
import { log, run } from "./util.mjs";

/**
 * Makes `targetDir` hold a populated data directory for `impl`, from the cache when possible.
 *   cacheKey:  unique name for this impl+version+content
 *   prefix:    entries starting with this prefix but with another key are stale and get removed
 *   populate:  async (server) => void, run against a temporary server on targetDir when not cached
 *   linkCopy:  restore a Distribution directory as hard links (fast; only for servers that will
 *              only be read from, see restore())
 * Returns { cached: boolean, seconds } (seconds spent populating, 0 when cached).
 */
export async function preparePopulatedDataDir(
  ctx,
  { key, impl, cacheKey, prefix, targetDir, populate, linkCopy = false },
) {
  const root = path.join(ctx.opts.cacheDir, "datadirs");
  const entry = path.join(root, cacheKey);
  rmSync(targetDir, { recursive: true, force: true });
  mkdirSync(path.dirname(targetDir), { recursive: true });
  if (ctx.opts.useCache && existsSync(path.join(entry, "complete.json"))) {
    const t0 = performance.now();
    await restore(impl, path.join(entry, "data"), targetDir, linkCopy);
    const took = ((performance.now() - t0) / 1000).toFixed(1);
    log(`${key}: data directory restored from cache ${path.relative(process.cwd(), entry)} in ${took} s`);
    return { cached: true, seconds: 0 };
  }
  const server = await startServer({
    key,
    impl,
    dataDir: targetDir,
    workDir: path.join(ctx.opts.workDir, "populate"),
    extraArgs: key === "berth" ? ctx.opts.berthArgs : [],
  });
  const t0 = performance.now();
  try {
    await populate(server);
  } finally {
    await stopServer(server);
  }
  const seconds = (performance.now() - t0) / 1000;
  if (ctx.opts.useCache) {
    const t1 = performance.now();
    mkdirSync(root, { recursive: true });
    for (const name of readdirSync(root)) {
      if (name.startsWith(prefix) && name !== cacheKey) {
        rmSync(path.join(root, name), { recursive: true, force: true });
      }
    }
    const tmp = `${entry}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    // Move the populated directory into the cache (a rename when on the same filesystem), then
    // restore a working copy from it like any later run would.
    try {
      renameSync(targetDir, path.join(tmp, "data"));
    } catch {
      await run("cp", ["-a", targetDir, path.join(tmp, "data")]);
      rmSync(targetDir, { recursive: true, force: true });
    }
    writeFileSync(
      path.join(tmp, "complete.json"),
      `${JSON.stringify({ cacheKey, seconds, at: new Date().toISOString() })}\n`,
    );
    rmSync(entry, { recursive: true, force: true });
    renameSync(tmp, entry);
    await restore(impl, path.join(entry, "data"), targetDir, linkCopy);
    const took = ((performance.now() - t1) / 1000).toFixed(1);
    log(`${key}: populated data directory cached as ${path.relative(process.cwd(), entry)} (${took} s)`);
  }
  return { cached: false, seconds };
}

/**
 * Copies a cached data directory to targetDir. With linkCopy, Distribution's tree (about 20 small
 * files and directories per repository, ~80 MB per 1,000 repositories) is copied as hard links,
 * which is only safe when the server started on it is only read from: Distribution rewrites link
 * files in place, which would change the cached copy too. Berth's directory (a SQLite database
 * written in place, plus blobs) is always copied outright.
 */
async function restore(impl, from, targetDir, linkCopy) {
  await run("cp", impl === "distribution" && linkCopy ? ["-al", from, targetDir] : ["-a", from, targetDir]);
}
