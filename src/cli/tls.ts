/**
 * `berth tls init` and `berth tls trust`: a private CA for registries on a LAN (issue 15).
 * Loaded by src/cli/main.ts only when `berth tls` runs.
 */
import fs from "node:fs";
import net from "node:net";
import type { Command } from "commander";
import { loadConfig } from "../config/load.js";
import { type ConfigInput, dataDirOf } from "../config/schema.js";
import { parseDuration } from "../config/sections/core.js";
import { parseAddr } from "./serve.js";
import { collect } from "./tls-flags.js";

interface CommonFlags {
  config?: string;
  dataDir?: string;
  addr?: string;
}

function load(flags: CommonFlags) {
  const input: Record<string, unknown> = {};
  if (flags.dataDir) input.storage = { filesystem: { rootdirectory: flags.dataDir } };
  if (flags.addr) input.http = { addr: flags.addr };
  const { config } = loadConfig({ file: flags.config, flags: input as ConfigInput });
  return { config, dataDir: dataDirOf(config) };
}

function common(command: Command): Command {
  return command
    .option("-c, --config <file>", "YAML configuration file (default /etc/berth/config.yml when present)")
    .option("--data-dir <dir>", "the data directory (storage.filesystem.rootdirectory)")
    .option("--addr <host:port>", "the address Berth listens on, for its port (http.addr)");
}

export function registerTlsCommand(program: Command): void {
  const tls = program
    .command("tls")
    .description("a private certificate authority for HTTPS on a LAN (see docs/tls.md)");
  common(
    tls
      .command("init")
      .description(
        "create a CA and a server certificate signed by it in the data directory; `berth serve` then serves HTTPS with it " +
          "and renews it before it expires. An existing CA is kept (clients that trust it keep working).",
      )
      .option("--host <name>", "a DNS name of this server (repeat, or separate with commas)", collect)
      .option("--ip <address>", "an IP address of this server (repeat, or separate with commas)", collect)
      .option("--validity <duration>", "server certificate lifetime, such as 365d or 2160h", "365d")
      .option("--new-ca", "replace the CA too (every client must then trust the new one)"),
  ).action(
    async (flags: CommonFlags & { host?: string[]; ip?: string[]; validity: string; newCa?: boolean }) => {
      for (const ip of flags.ip ?? []) {
        if (!net.isIP(ip)) throw new Error(`--ip ${ip}: not an IP address`);
      }
      for (const host of flags.host ?? []) {
        if (net.isIP(host) || !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host)) {
          throw new Error(`--host ${host}: not a DNS name (use --ip for addresses)`);
        }
      }
      const validMs = parseDuration(flags.validity);
      if (!validMs || validMs < 10_000)
        throw new Error(`--validity ${flags.validity}: expected a duration of at least 10s`);
      const { dataDir } = load(flags);
      const { initPrivateCa } = await import("../http/private-ca.js");
      const result = await initPrivateCa(dataDir, [...(flags.host ?? []), ...(flags.ip ?? [])], {
        serverValidMs: validMs,
        newCa: flags.newCa,
      });
      const out = [
        result.createdCa
          ? `created a CA: ${result.paths.caCert}`
          : `kept the existing CA: ${result.paths.caCert}`,
        `issued a server certificate for ${result.names.join(", ")} (until ${new Date(result.notAfter).toISOString()}): ${result.paths.server}`,
        `CA fingerprint (SHA-256): ${result.fingerprint}`,
        "",
        "`berth serve` with this data directory serves HTTPS with it from its next start: a server already",
        "running keeps plain HTTP until it is restarted. Make clients trust the CA:",
        `  berth tls trust${flags.dataDir ? ` --data-dir ${flags.dataDir}` : ""}`,
        "",
      ];
      process.stdout.write(out.join("\n"));
    },
  );
  common(
    tls
      .command("trust")
      .description(
        "print the commands that make docker, podman, containerd and the system trust store trust the CA, with its fingerprint",
      ),
  ).action(async (flags: CommonFlags) => {
    const { config, dataDir } = load(flags);
    const { privateCaPaths, serverCertInfo } = await import("../http/private-ca.js");
    const { fingerprint } = await import("../http/tls-certs.js");
    const paths = privateCaPaths(dataDir);
    if (!fs.existsSync(paths.caCert) || !fs.existsSync(paths.server)) {
      throw new Error(
        `no private CA in ${dataDir}: run \`berth tls init --host <name> --ip <address>\` first`,
      );
    }
    const { port } = parseAddr(config.http.addr);
    const names = serverCertInfo(dataDir).names;
    process.stdout.write(
      trustInstructions({
        caFile: paths.caCert,
        fingerprint: fingerprint(fs.readFileSync(paths.caCert, "utf8")),
        names,
        port,
        system: systemStore(),
      }),
    );
  });
}

