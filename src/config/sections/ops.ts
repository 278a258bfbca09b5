import { z } from "zod";
import { duration } from "./core.js";
import { proxySection } from "./proxy.js";

// Owned by the drop-in/operations work (issue 4): notifications, proxy, health, redis, metrics.
//
// proxy lives in ./proxy.ts (issue 13); notifications (issue 14: src/registry/events.ts acts on them) and
// health have Distribution's shapes so that a registry:2 config.yml is checked as registry:2 would check it;
// Berth does not act on health yet, and src/config/compat.ts makes start-up warn when it is set. redis is
// accepted in any shape (it changed
// between Distribution 2 and 3) and never used: Berth's shared state lives in its database.

const headerMap = z.record(z.string(), z.array(z.string()));
const count = z.number().int().nonnegative();

const eventAction = z.enum(["push", "pull", "mount", "delete"]);

/**
 * One webhook receiver. Distribution's keys (name … ignore), then Berth's own (format … actions).
 * Defaults as registry:2: timeout 1s, threshold 10, backoff 1s.
 */
const endpoint = z.object({
  name: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, { message: "expected a name of letters, digits, . _ -" }),
  disabled: z.boolean().default(false),
  url: z.string().regex(/^https?:\/\/[^\s]+$/i, { message: "expected an http:// or https:// URL" }),
  headers: headerMap.optional(),
  timeout: duration.default(1000),
  threshold: count.default(10),
  backoff: duration.default(1000),
  ignoredmediatypes: z.array(z.string()).optional(),
  ignore: z
    .object({
      mediatypes: z.array(z.string()).optional(),
      actions: z.array(z.string()).optional(),
    })
    .optional(),
  // Berth's own from here.
  format: z.enum(["distribution", "cloudevents"]).default("distribution"),
  batchsize: z.number().int().min(1).max(1000).optional(),
  maxbackoff: duration.default(300_000),
  signature: z
    .object({
      secret: z.string().min(1).optional(),
      secretfile: z.string().min(1).optional(),
      header: z.string().default("Berth-Signature"),
    })
    .refine((s) => (s.secret === undefined) !== (s.secretfile === undefined), {
      message: "set exactly one of secret and secretfile",
    })
    .optional(),
  repositories: z.array(z.string()).optional(),
  actions: z.array(eventAction).optional(),
});

export const notificationsSection = z
  .object({
    events: z
      .object({
        includereferences: z.boolean().default(false),
        pull: z.boolean().default(true),
        keep: duration.default(24 * 3_600_000),
      })
      .prefault({}),
    endpoints: z.array(endpoint).default([]),
  })
  .superRefine((n, ctx) => {
    const seen = new Set<string>();
    n.endpoints.forEach((e, i) => {
      if (seen.has(e.name)) {
        ctx.addIssue({
          code: "custom",
          path: ["endpoints", i, "name"],
          message: `duplicate endpoint name "${e.name}"`,
        });
      }
      seen.add(e.name);
    });
  })
  .prefault({});

const check = { timeout: duration.optional(), interval: duration.optional(), threshold: count.optional() };

export const healthSection = z
  .object({
    storagedriver: z
      .object({
        enabled: z.boolean().default(false),
        interval: duration.optional(),
        threshold: count.optional(),
      })
      .optional(),
    file: z.array(z.object({ file: z.string(), interval: duration.optional() })).optional(),
    http: z
      .array(
        z.object({
          uri: z.string(),
          headers: headerMap.optional(),
          statuscode: z.number().int().optional(),
          ...check,
        }),
      )
      .optional(),
    tcp: z.array(z.object({ addr: z.string(), ...check })).optional(),
  })
  .optional();

export const redisSection = z.record(z.string(), z.unknown()).optional();

/** host:port, [v6]:port or :port. */
const listenAddr = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]*):\d{1,5}$/, {
  message: 'expected host:port such as "0.0.0.0:9090" or ":9090"',
});

/**
 * Berth's own: Prometheus metrics. Served at `path` on the main address, or, when `addr` is set,
 * only on that address (by the primary process, aggregated over every worker). Distribution's
 * http.debug.addr with http.debug.prometheus.enabled means the same as metrics.addr.
 */
export const metricsSection = z
  .object({
    enabled: z.boolean().default(true),
    addr: listenAddr.optional(),
    path: z.string().startsWith("/", { message: "expected a path starting with /" }).default("/metrics"),
    /**
     * With authentication on, who may read metrics on the main port besides administrators: a scraper
     * sending `Authorization: Bearer <token>`, and these users (with their own credentials).
     */
    token: z.string().min(16, { message: "expected a token of at least 16 characters" }).optional(),
    users: z.array(z.string()).default([]),
  })
  .prefault({});

export const opsSections = {
  notifications: notificationsSection,
  proxy: proxySection,
  health: healthSection,
  redis: redisSection,
  metrics: metricsSection,
};
