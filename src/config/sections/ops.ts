import { z } from "zod";

// Owned by the drop-in/operations work (issue 4): notifications, proxy, health, redis, metrics.
export const opsSections = {
  notifications: z.unknown().optional(),
  proxy: z.unknown().optional(),
  health: z.unknown().optional(),
  redis: z.unknown().optional(),
};
