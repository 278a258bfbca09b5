import { z } from "zod";
import { duration } from "./core.js";
import { proxySection } from "./proxy.js";

// Owned by the drop-in/operations work (issue 4): notifications, proxy, health, redis, metrics.
//
// proxy lives in ./proxy.ts (issue 13). notifications and health have Distribution's shapes so that a registry:2 config.yml is
// checked as registry:2 would check it; Berth does not act on them yet, and src/config/compat.ts
// makes start-up warn about each one that is set. redis is accepted in any shape (it changed
// between Distribution 2 and 3) and never used: Berth's shared state lives in its database.

const headerMap = z.record(z.string(), z.array(z.string()));
const count = z.number().int().nonnegative();

const endpoint = z.object({
  name: z.string(),
  disabled: z.boolean().default(false),
  url: z.string(),
  headers: headerMap.optional(),
  timeout: duration.optional(),
  threshold: count.optional(),
  backoff: duration.optional(),
  ignoredmediatypes: z.array(z.string()).optional(),
  ignore: z
    .object({
      mediatypes: z.array(z.string()).optional(),
      actions: z.array(z.string()).optional(),
    })
    .optional(),
});

export const notificationsSection = z
  .object({
    events: z.object({ includereferences: z.boolean().optional() }).optional(),
    endpoints: z.array(endpoint).optional(),
  })
  .optional();

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
  })
  .prefault({});

export const opsSections = {
  notifications: notificationsSection,
  proxy: proxySection,
  health: healthSection,
  redis: redisSection,
  metrics: metricsSection,
};
