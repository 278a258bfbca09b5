import type { Config } from "../config/schema.js";
import { AuthService } from "./service.js";

/**
 * Checks the authentication set-up once, before any worker starts: the htpasswd file is readable
 * and holds only bcrypt hashes, the rule patterns compile, and the token signing key exists (it is
 * generated here on first start, so that workers only read it). Throws with a message that names
 * the file and line at fault.
 */
export function checkAuth(config: Config, dataDir: string): void {
  new AuthService({ config, dataDir, watch: false }).close();
}
