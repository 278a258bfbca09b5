import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { safeEqual } from "../../auth/credentials.js";
import { basicChallenge, formatScope, parseScopes } from "../../auth/scope.js";
import { type AuthService, parseBasic, passwordFingerprint } from "../../auth/service.js";
import { TokenError } from "../../auth/token.js";
import { prefixOf } from "../urls.js";
import type { AccessRequest } from "../../auth/types.js";
import { authServiceFor, clientAddress } from "../access.js";
import type { AppContext } from "../context.js";

type Caller =
  | { ok: true; subject: string | null; hash?: string }
  | { ok: false; status: number; message: string; headers?: Record<string, string> };

function sendError(reply: FastifyReply, status: number, code: string, message: string, oauthError?: string) {
  const body: Record<string, unknown> = { errors: [{ code, message }] };
  // docker's client reads `details` on a 401 from a token server; OAuth2 clients read `error`.
  if (status === 401) body.details = message;
  if (oauthError) {
    body.error = oauthError;
    body.error_description = message;
  }
  return reply.code(status).header("Cache-Control", "no-store").send(body);
}

async function callerFromHeader(service: AuthService, request: FastifyRequest): Promise<Caller> {
  const header = request.headers.authorization;
  if (!header) return { ok: true, subject: null };
  const space = header.indexOf(" ");
  const scheme = header.slice(0, space < 0 ? header.length : space).toLowerCase();
  const creds = scheme === "basic" ? parseBasic(header.slice(space + 1).trim()) : null;
  if (!creds) return { ok: false, status: 401, message: "the token endpoint takes Basic credentials" };
  if (creds.user === "" && creds.password === "") return { ok: true, subject: null };
  return checkPassword(
    service,
    creds.user,
    creds.password,
    clientAddress(request, service.config.http.trustedproxies),
  );
}

async function checkPassword(
  service: AuthService,
  user: string,
  password: string,
  client: string,
): Promise<Caller> {
  const result = await service.checkPassword(user, password, client);
  if (result.ok) return { ok: true, subject: result.user, hash: result.hash };
  if (result.reason === "throttled") {
    return {
      ok: false,
      status: 429,
      message: "too many failed logins; retry later",
      headers: { "Retry-After": String(Math.max(1, Math.ceil(result.retryAfterMs / 1000))) },
    };
  }
  return { ok: false, status: 401, message: "incorrect username or password" };
}

function refuse(
  service: AuthService,
  reply: FastifyReply,
  caller: Extract<Caller, { ok: false }>,
  oauth: boolean,
) {
  for (const [k, v] of Object.entries(caller.headers ?? {})) reply.header(k, v);
  if (caller.status === 401 && !oauth) reply.header("WWW-Authenticate", basicChallenge(service.basicRealm));
  const code = caller.status === 429 ? "TOOMANYREQUESTS" : "UNAUTHORIZED";
  return sendError(reply, caller.status, code, caller.message, oauth ? "invalid_grant" : undefined);
}

/** Normalises a form body, whichever parser produced it. */
function formOf(body: unknown): URLSearchParams {
  if (body instanceof URLSearchParams) return body;
  if (typeof body === "string") return new URLSearchParams(body);
  if (Buffer.isBuffer(body)) return new URLSearchParams(body.toString("utf8"));
  const params = new URLSearchParams();
  if (body && typeof body === "object") {
    for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
      if (typeof v === "string") params.append(k, v);
      else if (Array.isArray(v)) for (const item of v) params.append(k, String(item));
    }
  }
  return params;
}

function asList(value: unknown): string[] {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value.map(String) : [String(value)];
}

/**
 * The Docker token endpoint (/auth/token), per the Docker token specification: GET with Basic
 * credentials (or none, for an anonymous token), `offline_token=true` for a refresh token, and the
 * OAuth2 POST form (grant_type=password or refresh_token). The `access` claim of every token holds
 * only what the caller may really do; asking for more is not an error, it is just not granted.
 */
