/**
 * `berth serve` flags for ACME (issue 15): the same as http.tls.letsencrypt in the file (declared with
 * serve's other options in serve-options.cts). This module loads nothing else.
 */
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

/** The http.tls.letsencrypt mapping the flags ask for, or undefined. */
export function acmeFlagsToConfig(flags: AcmeFlags): Record<string, unknown> | undefined {
  const le: Record<string, unknown> = {};
  if (flags.acmeHost?.length) le.hosts = flags.acmeHost;
  if (flags.acmeEmail) le.email = flags.acmeEmail;
  if (flags.acmeDirectory) le.directoryurl = flags.acmeDirectory;
  if (flags.acmeHttpAddr !== undefined) le.httpaddr = flags.acmeHttpAddr;
  return Object.keys(le).length ? le : undefined;
}
