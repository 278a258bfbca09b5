import type { AccessConfig } from "../config/sections/auth.js";
import { type AccessRequest, type Action, ALL_ACTIONS } from "./types.js";

export type ConcreteAction = Exclude<Action, "*">;

// biome-ignore lint/suspicious/noTemplateCurlyInString: the placeholder is literal text in patterns
export const USER_PLACEHOLDER = "${user}";

/** A compiled repository pattern: `*` matches any run of characters, `${user}` the caller's name. */
class Pattern {
  private readonly fixed: RegExp | null;
  private readonly perUser = new Map<string, RegExp>();

  constructor(private readonly source: string) {
    this.fixed = source.includes(USER_PLACEHOLDER) ? null : Pattern.compile(source);
  }

  static compile(pattern: string): RegExp {
    const body = pattern
      .split("*")
      .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"))
      .join(".*");
    return new RegExp(`^${body}$`);
  }

  /** Whether the pattern matches every repository name (`*`). */
  get matchesEverything(): boolean {
    return /^\*+$/.test(this.source);
  }

  matches(repository: string, user: string | null): boolean {
    if (this.fixed) return this.fixed.test(repository);
    if (user === null) return false;
    let re = this.perUser.get(user);
    if (!re) {
      // The user name is inserted literally (its own `*` or `.` match only themselves).
      const parts = this.source.split(USER_PLACEHOLDER).map((p) => Pattern.compile(p).source.slice(1, -1));
      re = new RegExp(`^${parts.join(user.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))}$`);
      if (this.perUser.size > 10_000) this.perUser.clear();
      this.perUser.set(user, re);
    }
    return re.test(repository);
  }
}

interface CompiledRule {
  patterns: Pattern[];
  users: Set<string>;
  everyUser: boolean;
  groups: Set<string>;
  actions: ConcreteAction[];
}

export function expandActions(actions: readonly Action[]): ConcreteAction[] {
  if (actions.includes("*")) return [...ALL_ACTIONS];
  return ALL_ACTIONS.filter((a) => actions.includes(a));
}

/**
 * Berth's access rules. With no `auth.access` section every authenticated user may do everything and
 * anonymous callers nothing (registry:2's htpasswd behaviour); with one, anything not granted by a
 * rule, the admin role or the anonymous list is denied.
 */
export class AccessRules {
  private readonly configured: boolean;
  private readonly adminUsers: Set<string>;
  private readonly adminGroups: Set<string>;
  private readonly memberOf = new Map<string, string[]>();
  private readonly anonymous: Pattern[];
  private readonly rules: CompiledRule[];

  constructor(config: AccessConfig | undefined) {
    this.configured = config !== undefined;
    this.adminUsers = new Set(config?.admins.users ?? []);
    this.adminGroups = new Set(config?.admins.groups ?? []);
    for (const [group, members] of Object.entries(config?.groups ?? {})) {
      for (const m of members) this.memberOf.set(m, [...(this.memberOf.get(m) ?? []), group]);
    }
    this.anonymous = (config?.anonymous.pull ?? []).map((p) => new Pattern(p));
    this.rules = (config?.rules ?? []).map((r) => ({
      patterns: r.repositories.map((p) => new Pattern(p)),
      users: new Set(r.users),
      everyUser: r.users.includes("*"),
      groups: new Set(r.groups),
      actions: expandActions(r.actions),
    }));
  }

  groupsOf(user: string | null): string[] {
    return user === null ? [] : (this.memberOf.get(user) ?? []);
  }

  isAdmin(user: string | null): boolean {
    if (user === null) return false;
    if (!this.configured) return true;
    return this.adminUsers.has(user) || this.groupsOf(user).some((g) => this.adminGroups.has(g));
  }

  /** Whether anonymous callers may pull anything at all (decides the anonymous catalog too). */
  get anonymousEnabled(): boolean {
    return this.anonymous.length > 0;
  }

  /** The actions `user` (null: anonymous) may take on `repository`. */
  allowed(user: string | null, repository: string): Set<ConcreteAction> {
    const out = new Set<ConcreteAction>();
    if (this.isAdmin(user)) return new Set(ALL_ACTIONS);
    if (this.anonymous.some((p) => p.matches(repository, null))) out.add("pull");
    if (user === null) return out;
    const groups = this.groupsOf(user);
    for (const rule of this.rules) {
      const applies = rule.everyUser || rule.users.has(user) || groups.some((g) => rule.groups.has(g));
      if (!applies) continue;
      if (!rule.patterns.some((p) => p.matches(repository, user))) continue;
      for (const a of rule.actions) out.add(a);
    }
    return out;
  }

  /**
   * Whether `user` (null: anonymous) may pull every repository, whatever its name: an admin, or a rule
   * (or the anonymous list) whose pattern is `*`. Registry-wide figures are for such callers only.
   */
  pullsEverything(user: string | null): boolean {
    if (this.isAdmin(user)) return true;
    if (this.anonymous.some((p) => p.matchesEverything)) return true;
    if (user === null) return false;
    const groups = this.groupsOf(user);
    return this.rules.some(
      (rule) =>
        (rule.everyUser || rule.users.has(user) || groups.some((g) => rule.groups.has(g))) &&
        rule.actions.includes("pull") &&
        rule.patterns.some((p) => p.matchesEverything),
    );
  }

  /** Whether `user` may take every action of `request`. */
  permits(user: string | null, request: AccessRequest): boolean {
    if (request.type === "registry") {
      // The catalog is open to every caller; its entries are filtered by pull permission.
      return request.name === "catalog" ? true : this.isAdmin(user);
    }
    const allowed = this.allowed(user, request.name);
    return expandActions(request.actions).every((a) => allowed.has(a)) && request.actions.length > 0;
  }

  /** Narrows a requested scope to what `user` may do (for the token endpoint); null when nothing is left. */
  grant(user: string | null, request: AccessRequest): AccessRequest | null {
    if (request.type === "registry") {
      if (request.name === "catalog") return { type: "registry", name: "catalog", actions: ["*"] };
      return this.isAdmin(user) ? request : null;
    }
    const allowed = this.allowed(user, request.name);
    const actions = expandActions(request.actions).filter((a) => allowed.has(a));
    return actions.length > 0 ? { type: "repository", name: request.name, actions } : null;
  }
}
