/**
 * Pure formatting helpers for the web UI (no DOM): sizes, dates, digests, platforms and media types.
 * Kept free of browser globals so that unit tests can run them under Node.
 */

// Sizes: one function for the UI and the CLI (src/cli/format-bytes.ts), so both count in decimal units.
export { formatBytes } from "../../../src/cli/format-bytes.ts";

/** "1,234,567 bytes": the exact figure, for tooltips. */
export function formatBytesExact(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return "";
  const grouped = Math.round(bytes)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${grouped} ${bytes === 1 ? "byte" : "bytes"}`;
}

/** A count with thousands separators: 10000 → "10,000". */
export function formatCount(n: number): string {
  return Math.round(n)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** Share of a whole as a percentage string: 0.1234 → "12%", tiny non-zero shares → "<1%". */
export function formatPercent(part: number, whole: number): string {
  if (!(whole > 0) || !(part >= 0)) return "0%";
  const pct = (part / whole) * 100;
  if (pct > 0 && pct < 1) return "<1%";
  return `${Math.round(pct)}%`;
}

/** Accepts epoch milliseconds or an RFC 3339 string (image configs); null when absent or unparsable. */
export function toMillis(value: number | string | null | undefined): number | null {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

/**
 * Reproducible builds (ko, Bazel, SOURCE_DATE_EPOCH=0, Nix) stamp images with the epoch or with
 * a fixed date long ago. Such a date says nothing about when the image was made.
 */
export function isMeaningfulDate(ms: number | null): ms is number {
  return ms !== null && ms > Date.UTC(1980, 0, 2);
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function plural(n: number, unit: string): string {
  return `${n} ${unit}${n === 1 ? "" : "s"} ago`;
}

/**
 * A short relative date: "just now", "5 minutes ago", "3 hours ago", "yesterday", "12 days ago",
 * then a calendar date ("14 Mar", or "14 Mar 2023" in another year). Times are shown in UTC
 * so that everyone on a team reads the same text.
 */
export function formatRelative(value: number | string | null | undefined, now: number = Date.now()): string {
  const ms = toMillis(value);
  if (!isMeaningfulDate(ms)) return "—";
  const seconds = Math.floor((now - ms) / 1000);
  if (seconds < 45) return "just now";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return plural(Math.max(1, minutes), "minute");
  const hours = Math.round(seconds / 3600);
  if (hours < 24) return plural(hours, "hour");
  const days = Math.floor(seconds / 86400);
  if (days === 1) return "yesterday";
  if (days < 30) return plural(days, "day");
  const d = new Date(ms);
  const sameYear = d.getUTCFullYear() === new Date(now).getUTCFullYear();
  return `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]}${sameYear ? "" : ` ${d.getUTCFullYear()}`}`;
}

/** The exact time, for tooltips and detail pages: "2024-03-14 09:26:53 UTC". */
export function formatAbsolute(value: number | string | null | undefined): string {
  const ms = toMillis(value);
  if (ms === null) return "";
  return `${new Date(ms).toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

/** Like formatAbsolute, but says so when the date was fixed by a reproducible build. */
export function formatCreated(value: number | string | null | undefined): string {
  const ms = toMillis(value);
  if (ms === null) return "—";
  if (!isMeaningfulDate(ms)) return `${formatAbsolute(ms)} (fixed by a reproducible build)`;
  return formatAbsolute(ms);
}

/** "sha256:9f86d081884c7d65…" → "9f86d081884c"; other algorithms keep their name. */
export function shortDigest(digest: string | null | undefined, length = 12): string {
  if (!digest) return "";
  const colon = digest.indexOf(":");
  if (colon < 0) return digest.slice(0, length);
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1, colon + 1 + length);
  return algorithm === "sha256" ? hex : `${algorithm}:${hex}`;
}

export interface Platform {
  os?: string;
  architecture?: string;
  variant?: string;
  "os.version"?: string;
}

/** "linux/arm64/v8", "windows/amd64 10.0.20348.2031"; "unknown" parts are kept as they are. */
export function formatPlatform(platform: Platform | null | undefined): string {
  if (!platform || (!platform.os && !platform.architecture)) return "";
  const parts = [platform.os || "unknown", platform.architecture || "unknown"];
  if (platform.variant) parts.push(platform.variant);
  const text = parts.join("/");
  return platform["os.version"] ? `${text} ${platform["os.version"]}` : text;
}

const OS_ORDER = ["linux", "windows", "darwin", "freebsd"];
const ARCH_ORDER = ["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le"];

function rank(list: string[], value: string | undefined): number {
  const i = list.indexOf(value ?? "");
  return i < 0 ? list.length : i;
}

/**
 * Distinct platforms, formatted and in a stable order (linux/amd64 first, then arm64, ...).
 * `unknown/unknown` entries (build attestations stored inside an index) are left out.
 */
export function formatPlatforms(platforms: Array<Platform | null | undefined>): string[] {
  const seen = new Map<string, Platform>();
  for (const p of platforms) {
    if (!p || isUnknownPlatform(p)) continue;
    const text = formatPlatform(p);
    if (text && !seen.has(text)) seen.set(text, p);
  }
  return [...seen.entries()]
    .sort(([ta, a], [tb, b]) => {
      return (
        rank(OS_ORDER, a.os) - rank(OS_ORDER, b.os) ||
        rank(ARCH_ORDER, a.architecture) - rank(ARCH_ORDER, b.architecture) ||
        ta.localeCompare(tb)
      );
    })
    .map(([text]) => text);
}

