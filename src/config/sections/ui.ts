import { z } from "zod";

// Owned by the web UI work (issue 5).
export const uiSection = z
  .object({
    enabled: z.boolean().default(true),
  })
  .prefault({});
