import { readFileSync } from "node:fs";
import type { Config } from "../config/schema.js";
import type { MetadataStore } from "../metadata/store.js";
import { PullThroughCache, type UpstreamSettings } from "../registry/proxy/cache.js";
import type { BlobStore } from "../storage/blob-store.js";

/** How long a cached tag is served before the upstream is asked again, when proxy.tagttl is not set. */
export const DEFAULT_TAG_TTL_MS = 60_000;
/** How long the upstream may take to answer before a cached manifest is served instead. */
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 10_000;
/** registry:2's proxy.ttl default: cached content not pulled for a week is expired. */
export const DEFAULT_CACHE_TTL_MS = 168 * 3_600_000;

type ProxyConfig = NonNullable<Config["proxy"]>;
type Entry = Omit<ProxyConfig, "upstreams" | "exec" | "remoteurl">;

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new Error(`proxy: cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
}

function settingsOf(
  prefix: string | null,
  remoteurl: string,
  entry: Entry,
  defaults: Entry,
): UpstreamSettings {
  const passwordfile = entry.passwordfile ?? defaults.passwordfile;
  const cafile = entry.cafile ?? defaults.cafile;
  const password =
    entry.password ?? (passwordfile ? readText(passwordfile, "password file").trim() : defaults.password);
  return {
    prefix,
    remoteurl: remoteurl.replace(/\/+$/, ""),
    username: entry.username ?? defaults.username,
    password,
    ca: cafile ? readText(cafile, "CA file") : undefined,
    tagTtlMs: entry.tagttl ?? defaults.tagttl ?? DEFAULT_TAG_TTL_MS,
    timeoutMs: entry.timeout ?? defaults.timeout ?? DEFAULT_UPSTREAM_TIMEOUT_MS,
    allowPush: entry.allowpush ?? defaults.allowpush ?? false,
    realmHosts: entry.realmhosts ?? defaults.realmhosts,
    ttlMs: entry.ttl ?? defaults.ttl ?? DEFAULT_CACHE_TTL_MS,
  };
}

/** The upstreams the configuration names: registry:2's remoteurl (the whole registry), or prefixed ones. */
export function upstreamSettings(config: Config): UpstreamSettings[] {
  const proxy = config.proxy;
  if (!proxy) return [];
  if (proxy.remoteurl) return [settingsOf(null, proxy.remoteurl, proxy, {})];
  return (proxy.upstreams ?? []).map((u) => settingsOf(u.prefix, u.remoteurl, u, proxy));
}

/** The pull-through cache when the configuration has `proxy`, else null. */
export function openProxy(config: Config, meta: MetadataStore, store: BlobStore): PullThroughCache | null {
  // Read-only: what is cached is served like any repository, and nothing is fetched (fetching writes).
  if (config.storage.maintenance.readonly.enabled) return null;
  const settings = upstreamSettings(config);
  return settings.length > 0 ? new PullThroughCache(settings, meta, store) : null;
}
