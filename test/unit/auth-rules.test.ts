import { describe, expect, it } from "vitest";
import { AccessRules } from "../../src/auth/rules.js";
import { accessSection } from "../../src/config/sections/auth.js";

const rules = new AccessRules(
  accessSection.parse({
    admins: { users: ["root"], groups: ["ops"] },
    groups: { "team-a": ["alice", "bob"], ops: ["olga"], readers: ["rita", "alice"] },
    anonymous: { pull: ["public/*", "library/hello"] },
    rules: [
      { repositories: ["team-a/*"], groups: ["team-a"], actions: ["pull", "push"] },
      { repository: "team-a/*", users: ["alice"], actions: ["delete"] },
      { repositories: ["*"], groups: ["readers"], actions: ["pull"] },
      { repositories: ["home/${user}/*", "home/${user}"], users: ["*"], actions: ["*"] },
    ],
  }),
);

const can = (user: string | null, repo: string) => [...rules.allowed(user, repo)].sort().join(",");

describe("AccessRules", () => {
  it("grants group actions on matching repositories, and adds rules up", () => {
    expect(can("bob", "team-a/app")).toBe("pull,push");
    expect(can("alice", "team-a/app")).toBe("delete,pull,push");
    expect(can("bob", "team-a/deep/nested/app")).toBe("pull,push");
  });

  it("denies by default", () => {
    expect(can("bob", "team-b/app")).toBe("");
    expect(can("bob", "team-a")).toBe("");
    expect(can("nobody", "team-a/app")).toBe("");
    expect(can("bob", "xteam-a/app")).toBe("");
  });

  it("`*` covers every repository", () => {
    expect(can("rita", "anything/at/all")).toBe("pull");
    expect(can("rita", "team-a/app")).toBe("pull");
  });

  it("knows who may pull every repository (registry-wide figures)", () => {
    expect(rules.pullsEverything("root")).toBe(true); // admin by name
    expect(rules.pullsEverything("olga")).toBe(true); // admin by group
    expect(rules.pullsEverything("rita")).toBe(true); // pull on `*`
    expect(rules.pullsEverything("bob")).toBe(false); // team-a/* and home/bob only
    expect(rules.pullsEverything(null)).toBe(false); // anonymous: public/* only
    expect(new AccessRules(undefined).pullsEverything("anyone")).toBe(true); // no rules: every user is admin
    const open = new AccessRules(accessSection.parse({ anonymous: { pull: ["*"] } }));
    expect(open.pullsEverything(null)).toBe(true);
  });

  it("admins (by user or group) may do everything", () => {
    expect(can("root", "x/y")).toBe("delete,pull,push");
    expect(can("olga", "team-a/app")).toBe("delete,pull,push");
    expect(rules.isAdmin("olga")).toBe(true);
    expect(rules.isAdmin("alice")).toBe(false);
    expect(rules.isAdmin(null)).toBe(false);
  });

  it("anonymous callers pull only the chosen patterns, and users get those too", () => {
    expect(can(null, "public/app")).toBe("pull");
    expect(can(null, "library/hello")).toBe("pull");
    expect(can(null, "library/hello2")).toBe("");
    expect(can(null, "team-a/app")).toBe("");
    expect(can("bob", "public/app")).toBe("pull");
  });

  it("${user} is the caller's own name, taken literally", () => {
    expect(can("bob", "home/bob/app")).toBe("delete,pull,push");
    expect(can("bob", "home/bob")).toBe("delete,pull,push");
    expect(can("bob", "home/alice/app")).toBe("");
    expect(can(null, "home/bob/app")).toBe("");
    // A user named "b.b" must not match "home/bxb/...".
    expect(can("b.b", "home/bxb/app")).toBe("");
    expect(can("b.b", "home/b.b/app")).toBe("delete,pull,push");
  });

  it("does not treat regex characters in patterns as regex", () => {
    const r = new AccessRules(
      accessSection.parse({ rules: [{ repository: "a.b/*", users: ["u"], actions: ["pull"] }] }),
    );
    expect([...r.allowed("u", "a.b/x")]).toEqual(["pull"]);
    expect([...r.allowed("u", "axb/x")]).toEqual([]);
  });

  it("permits checks every action of a request; the catalog is open and filtered elsewhere", () => {
    expect(rules.permits("bob", { type: "repository", name: "team-a/app", actions: ["pull", "push"] })).toBe(
      true,
    );
    expect(
      rules.permits("bob", { type: "repository", name: "team-a/app", actions: ["pull", "delete"] }),
    ).toBe(false);
    expect(rules.permits("bob", { type: "repository", name: "team-a/app", actions: ["*"] })).toBe(false);
    expect(rules.permits("alice", { type: "repository", name: "team-a/app", actions: ["*"] })).toBe(true);
    expect(rules.permits("bob", { type: "repository", name: "team-a/app", actions: [] })).toBe(false);
    expect(rules.permits(null, { type: "registry", name: "catalog", actions: ["*"] })).toBe(true);
  });

  it("grant narrows a requested scope to what is allowed", () => {
    expect(
      rules.grant("bob", { type: "repository", name: "team-a/app", actions: ["pull", "push", "delete"] }),
    ).toEqual({
      type: "repository",
      name: "team-a/app",
      actions: ["pull", "push"],
    });
    expect(rules.grant("bob", { type: "repository", name: "secret/app", actions: ["pull"] })).toBeNull();
    expect(rules.grant("alice", { type: "repository", name: "team-a/x", actions: ["*"] })!.actions).toEqual([
      "pull",
      "push",
      "delete",
    ]);
    expect(
      rules.grant(null, { type: "repository", name: "public/x", actions: ["pull", "push"] })!.actions,
    ).toEqual(["pull"]);
  });

  it("without an access section, every authenticated user may do everything and anonymous nothing", () => {
    const open = new AccessRules(undefined);
    expect([...open.allowed("anyone", "x")].sort()).toEqual(["delete", "pull", "push"]);
    expect([...open.allowed(null, "x")]).toEqual([]);
  });

  it("the config refuses rules without subjects or repositories and bad patterns", () => {
    expect(() => accessSection.parse({ rules: [{ repository: "x", actions: ["pull"] }] })).toThrow(/users/);
    expect(() => accessSection.parse({ rules: [{ users: ["u"], actions: ["pull"] }] })).toThrow(
      /repositories/,
    );
    expect(() =>
      accessSection.parse({ rules: [{ repository: "X(", users: ["u"], actions: ["pull"] }] }),
    ).toThrow(/pattern/);
    expect(() =>
      accessSection.parse({ rules: [{ repository: "x", users: ["u"], actions: ["fly"] }] }),
    ).toThrow();
  });
});
