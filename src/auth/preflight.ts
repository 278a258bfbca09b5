import type { Config } from "../config/schema.js";
import { AuthService } from "./service.js";
import { generateSigningKeyPem, signingKeyFromPem } from "./token.js";

/**
 * Checks the authentication set-up once, before any worker starts: the htpasswd file is readable
 * and holds only bcrypt hashes, the rule patterns compile, and the operator's token signing key file
 * parses. A generated key lives in the metadata database (src/cli/token-key.ts), which is not open yet:
 * a throwaway key stands in for it here. Throws with a message that names the file and line at fault.
 */
export function checkAuth(config: Config, dataDir: string): void {
  const token = config.auth.token;
  const stand = token && !token.signingkey && !token.rootcertbundle;
  const signingKey = stand ? signingKeyFromPem(generateSigningKeyPem(), "check only") : undefined;
  new AuthService({ config, dataDir, watch: false, signingKey }).close();
}
