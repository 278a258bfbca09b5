import { describe, expect, it } from "vitest";
import { RegistryError } from "../../src/registry/errors.js";
import { isValidName, isValidTag, parseDigest, parseReference } from "../../src/registry/names.js";

describe("repository names", () => {
  it.each(["a", "library/ubuntu", "a-b/c_d/e.f", "a__b", "a---b", "0/1/2", "x".repeat(255)])(
    "accepts %s",
    (name) => {
      expect(isValidName(name)).toBe(true);
    },
  );
  it.each([
    "",
    "A",
    "a/",
    "/a",
    "a//b",
    "a_",
    "a___b",
    "a..b",
    ".a",
    "a/../b",
    "a b",
    "a%2fb",
    "x".repeat(256),
  ])("refuses %j", (name) => {
    expect(isValidName(name)).toBe(false);
  });
});

describe("tags", () => {
  it("follows the spec's grammar", () => {
    expect(isValidTag("latest")).toBe(true);
    expect(isValidTag("_x.Y-1")).toBe(true);
    expect(isValidTag("x".repeat(128))).toBe(true);
    expect(isValidTag("x".repeat(129))).toBe(false);
    expect(isValidTag(".x")).toBe(false);
    expect(isValidTag("-x")).toBe(false);
    expect(isValidTag("a/b")).toBe(false);
  });
});

describe("digests", () => {
  it("takes sha256 and sha512 and refuses anything else", () => {
    expect(parseDigest(`sha256:${"a".repeat(64)}`)?.algorithm).toBe("sha256");
    expect(parseDigest(`sha512:${"b".repeat(128)}`)?.algorithm).toBe("sha512");
    expect(parseDigest(`sha256:${"A".repeat(64)}`)).toBeNull();
    expect(parseDigest(`sha256:${"a".repeat(63)}`)).toBeNull();
    expect(parseDigest(`md5:${"a".repeat(32)}`)).toBeNull();
    expect(parseDigest("sha256:../../etc")).toBeNull();
  });

  it("tells tags from digests in references", () => {
    expect(parseReference("v1")).toEqual({ kind: "tag", tag: "v1" });
    expect(parseReference(`sha256:${"c".repeat(64)}`).kind).toBe("digest");
    expect(() => parseReference("sha256:short")).toThrow(RegistryError);
    expect(() => parseReference("..")).toThrow(RegistryError);
  });
});
