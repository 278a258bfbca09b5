import { describe, expect, test } from "vitest";
import type { GraphManifest, RepositoryGraph } from "../../src/metadata/gc-queries.js";
import { keptManifests, manifestBatches, planManifestRemoval } from "../../src/registry/gc.js";

const CUTOFF = 1000;

function graph(nodes: Partial<GraphManifest & { children: string[] }>[]): RepositoryGraph {
  const manifests = new Map<string, GraphManifest>();
  const children = new Map<string, string[]>();
  for (const n of nodes) {
    manifests.set(n.digest!, {
      digest: n.digest!,
      subject: n.subject ?? null,
      size: 1,
      mediaType: "x",
      freshAt: n.freshAt ?? 0,
      pulledAt: null,
      tags: n.tags ?? [],
    });
    if (n.children) children.set(n.digest!, n.children);
  }
  return { manifests, children };
}

describe("which manifests are kept", () => {
  const g = graph([
    { digest: "idx", tags: ["latest"], children: ["c1", "c2"] },
    { digest: "c1" },
    { digest: "c2" },
    { digest: "sig-of-c1", subject: "c1" },
    { digest: "sig-of-sig", subject: "sig-of-c1" },
    { digest: "loose" },
    { digest: "sig-of-loose", subject: "loose" },
    { digest: "young", freshAt: 2000 },
    { digest: "sbom-tagged", tags: ["sbom"], subject: "held-subject" },
    { digest: "held-subject" },
    { digest: "dangling-ref", subject: "missing" },
    { digest: "old-idx", children: ["c2", "orphan-child"] },
    { digest: "orphan-child" },
  ]);

  test("tags, youth, index children, referrers and subjects of kept referrers", () => {
    expect([...keptManifests(g, CUTOFF)].sort()).toEqual(
      ["c1", "c2", "held-subject", "idx", "sbom-tagged", "sig-of-c1", "sig-of-sig", "young"].sort(),
    );
  });

  test("the plan, and the part reachable from a given start (retention)", () => {
    const all = planManifestRemoval(g, CUTOFF);
    expect([...all.digests].sort()).toEqual([
      "dangling-ref",
      "loose",
      "old-idx",
      "orphan-child",
      "sig-of-loose",
    ]);
    expect(all.reason("sig-of-loose", "untagged")).toBe("referrer of loose, which goes");
    expect(all.reason("orphan-child", "untagged")).toBe("child of index old-idx, which goes");
    const fromLoose = planManifestRemoval(g, CUTOFF, new Set(["loose"]));
    expect([...fromLoose.digests].sort()).toEqual(["loose", "sig-of-loose"]);
  });

  test("batches keep related manifests together", () => {
    const remove = planManifestRemoval(g, CUTOFF).digests;
    const batches = manifestBatches(g, remove, 2);
    const where = new Map<string, number>();
    for (const [i, b] of batches.entries()) for (const d of b) where.set(d, i);
    expect(where.get("loose")).toBe(where.get("sig-of-loose"));
    expect(where.get("old-idx")).toBe(where.get("orphan-child"));
    expect(batches.flat().sort()).toEqual([...remove].sort());
    for (const b of batches) expect(b.length).toBeLessThanOrEqual(2);
  });
});
