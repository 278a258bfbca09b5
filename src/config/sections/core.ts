import { z } from "zod";
import { parseDuration } from "../duration.js";

export { parseDuration };

/** Durations as Go-style strings ("24h", "30m", "10s", "1h30m") or a number of seconds. */
export const duration = z.union([z.number().nonnegative(), z.string()]).transform((value, ctx) => {
  if (typeof value === "number") return value * 1000;
  const ms = parseDuration(value);
  if (ms === null) {
    ctx.addIssue({
      code: "custom",
      message: `expected a duration such as "10s", "5m" or "24h", got "${value}"`,
    });
    return z.NEVER;
  }
  return ms;
});

export const logSection = z
  .object({
    level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
    formatter: z.enum(["json", "text", "logstash"]).default("json"),
    accesslog: z.object({ disabled: z.boolean().default(false) }).prefault({}),
    fields: z.record(z.string(), z.unknown()).optional(),
  })
  .prefault({});

/** A byte count as a number or a numeric string ("10485760"), as registry:2's s3 driver accepts. */
const byteCount = z.union([z.number().int().nonnegative(), z.string().regex(/^\d+$/).transform(Number)]);
const flag = z.union([z.boolean(), z.enum(["true", "false"]).transform((v) => v === "true")]);

/** storage.s3: registry:2's s3 driver parameters, same names and defaults. */
export const s3Section = z
  .object({
    region: z.string(),
    regionendpoint: z.string().optional(),
    bucket: z.string().min(1),
    accesskey: z.string().optional(),
    secretkey: z.string().optional(),
    rootdirectory: z.string().default(""),
    forcepathstyle: flag.default(false),
    secure: flag.default(true),
    skipverify: flag.default(false),
    chunksize: byteCount.default(10 * 1024 * 1024),
    multipartcopychunksize: byteCount.default(32 * 1024 * 1024),
    multipartcopymaxconcurrency: byteCount.default(100),
    /**
     * Berth's default is S3's CopyObject limit (5 GiB), not registry:2's 32 MiB: one CopyObject per commit,
     * which Ceph radosgw answers by reference (0.6 s for 1 GiB) instead of copying parts.
     */
    multipartcopythresholdsize: byteCount.default(5 * 1024 * 1024 * 1024),
    storageclass: z.string().default("STANDARD"),
    encrypt: flag.default(false),
    keyid: z.string().optional(),
    /**
     * Keep registry:2's link objects in step (issue 20), as storage.filesystem.distributionlinks does in a
     * directory. Unset: on for a bucket adopted from registry:2, off for a new one. Berth's own key.
     */
    distributionlinks: flag.optional(),
  })
  .optional();

/** storage.redirect: Distribution's redirect (presigned URLs) for stores that have it. */
export const redirectSection = z
  .object({
    disable: z.boolean().default(false),
    /** How long a presigned URL stays valid (Berth's own key; Distribution uses 20 minutes). */
    expiry: duration.default(5 * 60_000),
  })
  .optional();

export const storageSection = z
  .object({
    s3: s3Section,
    filesystem: z
      .object({
        rootdirectory: z.string().default("./data"),
        /**
         * Keep registry:2's link files in step (issue 12). Unset: on for a directory adopted from registry:2,
         * off for a new one. Berth's own key.
         */
        distributionlinks: z.boolean().optional(),
      })
      .prefault({}),
    /** Off unless set, as in registry:2: a new registry never lets a caller delete by default. */
    delete: z.object({ enabled: z.boolean().default(false) }).prefault({}),
    maintenance: z
      .object({
        uploadpurging: z
          .object({
            enabled: z.boolean().default(true),
            age: duration.default(168 * 3_600_000),
            interval: duration.default(24 * 3_600_000),
            dryrun: z.boolean().default(false),
          })
          .prefault({}),
        readonly: z.object({ enabled: z.boolean().default(false) }).prefault({}),
      })
      .prefault({}),
    cache: z.object({ blobdescriptor: z.string().optional() }).optional(),
    redirect: redirectSection,
  })
  .prefault({});

export const LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory";

/**
 * http.tls.letsencrypt: registry:2's keys (cachefile, email, hosts, directoryurl) and Berth's own
 * (challenges, httpaddr, directorycas, renewbefore), for any ACME (RFC 8555) CA. Checks beyond the
 * types: src/config/sections/tls.ts.
 */
export const letsencryptSection = z
  .object({
    /** registry:2's cache file; Berth keeps its ACME state in a directory at this path. */
    cachefile: z.string().optional(),
    email: z.string().optional(),
    hosts: z.array(z.string()).default([]),
    directoryurl: z.string().default(LETS_ENCRYPT_DIRECTORY),
    challenges: z.array(z.enum(["http-01", "tls-alpn-01"])).default(["http-01", "tls-alpn-01"]),
    httpaddr: z.string().default(":80"),
    directorycas: z.array(z.string()).default([]),
    renewbefore: duration.optional(),
  })
  .optional();

export const httpSection = z
  .object({
    addr: z.string().default("0.0.0.0:5000"),
    net: z.enum(["tcp", "unix"]).default("tcp"),
    host: z.string().optional(),
    prefix: z.string().default("/"),
    secret: z.string().optional(),
    relativeurls: z.boolean().default(false),
    draintimeout: duration.default(30_000),
    /** Worker processes; 0 means one per core. Berth's own key. */
    workers: z.number().int().nonnegative().default(0),
    /** Largest manifest accepted, in bytes (Berth's own key). */
    maxmanifestbytes: z
      .number()
      .int()
      .positive()
      .default(4 * 1024 * 1024),
    /** Proxies whose X-Forwarded-* headers are believed (Berth's own key). */
    trustedproxies: z.array(z.string()).default(["127.0.0.1", "::1"]),
    /**
     * Berth's own: a request whose body sends nothing for this long while Berth waits for it is cut
     * (408); idle time, not total, so a slow but moving upload of any size goes through. 0: never.
     */
    idletimeout: duration.default(60_000),
    /** Berth's own: the request line and headers must arrive within this (HTTP/1.1). */
    headertimeout: duration.default(30_000).refine((ms) => ms >= 1_000, { message: "expected at least 1s" }),
    /**
     * Berth's own: connections that one client address may hold open at once, in each worker process
     * (http.trustedproxies are exempt: behind a proxy every client has its address). 0: no cap.
     */
    maxclientconnections: z.number().int().nonnegative().default(128),
    tls: z
      .object({
        certificate: z.string().optional(),
        key: z.string().optional(),
        clientcas: z.array(z.string()).optional(),
        minimumtls: z.string().optional(),
        letsencrypt: letsencryptSection,
      })
      .prefault({}),
    headers: z.record(z.string(), z.array(z.string())).default({}),
    /** Distribution's debug server; Berth serves only Prometheus metrics there (see metrics.addr). */
    debug: z
      .object({
        addr: z.string().optional(),
        prometheus: z
          .object({ enabled: z.boolean().default(false), path: z.string().default("/metrics") })
          .prefault({}),
      })
      .optional(),
  })
  .prefault({});
