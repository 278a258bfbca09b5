import { z } from "zod";

// Owned by the users-and-permissions work (issue 3): htpasswd, token auth and access rules.
export const authSection = z
  .object({
    htpasswd: z.object({ realm: z.string().default("Berth Registry"), path: z.string() }).optional(),
    token: z
      .object({
        realm: z.string(),
        service: z.string(),
        issuer: z.string(),
        rootcertbundle: z.string().optional(),
      })
      .optional(),
  })
  .prefault({});
