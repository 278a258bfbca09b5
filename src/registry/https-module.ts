import type https from "node:https";
import { createRequire } from "node:module";

const load = createRequire(import.meta.url);
let loaded: typeof https | undefined;

/**
 * node:https, loaded at its first use (a webhook or an upstream registry on https://): with it come
 * about 1 MB of every worker's memory, which a registry that calls out to nobody need not hold.
 */
export function httpsModule(): typeof https {
  loaded ??= load("node:https") as typeof https;
  return loaded;
}
