// The run context handed to every metric: options, the shared pair of servers, helpers to start
// extra server pairs, to alternate measurements between the two servers, and to share results
// between metrics (e.g. the monolithic push also yields the peak-RSS figures).
import { mkdirSync } from "node:fs";
import path from "node:path";
import { SERVER_KEYS, startServer, stopServer } from "./servers.mjs";
import { errorMessage, log, median, run } from "./util.mjs";

export class Context {
  constructor(opts) {
    this.opts = opts;
    this.shared = new Map();
    this.pairs = [];
    this.mainPair = null;
    this.resources = new Map();
  }

  /**
   * A server the bench needs besides the registries (PostgreSQL, Ceph radosgw), started once by
   * `start()` → { stop() } and stopped by stopAll after the registries. Rejects again for every
   * metric asking after a failed start.
   */
  resource(name, start) {
    if (!this.resources.has(name)) this.resources.set(name, start());
    return this.resources.get(name);
  }

  /** Server implementation behind a key (Berth may be replaced by a Distribution stand-in). */
  implFor(key) {
    return key === "berth" ? this.opts.berthImpl : "distribution";
  }

  /**
   * Starts (once) the pair of servers most metrics share, with empty data directories.
   * Returns { berth, distribution }; a server that failed to start is { error } instead.
   */
  async servers() {
    if (!this.mainPair) this.mainPair = await this.startPair("main");
    return this.mainPair;
  }

  /**
   * Starts a Berth + Distribution pair on data directories under the work dir (or `dataDirs[key]`).
   * A server that cannot start (or has an entry in `errors`) is reported as { key, error } so the
   * other one can still be measured.
   */
  async startPair(name, { dataDirs = {}, errors = {}, htpasswd, extraConfig = [] } = {}) {
    const pair = {};
    for (const key of SERVER_KEYS) {
      if (errors[key]) {
        pair[key] = { key, error: errors[key] };
        continue;
      }
      const workDir = path.join(this.opts.workDir, name);
      const dataDir = dataDirs[key] ?? path.join(workDir, `${key}-data`);
      mkdirSync(workDir, { recursive: true });
      try {
        pair[key] = await startServer({
          key,
          impl: this.implFor(key),
          dataDir,
          workDir,
          extraArgs: key === "berth" ? this.opts.berthArgs : [],
          htpasswd,
          extraConfig,
        });
      } catch (err) {
        log(`could not start ${key}: ${errorMessage(err)}`);
        pair[key] = { key, error: errorMessage(err) };
      }
    }
    this.pairs.push(pair);
    return pair;
  }

  async stopPair(pair) {
    await Promise.all(SERVER_KEYS.map((key) => (pair[key]?.pid ? stopServer(pair[key]) : null)));
    this.pairs = this.pairs.filter((p) => p !== pair);
    if (this.mainPair === pair) this.mainPair = null;
  }

  async stopAll() {
    for (const pair of [...this.pairs]) await this.stopPair(pair);
    for (const [name, promise] of [...this.resources].reverse()) {
      this.resources.delete(name);
      try {
        await (await promise).stop();
      } catch (err) {
        log(`stopping ${name}: ${errorMessage(err)}`);
      }
    }
  }

  /**
   * Runs `fn(server, rep)` `reps` times per server, alternating which server goes first, and
   * collects the numbers it returns. An exception stops that server's series and is recorded.
   * `setup(server)` runs once per server before the first rep (also guarded).
   * Returns { berth: { samples, value, error, details }, distribution: { ... } } with value = median.
   * `keys` names the servers of `pair` to measure (default berth and distribution; the PostgreSQL
   * rows measure three), rotated each rep so that each goes first in turn.
   */
  async alternate(pair, reps, fn, { setup, label = "", keys = SERVER_KEYS } = {}) {
    const out = {};
    for (const key of keys) {
      out[key] = { samples: [], details: [], error: pair[key]?.error ?? null };
    }
    if (setup) {
      for (const key of keys) {
        if (out[key].error) continue;
        try {
          await setup(pair[key]);
        } catch (err) {
          out[key].error = `setup: ${errorMessage(err)}`;
          log(`${label} ${key} setup failed: ${out[key].error}`);
        }
      }
    }
    for (let rep = 0; rep < reps; rep++) {
      const order =
        keys.length === 2
          ? rep % 2 === 0
            ? keys
            : [...keys].reverse()
          : [...keys.slice(rep % keys.length), ...keys.slice(0, rep % keys.length)];
      for (const key of order) {
        if (out[key].error) continue;
        const server = pair[key];
        if (server.exited) {
          out[key].error =
            `server exited (${server.exited.code ?? server.exited.signal}); log tail:\n${server.logTail(10)}`;
          continue;
        }
        try {
          const result = await fn(server, rep);
          const value = typeof result === "number" ? result : result.value;
          out[key].samples.push(value);
          if (typeof result === "object") out[key].details.push(result);
          log(
            `${label} ${key} rep ${rep + 1}/${reps}: ${typeof value === "number" ? value.toFixed(3) : value}`,
          );
        } catch (err) {
          out[key].error = errorMessage(err);
          log(`${label} ${key} rep ${rep + 1}/${reps} FAILED: ${out[key].error}`);
        }
      }
    }
    for (const key of keys) {
      out[key].value = out[key].samples.length > 0 ? median(out[key].samples) : null;
    }
    return out;
  }

  /** Flushes dirty pages so one push's writeback does not slow down the next measurement. */
  async sync() {
    await run("sync", [], { timeoutMs: 5 * 60_000 });
  }

  /** Memoises an expensive shared measurement (e.g. the monolithic pushes) across metrics. */
  async once(key, fn) {
    if (!this.shared.has(key)) this.shared.set(key, fn());
    return this.shared.get(key);
  }
}
