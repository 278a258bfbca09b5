import { describe, expect, it } from "vitest";
import {
  exposedPorts,
  firstPushCommands,
  formatAbsolute,
  formatBytes,
  formatBytesExact,
  formatCount,
  formatCreated,
  formatPercent,
  formatPlatform,
  formatPlatforms,
  formatRelative,
  groupByNamespace,
  isIndexMediaType,
  mediaTypeLabel,
  namespaceOf,
  pullCommand,
  shortDigest,
  splitEnv,
} from "../../ui/src/lib/format.ts";
import { imagePath, parseRoute, repositoryPath } from "../../ui/src/lib/routes.ts";

describe("formatBytes", () => {
  it.each([
    [0, "0 B"],
    [1, "1 B"],
    [999, "999 B"],
    [1000, "1.00 kB"],
    [1234, "1.23 kB"],
    [12_345, "12.3 kB"],
    [123_456, "123 kB"],
    [999_499, "999 kB"],
    [999_960, "1.00 MB"],
    [5_347_301, "5.35 MB"],
    [2_000_000_000, "2.00 GB"],
    [1.5e12, "1.50 TB"],
  ])("%d bytes → %s", (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });

  it("shows a dash for missing or nonsensical sizes", () => {
    expect(formatBytes(null)).toBe("—");
    expect(formatBytes(undefined)).toBe("—");
    expect(formatBytes(-1)).toBe("—");
    expect(formatBytes(Number.NaN)).toBe("—");
  });

  it("gives the exact figure for tooltips", () => {
    expect(formatBytesExact(5_347_301)).toBe("5,347,301 bytes");
    expect(formatBytesExact(1)).toBe("1 byte");
    expect(formatCount(10_000)).toBe("10,000");
    expect(formatCount(999)).toBe("999");
  });

  it("formats shares of a whole", () => {
    expect(formatPercent(1, 4)).toBe("25%");
    expect(formatPercent(1, 1000)).toBe("<1%");
    expect(formatPercent(0, 1000)).toBe("0%");
    expect(formatPercent(5, 0)).toBe("0%");
  });
});

describe("dates", () => {
  const now = Date.UTC(2024, 4, 20, 12, 0, 0);

  it.each([
    [now - 10_000, "just now"],
    [now - 50_000, "1 minute ago"],
    [now - 5 * 60_000, "5 minutes ago"],
    [now - 60 * 60_000, "1 hour ago"],
    [now - 3 * 3_600_000, "3 hours ago"],
    [now - 30 * 3_600_000, "yesterday"],
    [now - 12 * 86_400_000, "12 days ago"],
    [Date.UTC(2024, 2, 14, 9), "14 Mar"],
    [Date.UTC(2023, 11, 1), "1 Dec 2023"],
  ])("%d is %s", (ms, text) => {
    expect(formatRelative(ms, now)).toBe(text);
  });

  it("reads RFC 3339 strings from image configs", () => {
    expect(formatRelative("2024-05-20T11:00:00Z", now)).toBe("1 hour ago");
    expect(formatAbsolute("2024-03-14T09:26:53.123Z")).toBe("2024-03-14 09:26:53 UTC");
  });

  it("treats clock skew as just now and missing dates as a dash", () => {
    expect(formatRelative(now + 60_000, now)).toBe("just now");
    expect(formatRelative(null, now)).toBe("—");
    expect(formatRelative("not a date", now)).toBe("—");
    expect(formatAbsolute(null)).toBe("");
  });

  it("says so when a reproducible build fixed the date", () => {
    expect(formatRelative("1970-01-01T00:00:00Z", now)).toBe("—");
    expect(formatCreated("1970-01-01T00:00:00Z")).toBe(
      "1970-01-01 00:00:00 UTC (fixed by a reproducible build)",
    );
    expect(formatCreated("1980-01-01T00:00:01Z")).toContain("reproducible");
    expect(formatCreated("2024-05-01T12:00:00Z")).toBe("2024-05-01 12:00:00 UTC");
    expect(formatCreated(undefined)).toBe("—");
  });
});

describe("platforms", () => {
  it("formats os/architecture/variant", () => {
    expect(formatPlatform({ os: "linux", architecture: "amd64" })).toBe("linux/amd64");
    expect(formatPlatform({ os: "linux", architecture: "arm64", variant: "v8" })).toBe("linux/arm64/v8");
    expect(formatPlatform({ os: "windows", architecture: "amd64", "os.version": "10.0.20348.2031" })).toBe(
      "windows/amd64 10.0.20348.2031",
    );
    expect(formatPlatform(null)).toBe("");
    expect(formatPlatform({})).toBe("");
  });

  it("lists distinct platforms in a stable order and leaves out attestations", () => {
    expect(
      formatPlatforms([
        { os: "linux", architecture: "s390x" },
        { os: "unknown", architecture: "unknown" },
        { os: "linux", architecture: "arm", variant: "v7" },
        { os: "windows", architecture: "amd64" },
        { os: "linux", architecture: "arm64", variant: "v8" },
        { os: "linux", architecture: "amd64" },
        { os: "linux", architecture: "amd64" },
        null,
      ]),
    ).toEqual(["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/s390x", "windows/amd64"]);
    expect(formatPlatforms([])).toEqual([]);
  });
});

