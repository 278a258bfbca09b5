import type { Generated } from "kysely";

/** Times are milliseconds since the epoch; sizes are bytes. */
export interface RepositoriesTable {
  id: Generated<number>;
  name: string;
  created_at: number;
  updated_at: number;
}

/** One row per stored blob digest, shared by every repository that links it. */
export interface BlobsTable {
  digest: string;
  size: number;
  created_at: number;
}

/** Which blobs a repository may read: created by an upload, a mount, or a manifest push. */
export interface RepositoryBlobsTable {
  repository_id: number;
  digest: string;
  created_at: number;
}

export interface ManifestsTable {
  repository_id: number;
  digest: string;
  media_type: string;
  size: number;
  /** The manifest exactly as pushed. */
  content: Buffer;
  /** artifactType, or the config media type of an image manifest. */
  artifact_type: string | null;
  /** The `subject` digest (referrers API). */
  subject: string | null;
  /** JSON of the manifest's annotations, or null. */
  annotations: string | null;
  config_digest: string | null;
  created_at: number;
  last_pulled_at: number | null;
}

/** Config and layers of an image manifest. */
export interface ManifestBlobsTable {
  repository_id: number;
  manifest_digest: string;
  blob_digest: string;
}

/** Manifests listed by an index. */
export interface ManifestChildrenTable {
  repository_id: number;
  parent_digest: string;
  child_digest: string;
}

export interface TagsTable {
  repository_id: number;
  name: string;
  digest: string;
  created_at: number;
  updated_at: number;
}

export interface UploadsTable {
  id: string;
  repository_id: number;
  /** Bytes received so far. */
  size: number;
  /** SHA-256 of those bytes ("sha256:..."), recorded by the write that acknowledged them. */
  digest: string | null;
  created_at: number;
  updated_at: number;
  /** A PATCH/PUT holds the upload until this time, so that two processes never append at once. */
  lease_until: number | null;
  /** `host:pid` of the process holding the lease. */
  lease_holder: string | null;
}

/** Named leases for background jobs (gc, retention, purging) shared by every process. */
export interface LocksTable {
  name: string;
  holder: string;
  expires_at: number;
}

/**
 * Manifests that were children of an index deleted since (by DELETE, the collector or retention). With the
 * default configuration the collector removes such a manifest once nothing holds it: no tag, no index, no
 * kept referrer, and older than the grace period (docs/gc.md). Pushing the manifest again clears the mark.
 */
export interface ReleasedManifestsTable {
  repository_id: number;
  digest: string;
  released_at: number;
}

/** The notification outbox (issue 14): one row per event, written in the transaction of its change. */
export interface EventsTable {
  /** Commit order (SQLite has one writer); each endpoint's cursor is an id here. */
  id: Generated<number>;
  /** The event's stable id, sent to receivers (for de-duplication). */
  event_id: string;
  created_at: number;
  action: string;
  repository: string;
  /** The event as sent in Distribution's envelope, JSON. */
  body: string;
}

/** One row per configured webhook endpoint: how far it got, its health, and which process delivers to it. */
export interface EventEndpointsTable {
  name: string;
  /** The last event id delivered (or skipped by the endpoint's filters). */
  cursor: number;
  /** Failed attempts since the last success. */
  failures: number;
  next_attempt_at: number;
  failing_since: number | null;
  last_error: string | null;
  last_attempt_at: number | null;
  last_success_at: number | null;
  delivered: number;
  lease_holder: string | null;
  lease_until: number | null;
  created_at: number;
}

/** One row per delivery attempt (a batch of events to one endpoint). */
export interface EventDeliveriesTable {
  id: Generated<number>;
  endpoint: string;
  first_event: number;
  last_event: number;
  events: number;
  /** HTTP status, or null when no answer came (timeout, refused). */
  status: number | null;
  error: string | null;
  attempted_at: number;
  duration_ms: number;
}

/** Values shared by every replica, written once (settings-queries.ts). */
export interface SettingsTable {
  name: string;
  value: string;
  created_at: number;
}

export interface Database {
  repositories: RepositoriesTable;
  blobs: BlobsTable;
  repository_blobs: RepositoryBlobsTable;
  manifests: ManifestsTable;
  manifest_blobs: ManifestBlobsTable;
  manifest_children: ManifestChildrenTable;
  tags: TagsTable;
  uploads: UploadsTable;
  locks: LocksTable;
  released_manifests: ReleasedManifestsTable;
  events: EventsTable;
  event_endpoints: EventEndpointsTable;
  event_deliveries: EventDeliveriesTable;
  settings: SettingsTable;
}