export async function registerTokenRoutes(app: FastifyInstance, ctx: AppContext): Promise<void> {
  const service = authServiceFor(ctx);

  const endpoint = async (scope: FastifyInstance) => {
    if (!scope.hasContentTypeParser("application/x-www-form-urlencoded")) {
      scope.addContentTypeParser(
        "application/x-www-form-urlencoded",
        { parseAs: "string", bodyLimit: 64 * 1024 },
        (_request, body, done) => done(null, new URLSearchParams(body as string)),
      );
    }

    const issuing = (reply: FastifyReply): boolean => {
      if (service.tokens?.issues) return true;
      void sendError(reply, 404, "UNSUPPORTED", "this registry does not issue tokens");
      return false;
    };
    const serviceMatches = (reply: FastifyReply, requested: string | undefined | null): boolean => {
      if (!requested || requested === service.tokens!.service) return true;
      void sendError(reply, 400, "UNSUPPORTED", `unknown service "${requested}"`, "invalid_request");
      return false;
    };
    const issue = async (subject: string | null, scopes: AccessRequest[]) => {
      const access = service.grant(subject, scopes);
      const issued = await service.tokens!.issueAccess(subject, access);
      return { access, issued };
    };

    scope.get("/auth/token", async (request, reply) => {
      if (!issuing(reply)) return reply;
      const query = (request.query ?? {}) as Record<string, unknown>;
      const requestedService = asList(query.service)[0];
      if (!serviceMatches(reply, requestedService)) return reply;
      const caller = await callerFromHeader(service, request);
      if (!caller.ok) return refuse(service, reply, caller, false);
      const { issued } = await issue(caller.subject, parseScopes(asList(query.scope)));
      const body: Record<string, unknown> = {
        token: issued.token,
        access_token: issued.token,
        expires_in: issued.expiresIn,
        issued_at: issued.issuedAt,
      };
      if (asList(query.offline_token)[0] === "true" && caller.subject !== null && caller.hash) {
        body.refresh_token = await service.tokens!.issueRefresh(
          caller.subject,
          passwordFingerprint(caller.hash),
        );
      }
      return reply.header("Cache-Control", "no-store").send(body);
    });

    scope.post("/auth/token", async (request, reply) => {
      if (!issuing(reply)) return reply;
      const form = formOf(request.body);
      if (!serviceMatches(reply, form.get("service"))) return reply;
      const grantType = form.get("grant_type");
      let caller: Caller;
      if (grantType === "password") {
        const username = form.get("username") ?? "";
        const password = form.get("password") ?? "";
        if (username === "")
          return sendError(reply, 400, "UNSUPPORTED", "username is required", "invalid_request");
        caller = await checkPassword(
          service,
          username,
          password,
          clientAddress(request, service.config.http.trustedproxies),
        );
      } else if (grantType === "refresh_token") {
        caller = await fromRefreshToken(service, form.get("refresh_token") ?? "");
      } else {
        return sendError(
          reply,
          400,
          "UNSUPPORTED",
          "grant_type must be password or refresh_token",
          "unsupported_grant_type",
        );
      }
      if (!caller.ok) return refuse(service, reply, caller, true);
      const scopes = parseScopes(form.getAll("scope"));
      const { access, issued } = await issue(caller.subject, scopes);
      const body: Record<string, unknown> = {
        access_token: issued.token,
        token: issued.token,
        scope: access.map(formatScope).join(" "),
        expires_in: issued.expiresIn,
        issued_at: issued.issuedAt,
      };
      if (
        grantType === "password" &&
        form.get("access_type") === "offline" &&
        caller.subject &&
        caller.hash
      ) {
        body.refresh_token = await service.tokens!.issueRefresh(
          caller.subject,
          passwordFingerprint(caller.hash),
        );
      }
      return reply.header("Cache-Control", "no-store").send(body);
    });
  };
  await app.register(endpoint);
  // With http.prefix the token realm is under the prefix too (a proxy may forward only that path).
  const prefix = prefixOf(ctx.config);
  if (prefix !== "") await app.register(endpoint, { prefix });
}

async function fromRefreshToken(service: AuthService, token: string): Promise<Caller> {
  const invalid: Caller = { ok: false, status: 401, message: "invalid refresh token" };
  if (token === "") return invalid;
  try {
    const { subject, passwordFingerprint: fingerprint } = await service.tokens!.verifyRefresh(token);
    const entry = service.htpasswd?.get(subject);
    // The refresh token dies with the user, or with the password it was issued for.
    if (!entry || !safeEqual(passwordFingerprint(entry.hash), fingerprint)) return invalid;
    return { ok: true, subject, hash: entry.hash };
  } catch (err) {
    if (err instanceof TokenError) return invalid;
    throw err;
  }
}
