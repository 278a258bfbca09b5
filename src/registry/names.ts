import { RegistryError } from "./errors.js";

/** Repository name grammar of the OCI distribution spec (path components separated by `/`). */
const NAME_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** algorithm ":" encoded, per the OCI image spec's digest grammar. */
const DIGEST_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const KNOWN_DIGESTS: Record<string, RegExp> = {
  sha256: /^[a-f0-9]{64}$/,
  sha512: /^[a-f0-9]{128}$/,
};

/** Longest repository name accepted (Distribution's limit, so that host/name stays within 255 bytes). */
export const MAX_NAME_LENGTH = 255;

export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

export function assertName(name: string): string {
  if (!isValidName(name)) {
    throw new RegistryError("NAME_INVALID", "invalid repository name", { name });
  }
  return name;
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

export function assertTag(tag: string): string {
  if (!isValidTag(tag)) throw new RegistryError("TAG_INVALID", "manifest tag did not match URI", { tag });
  return tag;
}

export type DigestAlgorithm = "sha256" | "sha512";

export interface ParsedDigest {
  digest: string;
  algorithm: DigestAlgorithm;
  hex: string;
}

/** Parses a digest of a supported algorithm; null when it is malformed or its algorithm unsupported. */
export function parseDigest(value: string): ParsedDigest | null {
  if (value.length > 200 || !DIGEST_RE.test(value)) return null;
  const colon = value.indexOf(":");
  const algorithm = value.slice(0, colon);
  const hex = value.slice(colon + 1);
  const re = KNOWN_DIGESTS[algorithm];
  if (!re || !re.test(hex)) return null;
  return { digest: value, algorithm: algorithm as DigestAlgorithm, hex };
}

export function assertDigest(value: string): ParsedDigest {
  const parsed = parseDigest(value);
  if (!parsed) throw new RegistryError("DIGEST_INVALID", "invalid digest", { digest: value });
  return parsed;
}

export function looksLikeDigest(reference: string): boolean {
  return reference.includes(":");
}

export type Reference = { kind: "tag"; tag: string } | { kind: "digest"; digest: ParsedDigest };

/**
 * A reference as a lookup sees it: a tag, a digest, or null when it is neither. No manifest can be stored
 * under such a reference, so GET, HEAD and DELETE answer it as they answer any unknown manifest (404
 * MANIFEST_UNKNOWN, as the distribution-spec conformance suite requires); only a PUT refuses it as invalid.
 */
export function lookupReference(reference: string): Reference | null {
  if (looksLikeDigest(reference)) {
    const digest = parseDigest(reference);
    return digest ? { kind: "digest", digest } : null;
  }
  return isValidTag(reference) ? { kind: "tag", tag: reference } : null;
}

/** A manifest reference is a tag or a digest; anything else is refused with the matching spec error. */
export function parseReference(reference: string): Reference {
  if (looksLikeDigest(reference)) return { kind: "digest", digest: assertDigest(reference) };
  return { kind: "tag", tag: assertTag(reference) };
}
