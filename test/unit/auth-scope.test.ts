import { describe, expect, it } from "vitest";
import {
  basicChallenge,
  bearerChallenge,
  formatScope,
  parseScope,
  parseScopes,
} from "../../src/auth/scope.js";

describe("scopes", () => {
  it("parses type, name and actions", () => {
    expect(parseScope("repository:team-a/app:pull,push")).toEqual({
      type: "repository",
      name: "team-a/app",
      actions: ["pull", "push"],
    });
    expect(parseScope("registry:catalog:*")).toEqual({ type: "registry", name: "catalog", actions: ["*"] });
  });

  it("keeps colons inside the name and drops a resource class", () => {
    expect(parseScope("repository:localhost:5000/app:pull")).toEqual({
      type: "repository",
      name: "localhost:5000/app",
      actions: ["pull"],
    });
    expect(parseScope("repository(plugin):vieux/sshfs:pull")?.type).toBe("repository");
  });

  it("drops unknown actions and refuses unknown types and malformed scopes", () => {
    expect(parseScope("repository:a:pull,frobnicate")!.actions).toEqual(["pull"]);
    expect(parseScope("repository:a:frobnicate")!.actions).toEqual([]);
    expect(parseScope("plugin:a:pull")).toBeNull();
    expect(parseScope("repository:pull")).toBeNull();
    expect(parseScope("nonsense")).toBeNull();
  });

  it("reads repeated and space-separated scopes and merges the same resource", () => {
    expect(parseScopes(["repository:a:pull repository:b:pull", "repository:a:push"])).toEqual([
      { type: "repository", name: "a", actions: ["pull", "push"] },
      { type: "repository", name: "b", actions: ["pull"] },
    ]);
    expect(parseScopes(undefined)).toEqual([]);
  });

  it("formats back", () => {
    expect(formatScope({ type: "repository", name: "a/b", actions: ["pull", "push"] })).toBe(
      "repository:a/b:pull,push",
    );
  });
});

describe("challenges", () => {
  it("Basic names the realm", () => {
    expect(basicChallenge('My "Registry"')).toBe('Basic realm="My \\"Registry\\""');
  });

  it("Bearer names realm, service, every scope (space-separated) and the error", () => {
    expect(
      bearerChallenge({
        realm: "https://r.example/auth/token",
        service: "berth",
        scopes: [
          { type: "repository", name: "target", actions: ["pull", "push"] },
          { type: "repository", name: "source", actions: ["pull"] },
        ],
        error: "insufficient_scope",
      }),
    ).toBe(
      'Bearer realm="https://r.example/auth/token",service="berth",scope="repository:target:pull,push repository:source:pull",error="insufficient_scope"',
    );
    expect(bearerChallenge({ realm: "r", service: "s" })).toBe('Bearer realm="r",service="s"');
  });
});