describe("digests, media types, commands and names", () => {
  const digest = "sha256:6474d30083e979baeeaffe1a5f49e6ed95efb37910966edf42b7897298388fc5";

  it("shortens digests like docker does", () => {
    expect(shortDigest(digest)).toBe("6474d30083e9");
    expect(shortDigest(`sha512:${"ab".repeat(64)}`)).toBe("sha512:abababababab");
    expect(shortDigest("")).toBe("");
  });

  it("names well-known media types and keeps unknown ones", () => {
    expect(mediaTypeLabel("application/vnd.oci.image.index.v1+json")).toBe("OCI image index");
    expect(mediaTypeLabel("application/vnd.docker.image.rootfs.diff.tar.gzip")).toBe("tar.gzip (Docker)");
    expect(mediaTypeLabel("application/spdx+json")).toBe("SPDX SBOM");
    expect(mediaTypeLabel("application/vnd.example.thing")).toBe("application/vnd.example.thing");
    expect(isIndexMediaType("application/vnd.docker.distribution.manifest.list.v2+json")).toBe(true);
    expect(isIndexMediaType("application/vnd.oci.image.manifest.v1+json")).toBe(false);
  });

  it("builds the exact docker pull command with the host the UI was reached on", () => {
    expect(pullCommand("registry.example.com", "team/web", "1.4.2")).toBe(
      "docker pull registry.example.com/team/web:1.4.2",
    );
    expect(pullCommand("127.0.0.1:5000", "team/web", digest)).toBe(
      `docker pull 127.0.0.1:5000/team/web@${digest}`,
    );
    expect(firstPushCommands("r.example:5000")).toBe(
      "docker tag myimage:latest r.example:5000/myimage:latest && docker push r.example:5000/myimage:latest",
    );
  });

  it("groups consecutive repositories by namespace", () => {
    expect(namespaceOf("team/app/web")).toBe("team/app");
    expect(namespaceOf("alpine")).toBe("");
    const groups = groupByNamespace([
      { name: "alpine" },
      { name: "team/api" },
      { name: "team/web" },
      { name: "tools/ci/runner" },
    ]);
    expect(groups.map((g) => [g.namespace, g.items.length])).toEqual([
      ["", 1],
      ["team", 2],
      ["tools/ci", 1],
    ]);
  });

  it("reads config maps", () => {
    expect(exposedPorts({ "8080/tcp": {}, "443/tcp": {}, "53/udp": {} })).toEqual([
      "53/udp",
      "443/tcp",
      "8080/tcp",
    ]);
    expect(exposedPorts(undefined)).toEqual([]);
    expect(splitEnv("PATH=/usr/bin:/bin")).toEqual(["PATH", "/usr/bin:/bin"]);
    expect(splitEnv("A=b=c")).toEqual(["A", "b=c"]);
    expect(splitEnv("EMPTY")).toEqual(["EMPTY", ""]);
  });
});

describe("UI routes", () => {
  const digest = "sha256:6474d30083e979baeeaffe1a5f49e6ed95efb37910966edf42b7897298388fc5";

  it("parses the docker-like paths", () => {
    expect(parseRoute("/")).toEqual({ page: "repositories" });
    expect(parseRoute("/r/team/web")).toEqual({ page: "repository", name: "team/web" });
    expect(parseRoute("/r/team/web/")).toEqual({ page: "repository", name: "team/web" });
    expect(parseRoute("/r/team/web:1.4.2")).toEqual({ page: "image", name: "team/web", reference: "1.4.2" });
    expect(parseRoute(`/r/team/web@${digest}`)).toEqual({
      page: "image",
      name: "team/web",
      reference: digest,
    });
    expect(parseRoute(`/r/team/web@${digest.replace(":", "%3A")}`)).toEqual({
      page: "image",
      name: "team/web",
      reference: digest,
    });
    expect(parseRoute("/storage")).toEqual({ page: "storage" });
    expect(parseRoute("/events")).toEqual({ page: "events" });
    expect(parseRoute("/login")).toEqual({ page: "login" });
    expect(parseRoute("/nope")).toEqual({ page: "not-found", path: "/nope" });
    expect(parseRoute("/%E0%A4%A")).toEqual({ page: "not-found", path: "/%E0%A4%A" });
  });

  it("round-trips the paths it builds", () => {
    expect(repositoryPath("team/web")).toBe("/r/team/web");
    expect(imagePath("team/web", "1.4.2")).toBe("/r/team/web:1.4.2");
    expect(imagePath("team/web", digest)).toBe(`/r/team/web@${digest}`);
    expect(parseRoute(imagePath("a/b", "v1_x-y.z"))).toEqual({
      page: "image",
      name: "a/b",
      reference: "v1_x-y.z",
    });
  });
});
