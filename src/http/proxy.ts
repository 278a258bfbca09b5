/**
 * The HTTP side of the pull-through cache (issue 13): its metrics, its log lines, and containerd's
 * `?ns=` parameter. The cache itself is in src/registry/proxy/.
 */
import { Counter } from "../registry/meters.js";
import type { PullThroughCache } from "../registry/proxy/cache.js";
import type { AppContext } from "./context.js";

let counters:
  | {
      hits: Counter<"upstream" | "kind">;
      misses: Counter<"upstream" | "kind">;
      bytes: Counter<"upstream">;
      errors: Counter<"upstream" | "kind">;
      stale: Counter<"upstream">;
    }
  | undefined;

function proxyCounters(): NonNullable<typeof counters> {
  counters ??= {
    hits: new Counter({
      name: "berth_proxy_hits_total",
      help: "Pull-through cache: manifests and blobs served from the cache, by upstream and kind.",
      labelNames: ["upstream", "kind"],
    }),
    misses: new Counter({
      name: "berth_proxy_misses_total",
      help: "Pull-through cache: manifests and blobs fetched from the upstream, by upstream and kind.",
      labelNames: ["upstream", "kind"],
    }),
    bytes: new Counter({
      name: "berth_proxy_upstream_bytes_total",
      help: "Pull-through cache: blob bytes fetched from each upstream.",
      labelNames: ["upstream"],
    }),
    errors: new Counter({
      name: "berth_proxy_upstream_errors_total",
      help: "Pull-through cache: failed upstream requests, by upstream and kind (unreachable, timeout, status, auth, ratelimited, digest).",
      labelNames: ["upstream", "kind"],
    }),
    stale: new Counter({
      name: "berth_proxy_stale_total",
      help: "Pull-through cache: cached manifests served because the upstream could not confirm them.",
      labelNames: ["upstream"],
    }),
  };
  return counters;
}

/** Connects the cache's counts to Prometheus and its warnings to the log. */
export function wireProxy(ctx: AppContext): void {
  const proxy = ctx.registry.proxy;
  if (!proxy) return;
  const c = proxyCounters();
  proxy.observer = {
    hit: (upstream, kind) => c.hits.inc({ upstream, kind }),
    miss: (upstream, kind) => c.misses.inc({ upstream, kind }),
    fetched: (upstream, bytes) => c.bytes.inc({ upstream }, bytes),
    error: (upstream, kind) => c.errors.inc({ upstream, kind }),
    stale: (upstream, repository, reference, reason) => {
      c.stale.inc({ upstream });
      ctx.log.warn(
        { upstream, repository, reference, reason },
        "proxy: served a cached manifest the upstream did not confirm",
      );
    },
    failed: (upstream, kind, reason) => {
      ctx.log.warn({ upstream, kind, reason }, "proxy: the upstream failed a request");
    },
  };
}

/** The local repository a mirror request names: containerd adds `?ns=<upstream host>`. */
export function mirroredName(proxy: PullThroughCache | null, name: string, ns: string | undefined): string {
  return proxy ? proxy.localName(name, ns) : name;
}
