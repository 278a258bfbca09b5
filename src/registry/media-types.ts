export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json";
export const DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws";
export const OCI_EMPTY_CONFIG = "application/vnd.oci.empty.v1+json";

export const IMAGE_MANIFEST_TYPES = new Set([OCI_MANIFEST, DOCKER_MANIFEST]);
export const INDEX_TYPES = new Set([OCI_INDEX, DOCKER_MANIFEST_LIST]);
export const MANIFEST_TYPES = new Set([...IMAGE_MANIFEST_TYPES, ...INDEX_TYPES]);

/** Layers that registries are not asked to hold (they come from `urls`). */
export function isForeignLayer(mediaType: string): boolean {
  return (
    mediaType === "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" ||
    mediaType.startsWith("application/vnd.oci.image.layer.nondistributable.")
  );
}

/** "type/subtype; charset=..." -> "type/subtype", lower-cased. */
export function baseMediaType(value: string | undefined): string {
  if (!value) return "";
  const semi = value.indexOf(";");
  return (semi >= 0 ? value.slice(0, semi) : value).trim().toLowerCase();
}
