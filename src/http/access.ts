import type { FastifyInstance, FastifyRequest } from "fastify";
import { basicChallenge, bearerChallenge } from "../auth/scope.js";
import { type AuthOutcome, AuthService } from "../auth/service.js";
import { type AccessRequest, ANONYMOUS, type Identity } from "../auth/types.js";
import { RegistryError } from "../registry/errors.js";
import { isValidName } from "../registry/names.js";
import type { AppContext } from "./context.js";
import { externalBase, isTrustedProxy } from "./urls.js";

declare module "fastify" {
  interface FastifyInstance {
    /** Set by registerAuth; absent means authentication is not wired (everything allowed). */
    berthAuth?: AuthService;
  }
}

/** Pino redaction paths that keep credentials out of logs, whatever a serializer includes. */
export const LOG_REDACT_PATHS = [
  "req.headers.authorization",
  "req.headers.cookie",
  "req.headers['proxy-authorization']",
  "headers.authorization",
  "headers.cookie",
  "res.headers['set-cookie']",
];

const services = new WeakMap<AppContext, AuthService>();
const outcomes = new WeakMap<FastifyRequest, AuthOutcome | Promise<AuthOutcome>>();

/**
 * The AuthService of an application context, created on first use (reads the htpasswd file and the
 * token key; throws a start-up error when they are unusable). The token routes and the access hook
 * share it.
 */
export function authServiceFor(ctx: AppContext): AuthService {
  let service = services.get(ctx);
  if (!service) {
    service = new AuthService({
      config: ctx.config,
      dataDir: ctx.dataDir,
      log: ctx.log,
      signingKey: ctx.tokenKey,
    });
    services.set(ctx, service);
  }
  return service;
}

/**
 * Wires authentication into an app: call on the root instance before the routes are registered.
 * It decorates the instance with the AuthService and adds an onRequest hook that works out who the
 * caller is once per request (so that canPull can answer synchronously); nothing is refused there:
 * requireAccess refuses.
 */
export async function registerAuth(app: FastifyInstance, ctx: AppContext): Promise<void> {
  const service = authServiceFor(ctx);
  if (!app.hasDecorator("berthAuth")) app.decorate("berthAuth", service);
  app.addHook("onRequest", async (request) => {
    if (!service.enabled) return;
    outcomes.set(request, await outcomeOf(service, request));
  });
  app.addHook("onClose", async () => service.close());
}

/**
 * The address failed logins are counted against: the peer, or, when the peer is one of
 * `http.trustedproxies`, the last address in X-Forwarded-For that is not a trusted proxy (so that
 * clients behind nginx are not all one client, and a client cannot choose its own key).
 */
export function clientAddress(request: FastifyRequest, trusted: readonly string[]): string {
  let address = request.raw.socket?.remoteAddress ?? "unknown";
  if (!isTrustedProxy(address, trusted)) return address;
  const header = request.headers["x-forwarded-for"];
  const hops = (Array.isArray(header) ? header.join(",") : (header ?? ""))
    .split(",")
    .map((h) => h.trim())
    .filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i--) {
    address = hops[i]!;
    if (!isTrustedProxy(address, trusted)) break;
  }
  return address;
}

function outcomeOf(service: AuthService, request: FastifyRequest): Promise<AuthOutcome> | AuthOutcome {
  const authorization = request.headers.authorization;
  if (!authorization) return { kind: "ok", identity: ANONYMOUS };
  let pending = outcomes.get(request);
  if (!pending) {
    pending = service
      .authenticate(authorization, clientAddress(request, service.config.http.trustedproxies))
      .then((outcome) => {
        outcomes.set(request, outcome);
        return outcome;
      });
    outcomes.set(request, pending);
  }
  return pending;
}

function serviceOf(request: FastifyRequest): AuthService | undefined {
  return request.server.berthAuth;
}

/** The caller's identity, once the onRequest hook has run; undefined with auth off or bad credentials. */
export function getIdentity(request: FastifyRequest): Identity | undefined {
  const outcome = outcomes.get(request);
  if (!outcome || outcome instanceof Promise) return serviceOf(request)?.enabled ? ANONYMOUS : undefined;
  return outcome.kind === "ok" ? outcome.identity : undefined;
}

/**
 * The v2 routes call this before acting. It authenticates (once per request), authorizes, or throws
 * RegistryError UNAUTHORIZED (401 with a Basic or Bearer challenge naming the scopes needed),
 * DENIED (403) or TOOMANYREQUESTS (429 with Retry-After, while failed logins are being slowed down).
 * An empty `needs` asks only for an authenticated caller (GET /v2/).
 */
