import { z } from "zod";
import { duration } from "./core.js";

// Where the metadata lives. Without this section (or with neither `url` nor `enabled: true`) Berth
// keeps it in the embedded SQLite file under the data directory. The keys besides `url` are those
// of GitLab's container registry, so that its `database:` section can be reused as written.

const sslmode = z.enum(["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]);

export const databaseSection = z
  .object({
    /** A postgres:// (or postgresql://) URL; when set, PostgreSQL holds the metadata. */
    url: z
      .string()
      .refine((u) => /^postgres(ql)?:\/\//.test(u), {
        message: 'expected a PostgreSQL URL such as "postgres://user:password@host:5432/berth"',
      })
      .optional(),
    /** GitLab's switch: true uses PostgreSQL with the keys below. */
    enabled: z.boolean().optional(),
    host: z.string().optional(),
    port: z.number().int().min(1).max(65535).optional(),
    user: z.string().optional(),
    password: z.string().optional(),
    dbname: z.string().optional(),
    sslmode: sslmode.optional(),
    sslcert: z.string().optional(),
    sslkey: z.string().optional(),
    sslrootcert: z.string().optional(),
    connecttimeout: duration.optional(),
    pool: z
      .object({
        /** Connections per process (each worker of `berth serve` is a process). */
        maxopen: z.number().int().min(2).optional(),
        /** Accepted for GitLab compatibility; node-postgres closes idle connections after maxidletime. */
        maxidle: z.number().int().nonnegative().optional(),
        maxlifetime: duration.optional(),
        maxidletime: duration.optional(),
      })
      .prefault({}),
  })
  .prefault({});

export type DatabaseConfig = z.infer<typeof databaseSection>;
