import type { Kysely } from "kysely";
import type { Database } from "./schema.js";

/**
 * A set of query functions whose first parameter is the database, seen from the domain: the same
 * functions with the database already given. This is how the read-only facets of the metadata store
 * (ui, usage, gc reads...) are typed and built, so that no Kysely type reaches src/registry or src/http.
 */
export type Bound<M> = {
  [K in keyof M]: M[K] extends (db: never, ...args: infer A) => infer R ? (...args: A) => R : never;
};

/** Binds every function of `fns` to `db` (see Bound). */
export function bindQueries<M extends Record<string, (db: Kysely<Database>, ...args: never[]) => unknown>>(
  db: Kysely<Database>,
  fns: M,
): Bound<M> {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(fns)) {
    out[name] = (...args: never[]) => fn(db, ...args);
  }
  return out as Bound<M>;
}
