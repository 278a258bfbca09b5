import { type Insertable, sql, type Transaction } from "kysely";
import type { Database, ManifestsTable } from "./schema.js";

/**
 * Writes of manifest rows shared by the store (a push, a DELETE), the collector and the registry:2
 * import: one mapping from a manifest to its row, one way to remove a manifest with what hangs off it.
 */

type Tx = Transaction<Database>;

/** What a manifest row is made of (NewManifest in store.ts adds its references). */
export interface ManifestFields {
  digest: string;
  mediaType: string;
  content: Buffer;
  artifactType: string | null;
  subject: string | null;
  annotations: string | null;
  configDigest: string | null;
}

/** The `manifests` row of a manifest of repository `repositoryId`, created at `createdAt`, never pulled. */
export function manifestRow(
  repositoryId: number,
  m: ManifestFields,
  createdAt: number,
): Insertable<ManifestsTable> {
  return {
    repository_id: repositoryId,
    digest: m.digest,
    media_type: m.mediaType,
    size: m.content.length,
    content: m.content,
    artifact_type: m.artifactType,
    subject: m.subject,
    annotations: m.annotations,
    config_digest: m.configDigest,
    created_at: createdAt,
    last_pulled_at: null,
  };
}

/** Drops the mark that a deleted index left on `digest` (pushed again, or deleted itself). */
export async function unrelease(trx: Tx, repositoryId: number, digest: string): Promise<void> {
  await trx
    .deleteFrom("released_manifests")
    .where("repository_id", "=", repositoryId)
    .where("digest", "=", digest)
    .execute();
}

/** Removes a manifest, the tags that point at it and its reference rows; false when it was not there. */
export async function deleteManifestRows(trx: Tx, repositoryId: number, digest: string): Promise<boolean> {
  const result = await trx
    .deleteFrom("manifests")
    .where("repository_id", "=", repositoryId)
    .where("digest", "=", digest)
    .executeTakeFirst();
  if (Number(result.numDeletedRows) === 0) return false;
  await unrelease(trx, repositoryId, digest);
  // The children of a deleted index are released: the collector removes those nothing else holds.
  await trx
    .insertInto("released_manifests")
    .columns(["repository_id", "digest", "released_at"])
    .expression((eb) =>
      eb
        .selectFrom("manifest_children")
        .select([
          "repository_id",
          "child_digest as digest",
          sql<number>`cast(${Date.now()} as bigint)`.as("released_at"),
        ])
        .where("repository_id", "=", repositoryId)
        .where("parent_digest", "=", digest),
    )
    .onConflict((oc) => oc.doNothing())
    .execute();
  await trx
    .deleteFrom("tags")
    .where("repository_id", "=", repositoryId)
    .where("digest", "=", digest)
    .execute();
  await trx
    .deleteFrom("manifest_blobs")
    .where("repository_id", "=", repositoryId)
    .where("manifest_digest", "=", digest)
    .execute();
  await trx
    .deleteFrom("manifest_children")
    .where("repository_id", "=", repositoryId)
    .where("parent_digest", "=", digest)
    .execute();
  await trx
    .deleteFrom("repository_blobs")
    .where("repository_id", "=", repositoryId)
    .where("digest", "=", digest)
    .execute();
  return true;
}
