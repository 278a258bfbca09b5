import type { FastifyInstance } from "fastify";
import type { AppContext } from "../context.js";

/** The Docker token endpoint (/auth/token). Owned by the users-and-permissions work. */
export async function registerTokenRoutes(_app: FastifyInstance, _ctx: AppContext): Promise<void> {}
