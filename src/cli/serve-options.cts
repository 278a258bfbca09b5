/**
 * serve's options, declared once. Commander's `berth serve` (src/cli/commands.ts) is built from this list,
 * and the `berth` entry (src/cli/berth.cts) reads a plain serve command line by it without loading
 * commander. Plain data in CommonJS, so that the entry can require it for next to nothing.
 */
export interface ServeOption {
  /** Commander's form: "-c, --config <file>"; a `<value>` makes it an option that takes one. */
  flags: string;
  description: string;
  /** Repeated and comma-separated values collect into one list (tls-flags.ts `collect`). */
  list?: true;
}

export const SERVE_OPTIONS: readonly ServeOption[] = [
  { flags: "--addr <host:port>", description: "address to listen on (http.addr)" },
  {
    flags: "--data-dir <dir>",
    description:
      "where blobs and the database live (storage.filesystem.rootdirectory); with storage.s3, the database and scratch only",
  },
  {
    flags: "-c, --config <file>",
    description: "YAML configuration file (default /etc/berth/config.yml when present)",
  },
  { flags: "--workers <n>", description: "worker processes; 0 means one per core (http.workers)" },
  {
    flags: "--read-only",
    description: "refuse pushes and deletes, keep serving pulls (storage.maintenance.readonly)",
  },
  {
    flags: "--tls-cert <file>",
    description: "PEM certificate chain; serves HTTPS with HTTP/1.1 and HTTP/2 (http.tls.certificate)",
  },
  { flags: "--tls-key <file>", description: "PEM private key (http.tls.key)" },
  { flags: "--log-level <level>", description: "trace, debug, info, warn or error (log.level)" },
  // [tls, issue 15] the same as http.tls.letsencrypt in the file (tls-flags.ts maps them).
  {
    flags: "--acme-host <name>",
    description:
      "obtain and renew a certificate for this host name from an ACME CA, Let's Encrypt by default; repeat for more names (http.tls.letsencrypt.hosts, see docs/tls.md)",
    list: true,
  },
  {
    flags: "--acme-email <address>",
    description: "contact address for the ACME account (http.tls.letsencrypt.email)",
  },
  { flags: "--acme-directory <url>", description: "ACME directory URL (http.tls.letsencrypt.directoryurl)" },
  {
    flags: "--acme-http-addr <host:port>",
    description:
      'listener for HTTP-01 challenges and redirects to HTTPS, default ":80"; "" for none (http.tls.letsencrypt.httpaddr)',
  },
];

/** The names of an option ("-c", "--config") and whether it takes a value. */
export function optionNames(option: ServeOption): { names: string[]; value: boolean } {
  const [names = "", value] = option.flags.split(" <");
  return { names: names.split(",").map((n) => n.trim()), value: value !== undefined };
}
