/**
 * `berth serve` flags for ACME (issue 15): the same as http.tls.letsencrypt in the file. Kept here so
 * that serve.ts only hooks them in; this module loads nothing else.
 */
import type { Command } from "commander";

export interface AcmeFlags {
  acmeHost?: string[];
  acmeEmail?: string;
  acmeDirectory?: string;
  acmeHttpAddr?: string;
}

export const ACME_FLAG_NAMES: Record<string, string> = {
  "http.tls.letsencrypt.hosts": "--acme-host",
  "http.tls.letsencrypt.email": "--acme-email",
  "http.tls.letsencrypt.directoryurl": "--acme-directory",
  "http.tls.letsencrypt.httpaddr": "--acme-http-addr",
};

/** Commander option parser: repeated and comma-separated values into one list. */
export function collect(value: string, previous: string[] = []): string[] {
  return [
    ...previous,
    ...value
      .split(",")
      .map((v) => v.trim())
      .filter(Boolean),
  ];
}

export function addAcmeOptions(command: Command): Command {
  return command
    .option(
      "--acme-host <name>",
      "obtain and renew a certificate for this host name from an ACME CA, Let's Encrypt by default; repeat for more names (http.tls.letsencrypt.hosts, see docs/tls.md)",
      collect,
    )
    .option("--acme-email <address>", "contact address for the ACME account (http.tls.letsencrypt.email)")
    .option("--acme-directory <url>", "ACME directory URL (http.tls.letsencrypt.directoryurl)")
    .option(
      "--acme-http-addr <host:port>",
      'listener for HTTP-01 challenges and redirects to HTTPS, default ":80"; "" for none (http.tls.letsencrypt.httpaddr)',
    );
}

/** The http.tls.letsencrypt mapping the flags ask for, or undefined. */
export function acmeFlagsToConfig(flags: AcmeFlags): Record<string, unknown> | undefined {
  const le: Record<string, unknown> = {};
  if (flags.acmeHost?.length) le.hosts = flags.acmeHost;
  if (flags.acmeEmail) le.email = flags.acmeEmail;
  if (flags.acmeDirectory) le.directoryurl = flags.acmeDirectory;
  if (flags.acmeHttpAddr !== undefined) le.httpaddr = flags.acmeHttpAddr;
  return Object.keys(le).length ? le : undefined;
}
