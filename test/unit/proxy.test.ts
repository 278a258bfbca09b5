// The pull-through cache's pure parts: WWW-Authenticate parsing, which upstream serves a repository,
// containerd's ?ns= mapping, and the refusal of pushes into mirrors.
import { describe, expect, it } from "vitest";
import type { MetadataStore } from "../../src/metadata/store.js";
import { PullThroughCache, type UpstreamSettings } from "../../src/registry/proxy/cache.js";
import {
  addressClass,
  destinationAllowed,
  parseChallenge,
  realmMayHaveCredentials,
  redirectRefusal,
  registrableDomain,
  UpstreamClient,
} from "../../src/registry/proxy/client.js";
import type { BlobStore } from "../../src/storage/blob-store.js";

function cache(settings: Partial<UpstreamSettings>[]): PullThroughCache {
  const full = settings.map((s) => ({
    prefix: null,
    remoteurl: "https://registry-1.docker.io",
    tagTtlMs: 60_000,
    timeoutMs: 1000,
    allowPush: false,
    ttlMs: 0,
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

describe("upstream containment", () => {
  it("classes addresses", () => {
    expect(addressClass("127.0.0.1")).toBe("loopback");
    expect(addressClass("127.8.9.1")).toBe("loopback");
    expect(addressClass("::1")).toBe("loopback");
    expect(addressClass("::ffff:127.0.0.1")).toBe("loopback");
    expect(addressClass("::ffff:7f00:1")).toBe("loopback");
    expect(addressClass("::ffff:a9fe:a9fe")).toBe("link-local");
    expect(addressClass("::a9fe:a9fe")).toBe("reserved");
    expect(addressClass("10.1.2.3")).toBe("private");
    expect(addressClass("172.20.0.1")).toBe("private");
    expect(addressClass("192.168.1.1")).toBe("private");
    expect(addressClass("100.64.0.1")).toBe("private");
    expect(addressClass("fd00::1")).toBe("private");
    expect(addressClass("169.254.169.254")).toBe("link-local");
    expect(addressClass("fe80::1%eth0")).toBe("link-local");
    expect(addressClass("0.0.0.0")).toBe("reserved");
    expect(addressClass("::")).toBe("reserved");
    expect(addressClass("224.0.0.1")).toBe("reserved");
    expect(addressClass("8.8.8.8")).toBe("public");
    expect(addressClass("172.32.0.1")).toBe("public");
    expect(addressClass("2606:4700::1111")).toBe("public");
    expect(addressClass("not an address")).toBe("reserved");
  });

  it("a redirect goes anywhere public, and into a non-public class only from an upstream in that class", () => {
    for (const target of ["127.0.0.1", "::1", "10.0.0.1", "169.254.169.254", "192.168.0.1", "0.0.0.0"]) {
      expect(destinationAllowed("public", addressClass(target)), target).toBe(false);
    }
    expect(destinationAllowed("public", "public")).toBe(true);
    expect(destinationAllowed("loopback", "loopback")).toBe(true);
    expect(destinationAllowed("loopback", "public")).toBe(true);
    expect(destinationAllowed("loopback", "private")).toBe(false);
    expect(destinationAllowed("loopback", "link-local")).toBe(false);
    expect(destinationAllowed("private", "private")).toBe(true);
    expect(destinationAllowed("private", "loopback")).toBe(false);
    expect(destinationAllowed("reserved", "reserved")).toBe(false);
  });

  it("judges a redirect's URL: scheme, address literals, localhost", () => {
    const u = (s: string) => new URL(s);
    expect(redirectRefusal("public", u("https://cdn.example.net/blob"))).toBeNull();
    expect(redirectRefusal("public", u("http://127.0.0.1:5000/x"))).toMatch(/loopback/);
    expect(redirectRefusal("public", u("http://[::1]/x"))).toMatch(/loopback/);
    expect(redirectRefusal("public", u("http://localhost/x"))).toMatch(/loopback/);
    expect(redirectRefusal("public", u("http://10.0.0.7/x"))).toMatch(/private/);
    expect(redirectRefusal("public", u("http://169.254.169.254/latest/meta-data"))).toMatch(/link-local/);
    expect(redirectRefusal("public", u("https://[fe80::1]/x"))).toMatch(/link-local/);
    expect(redirectRefusal("public", u("http://[::ffff:7f00:1]/x"))).toMatch(/loopback/);
    expect(redirectRefusal("loopback", u("http://127.0.0.1:5000/x"))).toBeNull();
    expect(redirectRefusal("loopback", u("http://10.0.0.7/x"))).toMatch(/private/);
    expect(redirectRefusal("loopback", u("file:///etc/passwd"))).toMatch(/file URL/);
    expect(redirectRefusal("loopback", u("ftp://127.0.0.1/x"))).toMatch(/ftp URL/);
  });

  it("sends credentials only to a token realm of the upstream's registrable domain, or one listed", () => {
    const hub = new URL("https://registry-1.docker.io");
    expect(registrableDomain("registry-1.docker.io")).toBe("docker.io");
    expect(registrableDomain("registry.example.co.uk")).toBe("example.co.uk");
    expect(registrableDomain("127.0.0.1")).toBe("127.0.0.1");
    expect(realmMayHaveCredentials(hub, new URL("https://auth.docker.io/token"))).toBe(true);
    expect(realmMayHaveCredentials(hub, new URL("https://auth.docker.io.evil.net/token"))).toBe(false);
    expect(realmMayHaveCredentials(hub, new URL("https://evil-docker.io/token"))).toBe(false);
    // Not in clear text when the upstream is reached over TLS.
    expect(realmMayHaveCredentials(hub, new URL("http://auth.docker.io/token"))).toBe(false);
    const ghcr = new URL("https://ghcr.io");
    expect(realmMayHaveCredentials(ghcr, new URL("https://ghcr.io/token"))).toBe(true);
    expect(realmMayHaveCredentials(ghcr, new URL("https://sso.corp.example/token"))).toBe(false);
    expect(
      realmMayHaveCredentials(ghcr, new URL("https://sso.corp.example/token"), ["sso.corp.example"]),
    ).toBe(true);
    const local = new URL("http://127.0.0.1:5000");
    expect(realmMayHaveCredentials(local, new URL("http://127.0.0.1:5001/auth"))).toBe(true);
    expect(realmMayHaveCredentials(local, new URL("http://localhost:5000/auth"))).toBe(false);
  });

  it("refuses a host name that resolves to an address the upstream may not send the cache to", async () => {
    type Lookup = (
      name: string,
      options: { all?: boolean },
      cb: (err: Error | null, address: unknown, family?: number) => void,
    ) => void;
    const lookupOf = (remoteurl: string): Lookup => {
      const client = new UpstreamClient({ remoteurl, timeoutMs: 1000 });
      return (client as unknown as { containedLookup(h: string): Lookup }).containedLookup("localhost");
    };
    const resolve = (lookup: Lookup) =>
      new Promise<unknown>((ok, fail) =>
        lookup("localhost", { all: true }, (err, address) => (err ? fail(err) : ok(address))),
      );
    // A public upstream (by name, not yet answered): localhost is loopback, refused before any connection.
    await expect(resolve(lookupOf("https://registry.example.com"))).rejects.toThrow(
      /localhost resolves to .*where it does not go/,
    );
    // An upstream on loopback may.
    expect(await resolve(lookupOf("http://127.0.0.1:5000"))).toEqual(
      expect.arrayContaining([expect.objectContaining({ address: expect.any(String) })]),
    );
  });
});
