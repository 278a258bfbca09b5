import { type Config, type ConfigInput, configSchema } from "./schema.js";

/**
 * Builds the effective configuration. For now: defaults overlaid with an object of explicit values
 * (flags). The YAML file and REGISTRY_* environment layers go here too.
 */
export function loadConfig(overrides: ConfigInput = {}): Config {
  return configSchema.parse(overrides);
}
