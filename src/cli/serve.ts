import cluster from "node:cluster";
import type { ConfigInput } from "../config/schema.js";
import { ACME_FLAG_NAMES, type AcmeFlags, acmeFlagsToConfig } from "./tls-flags.js";

export { parseAddr } from "../config/addr.js";

import { CONFIG_CHECK_ENV, knownWorkers, supervise } from "./supervisor.cjs";

export {
  type CheckedConfig,
  CONFIG_CHECK_ENV,
  type MetricsEndpointInfo,
  SUPERVISOR_MESSAGE,
  WORKER_MESSAGE,
  type WorkerMessage,
} from "./supervisor.cjs";

/**
 * `berth serve`: a supervisor that forks worker processes (src/cli/worker.ts), or, with
 * `--workers 1`, one process that serves by itself.
 *
 * The supervisor is src/cli/supervisor.cts; the `berth` command starts it without this module
 * (src/cli/berth.cts).
 */

export interface ServeFlags extends AcmeFlags {
  addr?: string;
  dataDir?: string;
  config?: string;
  workers?: string;
  readOnly?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  logLevel?: string;
}

/** Which flag set which key, for `config check` and error messages. */
export const FLAG_NAMES: Record<string, string> = {
  "http.addr": "--addr",
  "storage.filesystem.rootdirectory": "--data-dir",
  "http.workers": "--workers",
  "storage.maintenance.readonly.enabled": "--read-only",
  "http.tls.certificate": "--tls-cert",
  "http.tls.key": "--tls-key",
  "log.level": "--log-level",
  ...ACME_FLAG_NAMES, // [tls, issue 15]
};

export function flagsToConfig(flags: ServeFlags): ConfigInput {
  const input: Record<string, Record<string, unknown>> = {};
  const set = (section: string, key: string, value: unknown) => {
    input[section] ??= {};
    (input[section] as Record<string, unknown>)[key] = value;
  };
  if (flags.addr) set("http", "addr", flags.addr);
  if (flags.workers !== undefined) set("http", "workers", Number(flags.workers));
  if (flags.dataDir) set("storage", "filesystem", { rootdirectory: flags.dataDir });
  if (flags.readOnly) set("storage", "maintenance", { readonly: { enabled: true } });
  if (flags.tlsCert || flags.tlsKey) set("http", "tls", { certificate: flags.tlsCert, key: flags.tlsKey });
  if (flags.logLevel) set("log", "level", flags.logLevel);
  const letsencrypt = acmeFlagsToConfig(flags); // [tls, issue 15]
  if (letsencrypt) set("http", "tls", { ...(input.http?.tls as object), letsencrypt });
  return input as ConfigInput;
}

type WorkerModule = typeof import("./worker.js");

/**
 * The worker's code: the one-file bundle of it that `npm run build` makes (scripts/bundle-worker.mjs)
 * when it is there and not older than the compiled worker.js, else dist/ file by file.
 * BERTH_BUNDLE=0 forces the latter.
 */
async function loadWorker(): Promise<WorkerModule> {
  const bundle = new URL("./worker.bundle.mjs", import.meta.url);
  if (process.env.BERTH_BUNDLE !== "0" && bundle.protocol === "file:") {
    try {
      const { statSync } = await import("node:fs");
      const compiled = new URL("./worker.js", import.meta.url);
      if (statSync(bundle).mtimeMs >= statSync(compiled).mtimeMs)
        return (await import(bundle.href)) as WorkerModule;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "ERR_MODULE_NOT_FOUND") throw err;
    }
  }
  return import("./worker.js");
}

export async function serve(flags: ServeFlags): Promise<void> {
  if (cluster.isWorker) {
    const worker = await loadWorker();
    if (process.env[CONFIG_CHECK_ENV] === "1") await worker.checkConfig(flags);
    else await worker.runWorker(flags, true);
    return;
  }
  if (flags.addr !== undefined && flags.addr.trim() === "") throw new Error("--addr is empty");
  if (knownWorkers(flags) === 1) {
    await (await loadWorker()).runWorker(flags, false);
    return;
  }
  await supervise();
}
