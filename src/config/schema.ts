import { z } from "zod";
import { authSection } from "./sections/auth.js";
import { httpSection, logSection, storageSection } from "./sections/core.js";
import { databaseSection } from "./sections/database.js";
import { gcSections } from "./sections/gc.js";
import { opsSections } from "./sections/ops.js";
import { uiSection } from "./sections/ui.js";

/** The whole configuration: Distribution's keys where it has them, Berth's own beside them. */
export const configSchema = z.object({
  version: z.union([z.string(), z.number()]).transform(String).default("0.1"),
  log: logSection,
  storage: storageSection,
  http: httpSection,
  auth: authSection,
  ui: uiSection,
  database: databaseSection,
  ...opsSections,
  ...gcSections,
});

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;

export { dataDirOf } from "./data-dir.js";
