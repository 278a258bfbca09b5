/**
 * The pull-through cache's outbound client: one per upstream registry. It speaks just enough of the
 * distribution API to pull (HEAD/GET of manifests and blobs) and does the upstream's authentication:
 * anonymous, Basic, and the Bearer token flow of Docker Hub and registry:2's `auth.token`
 * (WWW-Authenticate realm/service/scope, a token fetched with the credentials and kept until it expires).
 *
 * Credentials never leave this module in a message: errors name the upstream by its URL and status alone.
 */
import dns, { type LookupAddress } from "node:dns";
import http, { type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import net from "node:net";
import tls from "node:tls";
import { httpsModule } from "../https-module.js";

export interface UpstreamClientOptions {
  /** Base URL, such as https://registry-1.docker.io */
  remoteurl: string;
  username?: string;
  password?: string;
  /** Extra CA certificates (PEM) trusted beside the system's. */
  ca?: string;
  /** Time allowed for the response headers to arrive. */
  timeoutMs: number;
  /**
   * Hosts besides the upstream's registrable domain whose token realm may receive the credentials
   * (`realmhosts`).
   */
  realmHosts?: string[];
}

export interface UpstreamResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The body as it streams in; consume or destroy it. */
  body: IncomingMessage;
}

/** A failure to reach the upstream or an answer the cache cannot use. Carries no credentials. */
export class UpstreamError extends Error {
  constructor(
    message: string,
    /**
     * "unreachable", "timeout", "status" (an unexpected HTTP status), "auth", "ratelimited", "redirect"
     * (a redirect or token realm to a destination the upstream may not send the cache to)
     */
    readonly kind: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "UpstreamError";
  }
}

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="...",service="...",scope="..."` (one challenge; quoted or bare values). */
export function parseChallenge(header: string | undefined): Challenge | null {
  if (!header) return null;
  const m = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header);
  if (!m) return null;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?\s*/gy;
  const rest = m[2] ?? "";
  for (let p = re.exec(rest); p; p = re.exec(rest)) {
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : (p[3] ?? "");
    if (re.lastIndex >= rest.length) break;
  }
  return { scheme: m[1]!.toLowerCase(), params };
}

/**
 * Where an address is: the public internet, or one of the classes an upstream must not send the cache to
 * unless it is there itself (loopback, link-local, private, including IPv6's unique local and the shared
 * 100.64/10), or "reserved" (unspecified, multicast, documentation and other special ranges: never).
 */
export type AddressClass = "public" | "loopback" | "link-local" | "private" | "reserved";

const V4_CLASSES: [string, number, AddressClass][] = [
  ["0.0.0.0", 8, "reserved"],
  ["10.0.0.0", 8, "private"],
  ["100.64.0.0", 10, "private"],
  ["127.0.0.0", 8, "loopback"],
  ["169.254.0.0", 16, "link-local"],
  ["172.16.0.0", 12, "private"],
  ["192.0.0.0", 24, "reserved"],
  ["192.0.2.0", 24, "reserved"],
  ["192.168.0.0", 16, "private"],
  ["198.18.0.0", 15, "reserved"],
  ["198.51.100.0", 24, "reserved"],
  ["203.0.113.0", 24, "reserved"],
  ["224.0.0.0", 4, "reserved"],
  ["240.0.0.0", 4, "reserved"],
];
const V6_CLASSES: [string, number, AddressClass][] = [
  ["::", 128, "reserved"],
  ["::1", 128, "loopback"],
  ["::", 96, "reserved"], // IPv4-compatible (deprecated), after ::1
  ["64:ff9b::", 96, "reserved"],
  ["100::", 64, "reserved"],
  ["2001:db8::", 32, "reserved"],
  ["fc00::", 7, "private"],
  ["fe80::", 10, "link-local"],
  ["fec0::", 10, "private"],
  ["ff00::", 8, "reserved"],
];
const classLists: [net.BlockList, AddressClass][] = [];
for (const [family, table] of [
  ["ipv4", V4_CLASSES],
  ["ipv6", V6_CLASSES],
] as const) {
  for (const [address, bits, kind] of table) {
    const list = new net.BlockList();
    list.addSubnet(address, bits, family);
    classLists.push([list, kind]);
  }
}

/** The class of an IP address (an IPv4-mapped IPv6 address is judged as its IPv4 address). */
export function addressClass(ip: string): AddressClass {
  const bare = ip.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  const address = mapped ? mapped[1]! : bare;
  const family = net.isIP(address);
  if (family === 0) return "reserved";
  for (const [list, kind] of classLists) {
    if (list.check(address, family === 4 ? "ipv4" : "ipv6")) return kind;
  }
  return "public";
}

/**
 * Whether the cache may go to an address of class `target` for an upstream whose own address is of class
 * `upstream`: anywhere public; into loopback, link-local or private ranges only from an upstream that is
 * in that same class itself (a registry on 127.0.0.1 may send it to 127.0.0.1, a public one may not).
 */
export function destinationAllowed(upstream: AddressClass, target: AddressClass): boolean {
  if (target === "public") return true;
  return target !== "reserved" && target === upstream;
}

/**
 * Why a redirect (or token realm) to `target` is refused for an upstream of class `upstream`, or null when
 * it may be followed as far as the URL tells: an http(s) URL whose host, when an IP address or
 * `localhost`, is a destination the upstream may send the cache to. Names are checked again once resolved.
 */
export function redirectRefusal(upstream: AddressClass, target: URL): string | null {
  if (target.protocol !== "http:" && target.protocol !== "https:") {
    return `a ${target.protocol.replace(/:$/, "")} URL`;
  }
  const host = target.hostname.replace(/^\[|\]$/g, "");
  const kind = net.isIP(host) ? addressClass(host) : /^localhost\.?$/i.test(host) ? "loopback" : null;
  if (kind !== null && !destinationAllowed(upstream, kind)) return `a ${kind} address (${host})`;
  return null;
}

/** Common second-level labels under country codes (co.uk, com.au...), for registrableDomain. */
const SECOND_LEVEL = new Set(["ac", "co", "com", "edu", "gov", "net", "org", "or", "ne", "go", "gv"]);

/**
 * The registrable domain of a host name, approximated without the public suffix list: the last two
 * labels, or three under a country code with a common second level (example.co.uk). An IP address is
 * its own.
 */
export function registrableDomain(hostname: string): string {
  const host = hostname
    .toLowerCase()
    .replace(/\.$/, "")
    .replace(/^\[|\]$/g, "");
  if (net.isIP(host)) return host;
  const labels = host.split(".");
  const keep = labels.length >= 3 && labels.at(-1)!.length === 2 && SECOND_LEVEL.has(labels.at(-2)!) ? 3 : 2;
  return labels.slice(-keep).join(".");
}

/**
 * Whether a token realm on `realm` may receive the upstream's credentials: the upstream's own host, a
 * host of the same registrable domain (auth.docker.io for registry-1.docker.io), or one of `listed`.
 */
export function realmMayHaveCredentials(upstream: URL, realm: URL, listed: string[] = []): boolean {
  // Never in clear text when the upstream itself is reached over TLS.
  if (upstream.protocol === "https:" && realm.protocol !== "https:") return false;
  const host = realm.hostname.toLowerCase().replace(/\.$/, "");
  if (listed.some((h) => h.toLowerCase().replace(/\.$/, "") === host)) return true;
  return registrableDomain(host) === registrableDomain(upstream.hostname);
}

const MANIFEST_ACCEPT = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");

const MAX_REDIRECTS = 5;
/** A token is renewed this long before its stated expiry. */
const TOKEN_SLACK_MS = 10_000;

export class UpstreamClient {
  readonly base: URL;
  private readonly agent: http.Agent;
  /** Bearer tokens by scope, until they expire. In memory: a lost token is fetched again. */
  private readonly tokens = new Map<string, { token: string; until: number }>();
  /** Token requests under way, by scope: concurrent pulls share one. */
  private readonly pendingTokens = new Map<string, Promise<string>>();
  /** Which scheme the upstream asked for last (so that later requests send credentials at once). */
  private scheme: "none" | "basic" | "bearer" = "none";
  private bearer: Record<string, string> | null = null;
  /**
   * The class of the address the upstream answered from (its redirects and token realm may lead into
   * that class, no other non-public one). Until it has answered, judged by its host when that is an
   * address, else public (the strictest).
   */
  private upstreamClass: AddressClass;

  constructor(readonly options: UpstreamClientOptions) {
    this.base = new URL(options.remoteurl);
    const host = this.base.hostname.replace(/^\[|\]$/g, "");
    this.upstreamClass = net.isIP(host)
      ? addressClass(host)
      : /^localhost\.?$/i.test(host)
        ? "loopback"
        : "public";
    const ca = options.ca ? [...tls.rootCertificates, options.ca] : undefined;
    this.agent =
      this.base.protocol === "https:"
        ? new (httpsModule().Agent)({ keepAlive: true, maxSockets: 64, ca })
        : new http.Agent({ keepAlive: true, maxSockets: 64 });
  }

  /** The upstream's host as containerd's `?ns=` names it (docker.io for Docker Hub). */
  get host(): string {
    return this.base.host;
  }

  get isDockerHub(): boolean {
    return /(^|\.)docker\.io$/.test(this.base.hostname);
  }

  /** Where `path` on this upstream is, for messages (never with credentials). */
  describe(path = ""): string {
    return `${this.base.origin}${path}`;
  }

  manifest(method: "GET" | "HEAD", repository: string, reference: string): Promise<UpstreamResponse> {
    return this.request(method, `/v2/${repository}/manifests/${reference}`, repository, {
      accept: MANIFEST_ACCEPT,
    });
  }

  blob(method: "GET" | "HEAD", repository: string, digest: string): Promise<UpstreamResponse> {
    return this.request(method, `/v2/${repository}/blobs/${digest}`, repository, {});
  }

  /** A request with the upstream's authentication, following redirects (blobs are often on a CDN). */
  async request(
    method: string,
    path: string,
    repository: string,
    headers: Record<string, string>,
  ): Promise<UpstreamResponse> {
    const scope = `repository:${repository}:pull`;
    let res = await this.send(method, new URL(path, this.base), {
      ...headers,
      ...(await this.authorization(scope)),
    });
    if (res.status === 401) {
      const challenge = parseChallenge(header(res.headers, "www-authenticate"));
      res.body.resume();
      if (!challenge)
        throw new UpstreamError(`${this.describe(path)} answered 401 without a challenge`, "auth", 401);
      if (challenge.scheme === "basic") {
        if (!this.options.username) {
          throw new UpstreamError(
            `${this.describe(path)} asks for credentials and none are configured`,
            "auth",
            401,
          );
        }
        this.scheme = "basic";
      } else if (challenge.scheme === "bearer") {
        this.scheme = "bearer";
        this.bearer = challenge.params;
        this.tokens.delete(challenge.params.scope ?? scope);
        this.tokens.delete(scope);
      } else {
        throw new UpstreamError(
          `${this.describe(path)} asks for ${challenge.scheme} authentication`,
          "auth",
          401,
        );
      }
      res = await this.send(method, new URL(path, this.base), {
        ...headers,
        ...(await this.authorization(challenge.params.scope ?? scope)),
      });
      if (res.status === 401 || res.status === 403) {
        res.body.resume();
        throw new UpstreamError(
          `${this.describe(path)} refused the configured credentials`,
          "auth",
          res.status,
        );
      }
    }
    if (res.status === 429) {
      res.body.resume();
      throw new UpstreamError(`${this.describe(path)} answered 429 (rate limited)`, "ratelimited", 429);
    }
    return res;
  }

  private async authorization(scope: string): Promise<Record<string, string>> {
    if (this.scheme === "basic") return { authorization: this.basic() };
    if (this.scheme !== "bearer" || !this.bearer) return {};
    const cached = this.tokens.get(scope);
    if (cached && cached.until > Date.now()) return { authorization: `Bearer ${cached.token}` };
    let pending = this.pendingTokens.get(scope);
    if (!pending) {
      pending = this.fetchToken(scope).finally(() => this.pendingTokens.delete(scope));
      this.pendingTokens.set(scope, pending);
    }
    return { authorization: `Bearer ${await pending}` };
  }

  private basic(): string {
    const { username = "", password = "" } = this.options;
    return `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
  }

  private async fetchToken(scope: string): Promise<string> {
    const realm = this.bearer?.realm;
    if (!realm) throw new UpstreamError(`${this.describe()} sent a Bearer challenge without a realm`, "auth");
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new UpstreamError(`${this.describe()} sent a Bearer challenge with an invalid realm`, "auth");
    }
    if (this.bearer?.service) url.searchParams.set("service", this.bearer.service);
    url.searchParams.set("scope", scope);
    const headers: Record<string, string> = {};
    if (this.options.username) {
      // The credentials are the upstream's: they go to a realm of its own domain, or one configured.
      if (!realmMayHaveCredentials(this.base, url, this.options.realmHosts)) {
        throw new UpstreamError(
          `${this.describe()} names the token realm ${url.origin}, which is not on its domain: the credentials are not sent there (list its host in realmhosts to allow it)`,
          "auth",
        );
      }
      headers.authorization = this.basic();
    }
    const res = await this.send("GET", url, headers);
    const body = await readSmall(res.body, 1 << 20);
    if (res.status !== 200) {
      throw new UpstreamError(
        `the token service ${url.origin}${url.pathname} answered ${res.status}`,
        res.status === 429 ? "ratelimited" : "auth",
        res.status,
      );
    }
    let parsed: { token?: string; access_token?: string; expires_in?: number };
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {
      throw new UpstreamError(`the token service ${url.origin}${url.pathname} sent no JSON`, "auth");
    }
    const token = parsed.token ?? parsed.access_token;
    if (!token)
      throw new UpstreamError(`the token service ${url.origin}${url.pathname} sent no token`, "auth");
    // The spec's default lifetime is 60 s when expires_in is missing.
    const lifetime = (typeof parsed.expires_in === "number" ? parsed.expires_in : 60) * 1000;
    this.tokens.set(scope, { token, until: Date.now() + Math.max(lifetime - TOKEN_SLACK_MS, 1000) });
    return token;
  }

  /**
   * One HTTP exchange, following redirects; credentials are sent only to the upstream's own origin, and a
   * redirect is followed only to http(s) destinations the upstream may send the cache to (see
   * destinationAllowed; host names are checked again once resolved).
   */
  private async send(
    method: string,
    url: URL,
    headers: Record<string, string>,
    redirects = 0,
  ): Promise<UpstreamResponse> {
    const res = await this.exchange(method, url, headers);
    if ([301, 302, 303, 307, 308].includes(res.status) && res.headers.location) {
      res.body.resume();
      if (redirects >= MAX_REDIRECTS)
        throw new UpstreamError(`${url.origin}: too many redirects`, "status", res.status);
      let next: URL;
      try {
        next = new URL(res.headers.location, url);
      } catch {
        throw new UpstreamError(`${url.origin} redirected to an invalid URL`, "redirect", res.status);
      }
      const refusal = redirectRefusal(this.upstreamClass, next);
      if (refusal !== null) {
        throw new UpstreamError(
          `${url.origin} redirected to ${refusal}, where the pull-through cache does not follow`,
          "redirect",
          res.status,
        );
      }
      const sameOrigin = next.origin === url.origin;
      const nextHeaders = { ...headers };
      if (!sameOrigin) delete nextHeaders.authorization;
      return this.send(method === "HEAD" ? "HEAD" : "GET", next, nextHeaders, redirects + 1);
    }
    return res;
  }

  private exchange(method: string, url: URL, headers: Record<string, string>): Promise<UpstreamResponse> {
    const secure = url.protocol === "https:";
    const sameOrigin = url.origin === this.base.origin;
    const agent = sameOrigin ? this.agent : undefined;
    if (!sameOrigin) {
      // A destination the upstream named (a redirect, its token realm): contained as its redirects are.
      const refusal = redirectRefusal(this.upstreamClass, url);
      if (refusal !== null) {
        return Promise.reject(
          new UpstreamError(
            `${this.describe()} sent the cache to ${refusal}, where it does not go`,
            "redirect",
          ),
        );
      }
    }
    return new Promise((resolve, reject) => {
      const req = (secure ? httpsModule() : http).request(
        url,
        {
          method,
          headers: { "user-agent": "berth-proxy", ...headers },
          agent,
          ca:
            !sameOrigin && secure && this.options.ca ? [...tls.rootCertificates, this.options.ca] : undefined,
          lookup: sameOrigin ? undefined : this.containedLookup(url.hostname),
        },
        (res) => {
          clearTimeout(timer);
          if (sameOrigin && res.socket.remoteAddress) {
            this.upstreamClass = addressClass(res.socket.remoteAddress);
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res });
        },
      );
      const timer = setTimeout(() => {
        req.destroy(
          new UpstreamError(`${url.origin} did not answer within ${this.options.timeoutMs} ms`, "timeout"),
        );
      }, this.options.timeoutMs);
      req.on("error", (err) => {
        clearTimeout(timer);
        reject(
          err instanceof UpstreamError
            ? err
            : new UpstreamError(
                `${url.origin} is unreachable: ${(err as NodeJS.ErrnoException).code ?? err.message}`,
                "unreachable",
              ),
        );
      });
      req.end();
    });
  }

  /** dns.lookup for a destination the upstream named: refuses addresses it may not send the cache to. */
  private containedLookup(hostname: string): net.LookupFunction {
    return (name, options, callback) => {
      dns.lookup(name, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
        if (err) return callback(err, "", 0);
        const refused = addresses.find(
          (a) => !destinationAllowed(this.upstreamClass, addressClass(a.address)),
        );
        if (refused || addresses.length === 0) {
          const why = refused ? `${hostname} resolves to ${refused.address}` : `${hostname} has no address`;
          return callback(
            new UpstreamError(
              `${this.describe()} sent the cache to ${why}, where it does not go`,
              "redirect",
            ),
            "",
            0,
          );
        }
        if (options.all)
          return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
        callback(null, addresses[0]!.address, addresses[0]!.family);
      });
    };
  }

  close(): void {
    this.agent.destroy();
  }
}

export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Reads a body of at most `limit` bytes (manifests, token answers). */
export async function readSmall(body: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      body.destroy();
      throw new UpstreamError(`an upstream answer was larger than ${limit} bytes`, "status");
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}
