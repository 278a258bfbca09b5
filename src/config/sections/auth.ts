import { z } from "zod";
import { duration } from "./core.js";

// Owned by the users-and-permissions work (issue 3): htpasswd, token auth and access rules.
// Distribution's key names are kept where it has them (auth.htpasswd.realm/path,
// auth.token.realm/service/issuer/rootcertbundle); the rest is Berth's own.

const action = z.enum(["pull", "push", "delete", "*"]);

/** A repository pattern: `*` matches any run of characters (slashes included), `${user}` the caller's name. */
const repositoryPattern = z
  .string()
  .min(1)
  .max(300)
  // biome-ignore lint/suspicious/noTemplateCurlyInString: "${user}" is literal text in patterns
  .refine((p) => /^[a-z0-9._\-/*]*(\$\{user\}[a-z0-9._\-/*]*)*$/.test(p), {
    message: 'a repository pattern may hold lower-case letters, digits, "._-/", "*" and "${user}"',
  });

const names = z.array(z.string().min(1)).default([]);

const rule = z
  .object({
    /** Patterns of the repositories this rule covers. `repository` (one pattern) is accepted too. */
    repositories: z.array(repositoryPattern).optional(),
    repository: repositoryPattern.optional(),
    /** User names; `*` means every authenticated user. */
    users: names,
    groups: names,
    actions: z.array(action).min(1),
  })
  .transform((r, ctx) => {
    const repositories = [...(r.repositories ?? []), ...(r.repository ? [r.repository] : [])];
    if (repositories.length === 0) {
      ctx.addIssue({ code: "custom", message: "a rule needs `repositories` (or `repository`)" });
      return z.NEVER;
    }
    if (r.users.length === 0 && r.groups.length === 0) {
      ctx.addIssue({
        code: "custom",
        message: 'a rule needs `users` or `groups` (users: ["*"] for everyone logged in)',
      });
      return z.NEVER;
    }
    return { repositories, users: r.users, groups: r.groups, actions: r.actions };
  });

export const accessSection = z.object({
  /** Users and groups allowed every action on every repository (and the whole catalog). */
  admins: z.object({ users: names, groups: names }).prefault({}),
  /** group name -> member user names. */
  groups: z.record(z.string().min(1), z.array(z.string().min(1))).default({}),
  /** What a caller without credentials may do: pull on these patterns. */
  anonymous: z.object({ pull: z.array(repositoryPattern).default([]) }).prefault({}),
  /** Grants; they add up. Anything not granted is denied. */
  rules: z.array(rule).default([]),
});

export const authSection = z
  .object({
    htpasswd: z
      .object({
        realm: z.string().default("Berth Registry"),
        path: z.string().min(1),
      })
      .optional(),
    token: z
      .object({
        /**
         * Where clients fetch tokens. With an external issuer it is required; when Berth issues the
         * tokens it defaults to `<http.host or the request's own origin>/auth/token`.
         */
        realm: z.string().optional(),
        /** The audience of the tokens (the `service` of the challenge). */
        service: z.string().min(1).default("berth"),
        issuer: z.string().min(1).default("berth"),
        /** Certificates of an external issuer; when set, Berth verifies tokens and issues none. */
        rootcertbundle: z.string().optional(),
        /** Berth's own: a PEM private key (EC, RSA or Ed25519) to sign with instead of the generated one. */
        signingkey: z.string().optional(),
        /** Berth's own: lifetime of the access tokens it issues. */
        expiration: duration.default(300_000),
        /** Berth's own: lifetime of refresh (offline) tokens. */
        refreshexpiration: duration.default(30 * 86_400_000),
        /** Berth's own: clock skew tolerated when checking exp/nbf. */
        leeway: duration.default(30_000),
      })
      .optional(),
    /** Berth's own access rules. Absent: every authenticated user may do everything (as registry:2). */
    access: accessSection.optional(),
    /** Berth's own: how long a checked user/password pair is remembered, so bcrypt runs once per ttl. */
    cache: z
      .object({
        ttl: duration.default(60_000),
        size: z.number().int().positive().default(10_000),
      })
      .prefault({}),
    /** Berth's own: slowing down failed logins, per client address and per user name. */
    throttle: z
      .object({
        enabled: z.boolean().default(true),
        /** Failures allowed within `window` before the delays start. */
        freeattempts: z.number().int().nonnegative().default(5),
        /** First delay; it doubles with every further failure, up to `maxdelay`. */
        delay: duration.default(1_000),
        maxdelay: duration.default(60_000),
        /** Failures older than this are forgotten. */
        window: duration.default(15 * 60_000),
      })
      .prefault({}),
  })
  .superRefine((auth, ctx) => {
    if (auth.token && !auth.token.rootcertbundle && !auth.htpasswd) {
      ctx.addIssue({
        code: "custom",
        path: ["token"],
        message:
          "Berth issues tokens itself when auth.token has no rootcertbundle; it then needs auth.htpasswd.path for the users",
      });
    }
    if (auth.token?.rootcertbundle && !auth.token.realm) {
      ctx.addIssue({
        code: "custom",
        path: ["token", "realm"],
        message: "an external token issuer (auth.token.rootcertbundle) needs auth.token.realm",
      });
    }
  })
  .prefault({});

export type AuthConfig = z.infer<typeof authSection>;
export type AccessConfig = z.infer<typeof accessSection>;
