import { z } from "zod";
import { duration } from "./core.js";

// The pull-through cache (issue 13). registry:2's keys (remoteurl, username, password, ttl, exec) keep
// their meaning: with `remoteurl` the whole registry is a mirror of that upstream, and `ttl` expires what
// is not pulled for that long (src/registry/proxy/expiry.ts). Berth's own keys add
// several upstreams, each under a repository prefix, credentials from a file, a custom CA and the
// interval at which a cached tag is checked upstream again.

/** A repository-name prefix: path components as in repository names, no leading or trailing slash. */
const prefix = z
  .string()
  .regex(/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/, {
    message: 'expected a repository name prefix such as "hub" or "mirrors/ghcr"',
  });

const remoteurl = z.string().regex(/^https?:\/\/[^\s/]+\/?$/, {
  message: 'expected the upstream\'s base URL, such as "https://registry-1.docker.io"',
});

/** What every upstream may set; the top level's values are the defaults of `upstreams` entries. */
const upstreamFields = {
  username: z.string().optional(),
  password: z.string().optional(),
  /** Berth's own: a file whose content (trimmed) is the password; read at start-up. */
  passwordfile: z.string().optional(),
  /** Berth's own: PEM file of CA certificates trusted for the upstream's TLS (beside the system's). */
  cafile: z.string().optional(),
  /** Berth's own: how long a cached tag is served without asking the upstream (HEAD) again. */
  tagttl: duration.optional(),
  /** Berth's own: how long to wait for the upstream before serving a cached manifest instead. */
  timeout: duration.optional(),
  /** Berth's own: pushes into the proxied repositories are accepted (default: refused, as in registry:2). */
  allowpush: z.boolean().optional(),
  /**
   * registry:2: cached content not pulled for this long is expired (and collected); 0: never. Berth's own
   * per upstream too (the top level's value is the default).
   */
  ttl: duration.optional(),
  /**
   * Berth's own: hosts of token realms, beyond the upstream's own registrable domain, that may receive the
   * upstream's credentials.
   */
  realmhosts: z.array(z.string().min(1)).optional(),
};

export const upstreamSchema = z.object({
  prefix,
  remoteurl,
  ...upstreamFields,
});

export const proxySection = z
  .object({
    remoteurl: remoteurl.optional(),
    ...upstreamFields,
    exec: z.object({ command: z.string(), lifetime: duration.optional() }).optional(),
    upstreams: z.array(upstreamSchema).optional(),
  })
  .superRefine((value, ctx) => {
    if (!value.remoteurl && (!value.upstreams || value.upstreams.length === 0)) {
      ctx.addIssue({
        code: "custom",
        message: "set proxy.remoteurl or at least one entry of proxy.upstreams",
      });
    }
    const seen = new Set<string>();
    for (const u of value.upstreams ?? []) {
      if (seen.has(u.prefix)) {
        ctx.addIssue({ code: "custom", message: `proxy.upstreams: the prefix "${u.prefix}" is given twice` });
      }
      seen.add(u.prefix);
    }
    if (value.remoteurl && value.upstreams && value.upstreams.length > 0) {
      ctx.addIssue({
        code: "custom",
        message:
          "proxy.remoteurl makes the whole registry a mirror of one upstream; it cannot be combined with proxy.upstreams",
      });
    }
  })
  .optional();

export type ProxyConfig = NonNullable<z.infer<typeof proxySection>>;
