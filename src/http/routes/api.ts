import type { FastifyInstance } from "fastify";
import type { AppContext } from "../context.js";

/** Berth's own JSON API for the web UI. Owned by the web UI work. */
export async function registerApiRoutes(_app: FastifyInstance, _ctx: AppContext): Promise<void> {}
