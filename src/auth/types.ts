/** Access vocabulary shared by the token service, the access rules and the HTTP layer. */
export type Action = "pull" | "push" | "delete" | "*";

/** The concrete actions; `*` stands for all of them. */
export const ALL_ACTIONS: readonly Exclude<Action, "*">[] = ["pull", "push", "delete"];

/** One scope, as in the Docker token specification: `repository:team-a/app:pull,push`. */
export interface AccessRequest {
  type: "repository" | "registry";
  name: string;
  actions: Action[];
}

/** How the caller proved who they are. */
export type AuthMethod = "anonymous" | "basic" | "token";

/** Who is calling. `subject` is null for an anonymous caller. */
export interface Identity {
  subject: string | null;
  groups: string[];
  admin: boolean;
  /** Access already granted by a verified bearer token (token auth); undefined for basic/anonymous. */
  tokenAccess?: AccessRequest[];
  /** How the identity was established (absent means anonymous). */
  method?: AuthMethod;
  /** For token identities: whether Berth issued the token (so its own rules also apply) or an external issuer did. */
  issuer?: "berth" | "external";
}

export const ANONYMOUS: Identity = { subject: null, groups: [], admin: false, method: "anonymous" };
