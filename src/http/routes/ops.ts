import type { FastifyInstance } from "fastify";
import type { AppContext } from "../context.js";

/** /healthz, /readyz, /metrics, configured http.headers and CORS. Owned by the operations work. */
export async function registerOpsRoutes(_app: FastifyInstance, _ctx: AppContext): Promise<void> {}
