/** Access vocabulary shared by the token service, the access rules and the HTTP layer. */
export type Action = "pull" | "push" | "delete" | "*";

/** One scope, as in the Docker token specification: `repository:team-a/app:pull,push`. */
export interface AccessRequest {
  type: "repository" | "registry";
  name: string;
  actions: Action[];
}

/** Who is calling. `subject` is null for an anonymous caller. */
export interface Identity {
  subject: string | null;
  groups: string[];
  admin: boolean;
  /** Access already granted by a verified bearer token (token auth); undefined for basic/anonymous. */
  tokenAccess?: AccessRequest[];
}

export const ANONYMOUS: Identity = { subject: null, groups: [], admin: false };
