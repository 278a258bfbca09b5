import type { FastifyInstance, FastifyRequest } from "fastify";
import { parseDuration } from "../../config/duration.js";
import { RegistryError } from "../../registry/errors.js";
import { eventsStatus, type RedeliverFrom, redeliver } from "../../registry/event-status.js";
import { requireAdmin } from "../access.js";
import { readJsonBody } from "../bodies.js";
import type { AppContext } from "../context.js";

/**
 * /api/v1/events (issue 14, docs/api.md): each notification endpoint's state, backlog and recent
 * deliveries, and redelivery. Administrators only (when authentication is on): endpoint URLs and
 * delivery errors describe the operator's infrastructure.
 */

function requireEventsAdmin(request: FastifyRequest): Promise<void> {
  return requireAdmin(request, "only administrators may see and redeliver notifications");
}

function badRequest(message: string): RegistryError {
  return new RegistryError("UNSUPPORTED", message, undefined, {}, 400);
}

function stringParam(q: Record<string, unknown>, key: string): string | undefined {
  const v = q[key];
  const s = Array.isArray(v) ? v[0] : v;
  return typeof s === "string" && s !== "" ? s : undefined;
}

export async function registerEventRoutes(app: FastifyInstance, ctx: AppContext): Promise<void> {
  const outbox = ctx.metadata.events;
  await app.register(async (api) => {
    api.addHook("onSend", async (_request, reply, payload) => {
      reply.header("cache-control", "no-store");
      return payload;
    });

    api.get("/api/v1/events", async (request) => {
      await requireEventsAdmin(request);
      const q = (request.query ?? {}) as Record<string, unknown>;
      const rawLimit = stringParam(q, "limit");
      const limit = rawLimit === undefined ? 20 : Number(rawLimit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
        throw new RegistryError("PAGINATION_NUMBER_INVALID", "limit must be an integer from 1 to 1000", {
          limit: rawLimit,
        });
      }
      return eventsStatus(outbox, ctx.config, {
        limit,
        endpoint: stringParam(q, "endpoint"),
        failuresOnly: stringParam(q, "failures") === "true",
      });
    });

    api.post("/api/v1/events/redeliver", async (request) => {
      await requireEventsAdmin(request);
      const parsed = await readJsonBody(request);
      const body = (parsed && typeof parsed === "object" ? parsed : {}) as Record<string, unknown>;
      const endpoint = typeof body.endpoint === "string" ? body.endpoint : "";
      let from: RedeliverFrom;
      if (body.all === true) from = { all: true };
      else if (typeof body.event === "string" || typeof body.event === "number")
        from = { event: String(body.event) };
      else if (typeof body.since === "string") {
        const at = Date.parse(body.since);
        const ago = parseDuration(body.since);
        if (Number.isNaN(at) && ago === null) {
          throw badRequest('since: expected a time (ISO 8601) or a duration such as "1h"');
        }
        from = { since: Number.isNaN(at) ? Date.now() - (ago as number) : at };
      } else {
        throw badRequest('give "event" (an id), "since" (a time or duration) or "all": true');
      }
      return redeliver(outbox, ctx.config, endpoint, from);
    });
  });
}
