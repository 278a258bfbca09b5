import type { NewManifest } from "../metadata/store.js";
import { RegistryError } from "./errors.js";
import {
  baseMediaType,
  DOCKER_SCHEMA1,
  DOCKER_SCHEMA1_SIGNED,
  IMAGE_MANIFEST_TYPES,
  INDEX_TYPES,
  isForeignLayer,
  MANIFEST_TYPES,
  OCI_INDEX,
  OCI_MANIFEST,
} from "./media-types.js";
import { parseDigest } from "./names.js";

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  urls?: string[];
  platform?: { architecture?: string; os?: string; variant?: string; "os.version"?: string };
}

export interface ParsedManifest {
  /** The media type the manifest is stored and served with. */
  mediaType: string;
  kind: "image" | "index";
  config: Descriptor | null;
  layers: Descriptor[];
  manifests: Descriptor[];
  subject: Descriptor | null;
  artifactType: string | null;
  annotations: Record<string, string> | null;
}

const SCHEMA1_MESSAGE =
  "Docker schema1 manifests are not supported: they are deprecated and unsigned-insecure; push with a client that " +
  "speaks Docker schema2 or OCI (docker 1.10 or later, podman, buildah, skopeo)";

function invalid(message: string, detail?: unknown): RegistryError {
  return new RegistryError("MANIFEST_INVALID", message, detail);
}

function descriptor(value: unknown, where: string): Descriptor {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw invalid(`${where} is not a descriptor object`);
  const d = value as Record<string, unknown>;
  if (typeof d.mediaType !== "string" || d.mediaType === "")
    throw invalid(`${where}.mediaType must be a string`);
  if (typeof d.digest !== "string" || !parseDigest(d.digest))
    throw invalid(`${where}.digest is not a valid digest`, { digest: d.digest });
  if (typeof d.size !== "number" || !Number.isSafeInteger(d.size) || d.size < 0)
    throw invalid(`${where}.size must be a non-negative integer`);
  if (d.artifactType !== undefined && typeof d.artifactType !== "string")
    throw invalid(`${where}.artifactType must be a string`);
  if (d.urls !== undefined && (!Array.isArray(d.urls) || d.urls.some((u) => typeof u !== "string")))
    throw invalid(`${where}.urls must be a list of strings`);
  if (d.annotations !== undefined) annotationsOf(d.annotations, `${where}.annotations`);
  return d as unknown as Descriptor;
}

function annotationsOf(value: unknown, where: string): Record<string, string> | null {
  if (value === undefined || value === null) return null;
  if (
    typeof value !== "object" ||
    Array.isArray(value) ||
    Object.values(value).some((v) => typeof v !== "string")
  ) {
    throw invalid(`${where} must be a map of strings`);
  }
  return value as Record<string, string>;
}

/**
 * Parses and validates a pushed manifest. `contentType` is the request's Content-Type.
 * Accepts OCI image manifests and indexes and Docker schema2 manifests and lists; refuses schema1.
 */
export function parseManifest(content: Buffer, contentType: string | undefined): ParsedManifest {
  const declared = baseMediaType(contentType);
  if (declared === DOCKER_SCHEMA1 || declared === DOCKER_SCHEMA1_SIGNED) throw invalid(SCHEMA1_MESSAGE);
  let json: unknown;
  try {
    json = JSON.parse(content.toString("utf8"));
  } catch {
    throw invalid("manifest is not valid JSON");
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw invalid("manifest must be a JSON object");
  const m = json as Record<string, unknown>;
  if (m.schemaVersion === 1) throw invalid(SCHEMA1_MESSAGE);
  if (m.schemaVersion !== 2) throw invalid("schemaVersion must be 2", { schemaVersion: m.schemaVersion });
  if (m.mediaType !== undefined && typeof m.mediaType !== "string")
    throw invalid("mediaType must be a string");
  const bodyType = typeof m.mediaType === "string" ? m.mediaType : undefined;
  if (bodyType === DOCKER_SCHEMA1 || bodyType === DOCKER_SCHEMA1_SIGNED) throw invalid(SCHEMA1_MESSAGE);

  let mediaType: string;
  if (MANIFEST_TYPES.has(declared)) {
    if (bodyType !== undefined && bodyType !== declared) {
      throw invalid(`mediaType ${bodyType} in the manifest does not match Content-Type ${declared}`);
    }
    mediaType = declared;
  } else if (bodyType !== undefined) {
    if (!MANIFEST_TYPES.has(bodyType)) throw invalid(`unsupported manifest media type ${bodyType}`);
    mediaType = bodyType;
  } else {
    // No usable type anywhere: an OCI manifest or index, told apart by shape.
    mediaType = Array.isArray(m.manifests) ? OCI_INDEX : OCI_MANIFEST;
  }

  const subject = m.subject === undefined || m.subject === null ? null : descriptor(m.subject, "subject");
  if (m.artifactType !== undefined && typeof m.artifactType !== "string")
    throw invalid("artifactType must be a string");
  const annotations = annotationsOf(m.annotations, "annotations");

  if (IMAGE_MANIFEST_TYPES.has(mediaType)) {
    if (m.manifests !== undefined) throw invalid("an image manifest must not have manifests");
    const config = descriptor(m.config, "config");
    if (m.layers !== undefined && !Array.isArray(m.layers)) throw invalid("layers must be a list");
    const layers = ((m.layers as unknown[] | undefined) ?? []).map((l, i) => descriptor(l, `layers[${i}]`));
    const artifactType = (m.artifactType as string | undefined) ?? config.mediaType;
    return { mediaType, kind: "image", config, layers, manifests: [], subject, artifactType, annotations };
  }
  if (INDEX_TYPES.has(mediaType)) {
    if (!Array.isArray(m.manifests)) throw invalid("an index must have a list of manifests");
    if (m.config !== undefined || m.layers !== undefined)
      throw invalid("an index must not have config or layers");
    const manifests = m.manifests.map((d, i) => descriptor(d, `manifests[${i}]`));
    const artifactType = (m.artifactType as string | undefined) ?? null;
    return {
      mediaType,
      kind: "index",
      config: null,
      layers: [],
      manifests,
      subject,
      artifactType,
      annotations,
    };
  }
  throw invalid(`unsupported manifest media type ${mediaType}`);
}

/** Blobs this manifest needs in the repository: config and layers, except foreign layers. */
export function requiredBlobs(m: ParsedManifest): string[] {
  const out: string[] = [];
  if (m.config) out.push(m.config.digest);
  for (const layer of m.layers) {
    if (isForeignLayer(layer.mediaType) && layer.urls && layer.urls.length > 0) continue;
    out.push(layer.digest);
  }
  return out;
}

/** What the metadata store records of a manifest: its bytes and what it refers to. */
export function manifestRecord(digest: string, content: Buffer, m: ParsedManifest): NewManifest {
  return {
    digest,
    mediaType: m.mediaType,
    content,
    artifactType: m.artifactType,
    subject: m.subject?.digest ?? null,
    annotations: m.annotations ? JSON.stringify(m.annotations) : null,
    configDigest: m.config?.digest ?? null,
    blobs: requiredBlobs(m),
    children: m.manifests.map((c) => c.digest),
  };
}
