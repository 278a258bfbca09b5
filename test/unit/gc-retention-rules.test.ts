import { describe, expect, test } from "vitest";
import { retentionSection } from "../../src/config/sections/gc.js";
import type { TagInfo } from "../../src/metadata/gc-queries.js";
import {
  compilePolicies,
  describePolicy,
  evaluatePolicy,
  formatDuration,
  patternRegex,
  policyFor,
} from "../../src/registry/retention.js";

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 0, 31);

function policies(list: unknown[]) {
  return compilePolicies(retentionSection.parse({ policies: list }).policies);
}

function tag(
  name: string,
  daysAgo: number,
  pulledDaysAgo: number | null = null,
  digest = `sha256:${name}`,
): TagInfo {
  return {
    name,
    digest,
    updatedAt: NOW - daysAgo * DAY,
    pulledAt: pulledDaysAgo === null ? null : NOW - pulledDaysAgo * DAY,
  };
}

function removed(list: unknown[], tags: TagInfo[]): string[] {
  const [p] = policies(list);
  return evaluatePolicy(p!, tags, NOW)
    .filter((d) => d.remove)
    .map((d) => d.tag)
    .sort();
}

describe("repository patterns", () => {
  test("* matches any run of characters, slashes included; the first matching policy applies", () => {
    expect(patternRegex("team-a/*").test("team-a/app")).toBe(true);
    expect(patternRegex("team-a/*").test("team-a/sub/app")).toBe(true);
    expect(patternRegex("team-a/*").test("team-b/app")).toBe(false);
    expect(patternRegex("team-a.x").test("team-aax")).toBe(false);
    const list = policies([
      { repositories: ["team-a/keep-*", "special"], keeptags: [".*"] },
      { repositories: "team-a/*", keeplast: 1 },
    ]);
    expect(policyFor(list, "team-a/keep-me")?.index).toBe(0);
    expect(policyFor(list, "special")?.index).toBe(0);
    expect(policyFor(list, "team-a/app")?.index).toBe(1);
    expect(policyFor(list, "other")).toBeNull();
    expect(describePolicy(list[1]!)).toBe("policy 2 (team-a/*: keeplast 1)");
  });
});

describe("rules", () => {
  const tags = [
    tag("v1.0.0", 100),
    tag("v1.1.0", 50),
    tag("dev-1", 40),
    tag("dev-2", 20),
    tag("dev-3", 10),
    tag("latest", 1),
  ];

  test("keeplast keeps the N most recently pushed tags", () => {
    expect(removed([{ repositories: "*", keeplast: 2 }], tags)).toEqual([
      "dev-1",
      "dev-2",
      "v1.0.0",
      "v1.1.0",
    ]);
    expect(removed([{ repositories: "*", keeplast: 0 }], tags)).toHaveLength(6);
  });

  test("keeptags keeps whole-tag matches and does not count against keeplast", () => {
    expect(removed([{ repositories: "*", keeptags: ["v\\d+\\.\\d+\\.\\d+"] }], tags)).toEqual([
      "dev-1",
      "dev-2",
      "dev-3",
      "latest",
    ]);
    // Anchored: "dev" alone matches none of dev-1, dev-2, dev-3.
    expect(removed([{ repositories: "*", keeptags: ["dev"] }], tags)).toHaveLength(6);
    expect(removed([{ repositories: "*", keeptags: ["v.*"], keeplast: 2 }], tags)).toEqual([
      "dev-1",
      "dev-2",
    ]);
  });

  test("olderthan removes only tags older than the duration", () => {
    expect(removed([{ repositories: "*", olderthan: "30d" }], tags)).toEqual(["dev-1", "v1.0.0", "v1.1.0"]);
    expect(removed([{ repositories: "*", olderthan: "30d", keeptags: ["v.*"] }], tags)).toEqual(["dev-1"]);
  });

  test("keeppulledwithin keeps what was pulled recently", () => {
    const pulled = [tag("old-pulled", 90, 3), tag("old-unpulled", 90), tag("old-pulled-long-ago", 90, 60)];
    expect(removed([{ repositories: "*", keeppulledwithin: "7d" }], pulled)).toEqual([
      "old-pulled-long-ago",
      "old-unpulled",
    ]);
    expect(removed([{ repositories: "*", keeppulledwithin: "7d", olderthan: "100d" }], pulled)).toEqual([]);
  });

  test("every decision says why", () => {
    const [p] = policies([
      { repositories: "*", keeplast: 1, keeptags: ["v.*"], olderthan: "15d", keeppulledwithin: "7d" },
    ]);
    const decisions = Object.fromEntries(
      evaluatePolicy(p!, [...tags, tag("hot", 60, 1)], NOW).map((d) => [
        d.tag,
        `${d.remove ? "remove" : "keep"}: ${d.reason}`,
      ]),
    );
    expect(decisions).toEqual({
      "v1.0.0": "keep: matches keeptags v.*",
      "v1.1.0": "keep: matches keeptags v.*",
      latest: "keep: one of the 1 most recent tags",
      "dev-3": "keep: pushed 10d ago, not older than 15d",
      hot: "keep: pulled 1d ago, within 7d",
      "dev-2":
        "remove: matches no keeptags; not among the 1 most recent; never pulled; pushed 20d ago, older than 15d",
      "dev-1":
        "remove: matches no keeptags; not among the 1 most recent; never pulled; pushed 40d ago, older than 15d",
    });
  });

  test("ties in push time are broken by name, so the answer is stable", () => {
    const same = [tag("b", 5), tag("a", 5), tag("c", 5)];
    expect(removed([{ repositories: "*", keeplast: 1 }], same)).toEqual(["b", "c"]);
  });

  test("durations print compactly", () => {
    expect(formatDuration(90_061_000)).toBe("1d1h");
    expect(formatDuration(61_000)).toBe("1m1s");
    expect(formatDuration(500)).toBe("500ms");
    expect(formatDuration(30 * DAY)).toBe("30d");
  });
});