type SystemStore = "debian" | "redhat" | "unknown";

/** Which tool maintains this host's trust store. */
function systemStore(): SystemStore {
  const has = (p: string) => fs.existsSync(p);
  if (has("/usr/sbin/update-ca-certificates") || has("/etc/debian_version")) return "debian";
  if (has("/usr/bin/update-ca-trust") || has("/etc/redhat-release")) return "redhat";
  return "unknown";
}

/** A name as it appears in a registry reference and in certs.d: [v6], and no port for 443. */
function hostPort(name: string, port: number): string {
  const host = net.isIPv6(name) ? `[${name}]` : name;
  return port === 443 ? host : `${host}:${port}`;
}

export function trustInstructions(input: {
  caFile: string;
  fingerprint: string;
  names: string[];
  port: number;
  system: SystemStore;
}): string {
  const { caFile, fingerprint, names, port } = input;
  const registries = names.map((n) => hostPort(n, port));
  const first = registries[0]!;
  const list = registries.join(" ");
  const lines = [
    `# Berth's private CA: ${caFile}`,
    `# SHA-256 fingerprint: ${fingerprint}`,
    `# Registry addresses in its certificate: ${list}`,
    "",
    "# On another machine, fetch the CA from Berth and compare its fingerprint with the one above:",
    `curl -fsSk https://${first}/ca.crt -o berth-ca.crt`,
    "openssl x509 -in berth-ca.crt -noout -fingerprint -sha256",
    `# (On this machine the CA is ${caFile}; the commands below use berth-ca.crt.)`,
    `cp ${caFile} berth-ca.crt`,
    "",
    "# Docker (read at each pull and push, no restart):",
    `for r in ${list}; do sudo mkdir -p /etc/docker/certs.d/$r && sudo cp berth-ca.crt /etc/docker/certs.d/$r/ca.crt; done`,
    "",
    "# Podman, Buildah, Skopeo, CRI-O:",
    `for r in ${list}; do sudo mkdir -p /etc/containers/certs.d/$r && sudo cp berth-ca.crt /etc/containers/certs.d/$r/ca.crt; done`,
    "",
    "# containerd (and nerdctl, k3s, Kubernetes nodes): a hosts.toml per registry.",
    '# CRI needs config_path = "/etc/containerd/certs.d" under [plugins."io.containerd.grpc.v1.cri".registry]',
    "# in /etc/containerd/config.toml; ctr needs --hosts-dir /etc/containerd/certs.d.",
    `for r in ${list}; do`,
    "  sudo mkdir -p /etc/containerd/certs.d/$r",
    "  sudo cp berth-ca.crt /etc/containerd/certs.d/$r/ca.crt",
    `  printf 'server = "https://%s"\\n\\n[host."https://%s"]\\n  capabilities = ["pull", "resolve", "push"]\\n  ca = "/etc/containerd/certs.d/%s/ca.crt"\\n' "$r" "$r" "$r" | sudo tee /etc/containerd/certs.d/$r/hosts.toml >/dev/null`,
    "done",
    "",
  ];
  const debian = [
    "sudo cp berth-ca.crt /usr/local/share/ca-certificates/berth-ca.crt",
    "sudo update-ca-certificates",
  ];
  const redhat = [
    "sudo cp berth-ca.crt /etc/pki/ca-trust/source/anchors/berth-ca.crt",
    "sudo update-ca-trust",
  ];
  lines.push(
    "# The system trust store (curl, Go programs, and Docker's daemon when it has no certs.d entry):",
  );
  if (input.system === "redhat") {
    lines.push(...redhat, "# (Debian/Ubuntu: /usr/local/share/ca-certificates/ and update-ca-certificates)");
  } else {
    lines.push(...debian, "# (Fedora/RHEL: /etc/pki/ca-trust/source/anchors/ and update-ca-trust)");
  }
  lines.push("");
  return lines.join("\n");
}
