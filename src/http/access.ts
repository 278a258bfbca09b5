import type { FastifyRequest } from "fastify";
import type { AccessRequest } from "../auth/types.js";

/**
 * The v2 routes call this before acting. With auth off, everything is allowed.
 * (The users-and-permissions work replaces the body: authenticate, authorize, or throw
 * RegistryError UNAUTHORIZED/DENIED with the right WWW-Authenticate challenge in `headers`.)
 */
export async function requireAccess(_request: FastifyRequest, _needs: AccessRequest[]): Promise<void> {}

/** Whether the caller may pull `repository` (catalog filtering, mount without `from`). */
export function canPull(_request: FastifyRequest, _repository: string): boolean {
  return true;
}
