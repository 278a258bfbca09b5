import { z } from "zod";
import { duration } from "./core.js";

// Owned by the garbage-collection work (issue 6): the collector's schedule and retention policies.
// Abandoned uploads are purged on storage.maintenance.uploadpurging (Distribution's key, in core.ts).
// Every key is one lower-case word so that REGISTRY_GC_GRACEPERIOD and friends map onto it.

const HOUR = 3_600_000;

/** A repository pattern as in access rules: `*` matches any run of characters, slashes included. */
const repositoryPattern = z
  .string()
  .min(1)
  .max(300)
  .refine((p) => /^[a-z0-9._\-/*]+$/.test(p), {
    message: 'a repository pattern may hold lower-case letters, digits, "._-/" and "*"',
  });

/** A regular expression that must match a whole tag (it is anchored: `v\d+` keeps v1, not v1-rc). */
const tagRegex = z
  .string()
  .min(1)
  .max(500)
  .superRefine((source, ctx) => {
    try {
      new RegExp(`^(?:${source})$`);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: `not a valid regular expression: ${(err as Error).message}` });
    }
  });

export const gcSection = z
  .object({
    /** Collect on a schedule (berth gc works either way). */
    enabled: z.boolean().default(true),
    /** Time between two scheduled collections. */
    interval: duration.default(HOUR),
    /**
     * Blobs and manifests newer than this are never collected: it protects the blobs of a push
     * whose manifest has not arrived yet, and the children of an index still being pushed.
     */
    graceperiod: duration.default(HOUR),
    /** Blobs (or manifests) removed per database transaction; pushes wait at most one batch. */
    batchsize: z.number().int().min(1).max(5000).default(100),
    /** Pause between two batches, so that requests run in between. */
    pause: duration.default(10),
    untagged: z
      .object({
        /** Also remove manifests that no tag, index or kept referrer holds. */
        enabled: z.boolean().default(false),
        /** Only untagged manifests older than this go (at least graceperiod). */
        olderthan: duration.default(24 * HOUR),
      })
      .prefault({}),
  })
  .prefault({});

const policy = z
  .object({
    /** Repository patterns the policy covers (one pattern or a list). */
    repositories: z
      .union([repositoryPattern, z.array(repositoryPattern).min(1)])
      .transform((r) => (Array.isArray(r) ? r : [r])),
    /** Keep the N most recently pushed tags (not counting those kept by keeptags). */
    keeplast: z.number().int().nonnegative().optional(),
    /** Keep tags that match one of these regular expressions (whole tag). */
    keeptags: z.array(tagRegex).default([]),
    /** Only tags older than this are removed (tag age: when it was last pushed or moved). */
    olderthan: duration.optional(),
    /** Keep tags whose image was pulled within this duration. */
    keeppulledwithin: duration.optional(),
  })
  .superRefine((p, ctx) => {
    if (
      p.keeplast === undefined &&
      p.olderthan === undefined &&
      p.keeppulledwithin === undefined &&
      p.keeptags.length === 0
    ) {
      ctx.addIssue({
        code: "custom",
        message:
          "a retention policy needs at least one of keeplast, keeptags, olderthan or keeppulledwithin (else it would remove every tag)",
      });
    }
  });

export type RetentionPolicyConfig = z.infer<typeof policy>;

export const retentionSection = z
  .object({
    /** Apply the policies on a schedule (berth retention works either way). */
    enabled: z.boolean().default(true),
    interval: duration.default(HOUR),
    /** Only log what the policies would remove. */
    dryrun: z.boolean().default(false),
    /** For each repository the first policy whose pattern matches applies; repositories no policy matches are left alone. */
    policies: z.array(policy).default([]),
  })
  .prefault({});

export const gcSections = {
  gc: gcSection,
  retention: retentionSection,
};

export type GcConfig = z.infer<typeof gcSection>;
export type RetentionConfig = z.infer<typeof retentionSection>;
