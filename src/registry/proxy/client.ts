/**
 * The pull-through cache's outbound client: one per upstream registry. It speaks just enough of the
 * distribution API to pull (HEAD/GET of manifests and blobs) and does the upstream's authentication:
 * anonymous, Basic, and the Bearer token flow of Docker Hub and registry:2's `auth.token`
 * (WWW-Authenticate realm/service/scope, a token fetched with the credentials and kept until it expires).
 *
 * Credentials never leave this module in a message: errors name the upstream by its URL and status alone.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage } from "node:http";
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
    /** "unreachable", "timeout", "status" (an unexpected HTTP status), "auth", "ratelimited" */
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

  constructor(readonly options: UpstreamClientOptions) {
    this.base = new URL(options.remoteurl);
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
    if (this.options.username) headers.authorization = this.basic();
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

  /** One HTTP exchange, following redirects; credentials are sent only to the upstream's own origin. */
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
      const next = new URL(res.headers.location, url);
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
    return new Promise((resolve, reject) => {
      const req = (secure ? httpsModule() : http).request(
        url,
        {
          method,
          headers: { "user-agent": "berth-proxy", ...headers },
          agent,
          ca:
            !sameOrigin && secure && this.options.ca ? [...tls.rootCertificates, this.options.ca] : undefined,
        },
        (res) => {
          clearTimeout(timer);
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
