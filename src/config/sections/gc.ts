import { z } from "zod";

// Owned by the garbage-collection work (issue 6): gc schedule and retention policies.
export const gcSections = {
  gc: z.unknown().optional(),
  retention: z.unknown().optional(),
};
