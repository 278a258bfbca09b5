import type { FastifyInstance } from "fastify";
import type { AppContext } from "../context.js";

/** Serves the built web UI at `/`. Owned by the web UI work. */
export async function registerUiRoutes(_app: FastifyInstance, _ctx: AppContext): Promise<void> {}
