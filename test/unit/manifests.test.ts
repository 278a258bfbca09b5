import { describe, expect, it } from "vitest";
import { parseRange } from "../../src/http/routes/v2/blobs.js";
import { parseContentRange } from "../../src/http/routes/v2/common.js";
import { parseManifest, requiredBlobs } from "../../src/registry/manifests.js";

const d = (c: string) => `sha256:${c.repeat(64)}`;
const image = (extra: object = {}) =>
  Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: d("a"), size: 2 },
      layers: [
        { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: d("b"), size: 3 },
        {
          mediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
          digest: d("c"),
          size: 4,
          urls: ["https://x"],
        },
      ],
      ...extra,
    }),
  );

describe("parseManifest", () => {
  it("infers an OCI manifest when no type is given anywhere", () => {
    const m = parseManifest(image(), undefined);
    expect(m.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
    expect(m.artifactType).toBe("application/vnd.oci.image.config.v1+json");
  });

  it("skips foreign layers with urls when listing required blobs", () => {
    expect(requiredBlobs(parseManifest(image(), undefined))).toEqual([d("a"), d("b")]);
  });

  it("refuses a body whose mediaType contradicts Content-Type", () => {
    expect(() =>
      parseManifest(
        image({ mediaType: "application/vnd.oci.image.manifest.v1+json" }),
        "application/vnd.docker.distribution.manifest.v2+json",
      ),
    ).toThrow(/does not match/);
  });

  it("refuses schema1, wrong schemaVersion, bad descriptors", () => {
    expect(() => parseManifest(Buffer.from('{"schemaVersion":1}'), undefined)).toThrow(/schema1/);
    expect(() => parseManifest(Buffer.from('{"schemaVersion":3}'), undefined)).toThrow(/schemaVersion/);
    expect(() =>
      parseManifest(image({ layers: [{ digest: d("b"), size: -1, mediaType: "x" }] }), undefined),
    ).toThrow(/size/);
    expect(() => parseManifest(image({ layers: "no" }), undefined)).toThrow(/list/);
  });

  it("reads subject and artifactType of an index", () => {
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.index.v1+json",
        artifactType: "application/x.example",
        manifests: [],
        subject: { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: d("e"), size: 9 },
      }),
    );
    const m = parseManifest(index, "application/vnd.oci.image.index.v1+json");
    expect(m.kind).toBe("index");
    expect(m.subject?.digest).toBe(d("e"));
    expect(m.artifactType).toBe("application/x.example");
  });
});

describe("ranges", () => {
  it("parses blob Range headers", () => {
    expect(parseRange("bytes=0-9", 100)).toEqual({ start: 0, end: 9 });
    expect(parseRange("bytes=90-200", 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange("bytes=-10", 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange("bytes=100-", 100)).toBe("unsatisfiable");
    expect(parseRange("bytes=5-2", 100)).toBe("unsatisfiable");
    expect(parseRange("bytes=0-1,5-6", 100)).toBeUndefined();
    expect(parseRange(undefined, 100)).toBeUndefined();
  });

  it("parses chunk Content-Range in the spec's and the HTTP form", () => {
    expect(parseContentRange("0-99")).toEqual({ start: 0, end: 99 });
    expect(parseContentRange("bytes 100-199/*")).toEqual({ start: 100, end: 199 });
    expect(parseContentRange("nonsense")).toBeNull();
    expect(parseContentRange(undefined)).toBeUndefined();
  });
});
