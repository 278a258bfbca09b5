/**
 * The UI's own URLs. Repository names contain `/` but never `:` or `@`, so an image page can use
 * the same spelling as `docker pull`: `/r/team/app:latest` and `/r/team/app@sha256:...`.
 *
 *   /                      repositories
 *   /r/<name>              a repository and its tags
 *   /r/<name>:<tag>        an image by tag
 *   /r/<name>@<digest>     an image (or index) by digest
 *   /storage               storage usage
 *   /events                notification endpoints (administrators)
 *   /login                 log in
 */
export type Route =
  | { page: "repositories" }
  | { page: "repository"; name: string }
  | { page: "image"; name: string; reference: string }
  | { page: "storage" }
  | { page: "events" }
  | { page: "login" }
  | { page: "not-found"; path: string };

/** The path prefixes the server answers with the UI's index.html (kept in step with src/http/routes/ui.ts). */
export const UI_PREFIXES = ["/r/", "/storage", "/events", "/login"] as const;

export function parseRoute(pathname: string): Route {
  let path: string;
  try {
    path = decodeURIComponent(pathname);
  } catch {
    return { page: "not-found", path: pathname };
  }
  if (path === "/" || path === "") return { page: "repositories" };
  if (path === "/storage" || path === "/storage/") return { page: "storage" };
  if (path === "/events" || path === "/events/") return { page: "events" };
  if (path === "/login" || path === "/login/") return { page: "login" };
  if (path.startsWith("/r/")) {
    const rest = path.slice(3).replace(/\/+$/, "");
    if (rest === "") return { page: "repositories" };
    const at = rest.indexOf("@");
    if (at > 0) return { page: "image", name: rest.slice(0, at), reference: rest.slice(at + 1) };
    const colon = rest.indexOf(":");
    if (colon > 0) return { page: "image", name: rest.slice(0, colon), reference: rest.slice(colon + 1) };
    return { page: "repository", name: rest };
  }
  return { page: "not-found", path };
}

/** Repository names and tags only use URL-safe characters; digests keep their colon readable. */
function encodeName(name: string): string {
  return name.split("/").map(encodeURIComponent).join("/");
}

export function repositoryPath(name: string): string {
  return `/r/${encodeName(name)}`;
}

export function imagePath(name: string, reference: string): string {
  const separator = reference.includes(":") ? "@" : ":";
  return `/r/${encodeName(name)}${separator}${encodeURIComponent(reference).replace("%3A", ":")}`;
}