export async function requireAccess(request: FastifyRequest, needs: AccessRequest[]): Promise<void> {
  const service = serviceOf(request);
  if (!service?.enabled) return;
  const outcome = await outcomeOf(service, request);
  const decision = service.decide(outcome, needs);
  switch (decision.kind) {
    case "allow":
      return;
    case "throttled": {
      const seconds = Math.max(1, Math.ceil(decision.retryAfterMs / 1000));
      throw new RegistryError("TOOMANYREQUESTS", "too many failed logins; retry later", undefined, {
        "Retry-After": String(seconds),
      });
    }
    case "denied":
      throw new RegistryError("DENIED", decision.message, needsDetail(needs));
    case "unauthenticated": {
      const challenge =
        service.mode === "token" && service.tokens
          ? bearerChallenge({
              realm: service.tokenRealm(externalBase(request, service.config)),
              service: service.tokens.service,
              scopes: challengeScopes(request, needs),
              error: decision.error,
            })
          : basicChallenge(service.basicRealm);
      throw new RegistryError("UNAUTHORIZED", decision.message, needsDetail(needs), {
        "WWW-Authenticate": challenge,
      });
    }
  }
}

/**
 * The scopes a Bearer challenge names: what the request needs, plus pull on the source repository
 * of a cross-repository mount (`POST .../blobs/uploads/?mount=&from=`), so that the client asks for
 * one token that allows the mount; without that pull the registry falls back to a plain upload.
 */
function challengeScopes(request: FastifyRequest, needs: AccessRequest[]): AccessRequest[] {
  if (request.method !== "POST") return needs;
  const query = (request.query ?? {}) as Record<string, unknown>;
  const from = Array.isArray(query.from) ? query.from[0] : query.from;
  if (typeof query.mount !== "string" || typeof from !== "string" || !isValidName(from)) return needs;
  if (needs.some((n) => n.type === "repository" && n.name === from)) return needs;
  return [...needs, { type: "repository", name: from, actions: ["pull"] }];
}

function needsDetail(needs: AccessRequest[]): unknown {
  if (needs.length === 0) return undefined;
  return needs.flatMap((n) => n.actions.map((action) => ({ Type: n.type, Name: n.name, Action: action })));
}

/**
 * Refuses everyone but administrators when authentication is on (401 without credentials, 403 for a
 * known user who is not one); `also` names the users allowed beside them. With auth off everyone passes.
 */
export async function requireAdmin(
  request: FastifyRequest,
  message: string,
  also: readonly string[] = [],
): Promise<void> {
  await requireAccess(request, []);
  if (!serviceOf(request)?.enabled) return;
  const identity = getIdentity(request);
  if (identity?.admin) return;
  if (identity?.subject && also.includes(identity.subject)) return;
  throw new RegistryError("DENIED", message);
}

/**
 * Whether the caller proved who it is: always with authentication off (everyone is trusted, as in
 * registry:2); with it on, a caller whose credentials named a user. Anonymous callers, anonymous tokens
 * and refused credentials are strangers.
 */
export function knownCaller(request: FastifyRequest): boolean {
  const service = serviceOf(request);
  if (!service?.enabled) return true;
  const outcome = outcomes.get(request);
  if (!outcome || outcome instanceof Promise || outcome.kind !== "ok") return false;
  return outcome.identity.subject !== null;
}

/** Whether the caller may pull `repository` (mounts, with or without `from`; browsing). */
export function canPull(request: FastifyRequest, repository: string): boolean {
  return may(request, repository, "pull");
}

/** Whether `repository` shows in the caller's catalog (catalog access lists names, never grants pull). */
export function canList(request: FastifyRequest, repository: string): boolean {
  return may(request, repository, "list");
}

/** Whether the caller may pull every repository (registry-wide figures such as usage totals). */
export function pullsEverything(request: FastifyRequest): boolean {
  const service = serviceOf(request);
  if (!service?.enabled) return true;
  const outcome = outcomes.get(request);
  const settled = outcome instanceof Promise ? undefined : outcome;
  if (!settled && request.headers.authorization) return false;
  return service.pullsEverything(settled ?? { kind: "ok", identity: ANONYMOUS });
}

function may(request: FastifyRequest, repository: string, what: "pull" | "list"): boolean {
  const service = serviceOf(request);
  if (!service?.enabled) return true;
  const outcome = outcomes.get(request);
  const settled = outcome instanceof Promise ? undefined : outcome;
  if (!settled && request.headers.authorization) return false;
  const caller = settled ?? { kind: "ok" as const, identity: ANONYMOUS };
  return what === "pull" ? service.canPull(caller, repository) : service.canList(caller, repository);
}