export function isUnknownPlatform(p: Platform): boolean {
  return (p.os ?? "unknown") === "unknown" && (p.architecture ?? "unknown") === "unknown";
}

const MEDIA_TYPE_LABELS: Record<string, string> = {
  "application/vnd.oci.image.index.v1+json": "OCI image index",
  "application/vnd.oci.image.manifest.v1+json": "OCI image manifest",
  "application/vnd.docker.distribution.manifest.list.v2+json": "Docker manifest list",
  "application/vnd.docker.distribution.manifest.v2+json": "Docker image manifest",
  "application/vnd.docker.distribution.manifest.v1+json": "Docker schema 1 manifest",
  "application/vnd.docker.distribution.manifest.v1+prettyjws": "Docker schema 1 manifest (signed)",
  "application/vnd.oci.image.config.v1+json": "OCI image config",
  "application/vnd.docker.container.image.v1+json": "Docker image config",
  "application/vnd.oci.image.layer.v1.tar": "tar",
  "application/vnd.oci.image.layer.v1.tar+gzip": "tar+gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd": "tar+zstd",
  "application/vnd.oci.image.layer.nondistributable.v1.tar": "tar (non-distributable)",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "tar+gzip (non-distributable)",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "tar+zstd (non-distributable)",
  "application/vnd.docker.image.rootfs.diff.tar.gzip": "tar.gzip (Docker)",
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "tar.gzip (Docker, foreign)",
  "application/vnd.oci.empty.v1+json": "empty",
  "application/vnd.dev.cosign.artifact.sig.v1+json": "Cosign signature",
  "application/vnd.dev.cosign.simplesigning.v1+json": "Cosign signature",
  "application/vnd.dev.cosign.artifact.sbom.v1+json": "Cosign SBOM",
  "application/vnd.dev.sigstore.bundle.v0.3+json": "Sigstore bundle",
  "application/vnd.dev.sigstore.bundle+json;version=0.3": "Sigstore bundle",
  "application/vnd.cncf.notary.signature": "Notary signature",
  "application/spdx+json": "SPDX SBOM",
  "text/spdx": "SPDX SBOM",
  "application/vnd.cyclonedx+json": "CycloneDX SBOM",
  "application/vnd.cyclonedx+xml": "CycloneDX SBOM",
  "application/vnd.in-toto+json": "in-toto attestation",
  "application/vnd.dsse.envelope.v1+json": "DSSE attestation",
  "application/vnd.cncf.helm.config.v1+json": "Helm chart",
  "application/vnd.cncf.helm.chart.content.v1.tar+gzip": "Helm chart content",
  "application/vnd.wasm.config.v0+json": "WebAssembly module",
  "application/vnd.unknown.config.v1+json": "artifact",
};

/** A readable name for a media or artifact type; the raw type when it is not a well-known one. */
export function mediaTypeLabel(mediaType: string | null | undefined): string {
  if (!mediaType) return "";
  return MEDIA_TYPE_LABELS[mediaType] ?? mediaType;
}

/** Whether a manifest media type is an index (manifest list). */
export function isIndexMediaType(mediaType: string | null | undefined): boolean {
  return (
    mediaType === "application/vnd.oci.image.index.v1+json" ||
    mediaType === "application/vnd.docker.distribution.manifest.list.v2+json"
  );
}

/**
 * The `docker pull` command for a reference, with the host the user reached the UI on
 * (`location.host`: includes the port unless it is the scheme's default).
 */
export function pullCommand(host: string, repository: string, reference: string): string {
  const separator = reference.includes(":") ? "@" : ":";
  return `docker pull ${host}/${repository}${separator}${reference}`;
}

/** The commands shown on an empty registry. */
export function firstPushCommands(host: string, image = "myimage"): string {
  return `docker tag ${image}:latest ${host}/${image}:latest && docker push ${host}/${image}:latest`;
}

/** "team/app/web" → "team/app"; top-level repositories have the namespace "". */
export function namespaceOf(name: string): string {
  const slash = name.lastIndexOf("/");
  return slash < 0 ? "" : name.slice(0, slash);
}

/** The last path component: "team/app/web" → "web". */
export function baseName(name: string): string {
  const slash = name.lastIndexOf("/");
  return slash < 0 ? name : name.slice(slash + 1);
}

/** Groups consecutive items that share a namespace, keeping the order they came in. */
export function groupByNamespace<T extends { name: string }>(
  items: T[],
): Array<{ namespace: string; items: T[] }> {
  const groups: Array<{ namespace: string; items: T[] }> = [];
  for (const item of items) {
    const ns = namespaceOf(item.name);
    const last = groups[groups.length - 1];
    if (last && last.namespace === ns) last.items.push(item);
    else groups.push({ namespace: ns, items: [item] });
  }
  return groups;
}

/** Docker's `ExposedPorts` map ({"80/tcp": {}}) as a sorted list ("80/tcp"). */
export function exposedPorts(ports: Record<string, unknown> | null | undefined): string[] {
  if (!ports) return [];
  return Object.keys(ports).sort(
    (a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10) || a.localeCompare(b),
  );
}

/** "KEY=value" → ["KEY", "value"]; a bare "KEY" → ["KEY", ""]. */
export function splitEnv(entry: string): [string, string] {
  const eq = entry.indexOf("=");
  return eq < 0 ? [entry, ""] : [entry.slice(0, eq), entry.slice(eq + 1)];
}
