import { type Config, type ConfigInput, configSchema } from "./schema.js";

export interface LoadOptions {
  /** Path of a YAML file given with --config (or found at /etc/berth/config.yml). */
  file?: string;
  /** Environment to read REGISTRY_* variables from (process.env by default). */
  env?: NodeJS.ProcessEnv;
  /** Values from command-line flags: they win over file and environment. */
  flags?: ConfigInput;
}

export interface LoadedConfig {
  config: Config;
  /** Messages to log at start-up (keys that are not implemented, deprecated spellings, ...). */
  warnings: string[];
}

/**
 * Builds the effective configuration: defaults < YAML file < REGISTRY_* environment < flags.
 * (Initial version: defaults and flags only.)
 */
export function loadConfig(options: LoadOptions = {}): LoadedConfig {
  return { config: configSchema.parse(options.flags ?? {}), warnings: [] };
}
