import { z } from "zod";
import { duration } from "./core.js";

// Owned by the web UI work (issue 5).
export const uiSection = z
  .object({
    enabled: z.boolean().default(true),
    /**
     * How often registry-wide storage usage (the storage page's totals and its ordering by size) is
     * computed, by one process at a time, off any request's path (Berth's own key).
     */
    usageinterval: duration.default(5 * 60_000),
  })
  .prefault({});
