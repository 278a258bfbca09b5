import type { Kysely } from "kysely";
import type { Database } from "./schema.js";

/**
 * The settings table: named values that every process sharing the database must agree on. The token
 * signing key is written once (settleSetting: the first writer wins, and everyone reads back the
 * winner's); a value that a job recomputes (the storage usage snapshot) is replaced (storeSetting).
 */

/** The value stored under `name`, if any. */
export async function readSetting(db: Kysely<Database>, name: string): Promise<string | undefined> {
  const row = await db.selectFrom("settings").select("value").where("name", "=", name).executeTakeFirst();
  return row?.value;
}

/**
 * Stores `candidate` under `name` unless a value is there already, and returns the stored value. Ten
 * processes calling this at once with ten candidates all return the same one: the insert does nothing
 * on a conflict (on PostgreSQL it waits for a concurrent insert of the same name to commit first), and
 * the read that follows sees the committed row.
 */
export async function settleSetting(db: Kysely<Database>, name: string, candidate: string): Promise<string> {
  await db
    .insertInto("settings")
    .values({ name, value: candidate, created_at: Date.now() })
    .onConflict((oc) => oc.column("name").doNothing())
    .execute();
  const stored = await readSetting(db, name);
  if (stored === undefined) throw new Error(`setting ${name} was not stored`);
  return stored;
}

/** Stores `value` under `name`, replacing what was there. */
export async function storeSetting(db: Kysely<Database>, name: string, value: string): Promise<void> {
  await db
    .insertInto("settings")
    .values({ name, value, created_at: Date.now() })
    .onConflict((oc) => oc.column("name").doUpdateSet({ value, created_at: Date.now() }))
    .execute();
}
