import net from "node:net";
import type { z } from "zod";
import type { letsencryptSection } from "./core.js";

type TlsConfig = {
  http: {
    host?: string;
    tls: {
      certificate?: string;
      key?: string;
      letsencrypt?: z.infer<typeof letsencryptSection>;
    };
  };
};

/** The host names to order a certificate for: hosts, else the host of http.host. */
export function acmeHosts(config: TlsConfig): string[] {
  const le = config.http.tls.letsencrypt;
  if (!le) return [];
  if (le.hosts.length > 0) return [...new Set(le.hosts.map((h) => h.toLowerCase()))];
  try {
    return config.http.host ? [new URL(config.http.host).hostname.toLowerCase()] : [];
  } catch {
    return [];
  }
}

/** Problems with http.tls.letsencrypt that its types cannot say. */
export function tlsProblems(config: TlsConfig): string[] {
  const le = config.http.tls.letsencrypt;
  if (!le) return [];
  const problems: string[] = [];
  if (config.http.tls.certificate || config.http.tls.key) {
    problems.push(
      "http.tls.letsencrypt: set either http.tls.certificate and http.tls.key or http.tls.letsencrypt, not both",
    );
  }
  const hosts = acmeHosts(config);
  if (hosts.length === 0) {
    problems.push(
      "http.tls.letsencrypt.hosts: name the host names to obtain a certificate for (or set http.host)",
    );
  }
  for (const host of hosts) {
    if (
      net.isIP(host) ||
      host.includes("*") ||
      !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(host)
    ) {
      problems.push(
        `http.tls.letsencrypt.hosts: "${host}" is not a host name an ACME CA can validate by HTTP-01 or TLS-ALPN-01 (no addresses, no wildcards)`,
      );
    }
  }
  let url: URL | undefined;
  try {
    url = new URL(le.directoryurl);
  } catch {}
  if (url?.protocol !== "https:") {
    problems.push(`http.tls.letsencrypt.directoryurl: expected an https URL, got "${le.directoryurl}"`);
  }
  if (le.httpaddr !== "" && !/^(?:\[[^\]]+\]|[^:]*):\d{1,5}$/.test(le.httpaddr)) {
    problems.push(
      `http.tls.letsencrypt.httpaddr: expected host:port such as ":80", or "" for no HTTP listener, got "${le.httpaddr}"`,
    );
  }
  if (le.challenges.length === 0)
    problems.push("http.tls.letsencrypt.challenges: name at least one challenge");
  if (le.email !== undefined && !/^[^@\s]+@[^@\s]+$/.test(le.email)) {
    problems.push(`http.tls.letsencrypt.email: expected an e-mail address, got "${le.email}"`);
  }
  return problems;
}
