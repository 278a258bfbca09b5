// The pull-through cache's pure parts: WWW-Authenticate parsing, which upstream serves a repository,
// containerd's ?ns= mapping, and the refusal of pushes into mirrors.
import { describe, expect, it } from "vitest";
import type { MetadataStore } from "../../src/metadata/store.js";
import { PullThroughCache, type UpstreamSettings } from "../../src/registry/proxy/cache.js";
import { parseChallenge } from "../../src/registry/proxy/client.js";
import type { BlobStore } from "../../src/storage/blob-store.js";

function cache(settings: Partial<UpstreamSettings>[]): PullThroughCache {
  const full = settings.map((s) => ({
    prefix: null,
    remoteurl: "https://registry-1.docker.io",
    tagTtlMs: 60_000,
    timeoutMs: 1000,
    allowPush: false,
    ...s,
  }));
  // resolve/localName/assertWritable touch neither store.
  return new PullThroughCache(full, null as unknown as MetadataStore, null as unknown as BlobStore);
}

describe("parseChallenge", () => {
  it("reads Docker Hub's Bearer challenge", () => {
    const c = parseChallenge(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
    );
    expect(c).toEqual({
      scheme: "bearer",
      params: {
        realm: "https://auth.docker.io/token",
        service: "registry.docker.io",
        scope: "repository:library/alpine:pull",
      },
    });
  });

  it("reads Basic with a realm, bare values and escapes", () => {
    expect(parseChallenge('Basic realm="my \\"reg\\""')).toEqual({
      scheme: "basic",
      params: { realm: 'my "reg"' },
    });
    expect(parseChallenge("Bearer realm=https://a/token, service=x")?.params).toEqual({
      realm: "https://a/token",
      service: "x",
    });
    expect(parseChallenge(undefined)).toBeNull();
  });
});

describe("which upstream serves a repository", () => {
  it("registry:2 style: every repository, with library/ for Docker Hub's official images", () => {
    const c = cache([{}]);
    expect(c.resolve("alpine")?.remote).toBe("library/alpine");
    expect(c.resolve("library/alpine")?.remote).toBe("library/alpine");
    expect(c.resolve("grafana/grafana")?.remote).toBe("grafana/grafana");
    expect(() => c.assertWritable("anything")).toThrow(/pull-through cache/);
  });

  it("prefixes: the longest wins, other names are private, ?ns= maps hosts to prefixes", () => {
    const c = cache([
      { prefix: "hub", remoteurl: "https://registry-1.docker.io" },
      { prefix: "ghcr", remoteurl: "https://ghcr.io", allowPush: true },
      { prefix: "ghcr/special", remoteurl: "https://quay.io" },
    ]);
    expect(c.resolve("hub/nginx")?.remote).toBe("library/nginx");
    expect(c.resolve("ghcr/owner/app")?.upstream.label).toBe("ghcr");
    expect(c.resolve("ghcr/special/app")?.upstream.label).toBe("ghcr/special");
    expect(c.resolve("hubble/app")).toBeNull();
    expect(c.resolve("private/app")).toBeNull();
    expect(() => c.assertWritable("private/app")).not.toThrow();
    expect(() => c.assertWritable("ghcr/owner/app")).not.toThrow();
    expect(() => c.assertWritable("hub/nginx")).toThrow(/pull-through cache/);
    expect(c.localName("library/alpine", "docker.io")).toBe("hub/library/alpine");
    expect(c.localName("owner/app", "ghcr.io")).toBe("ghcr/owner/app");
    expect(c.localName("owner/app", "unknown.example")).toBe("owner/app");
    expect(c.localName("owner/app", undefined)).toBe("owner/app");
  });
});
