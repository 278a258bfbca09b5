import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  blobOf,
  DOCKER_LIST,
  DOCKER_MANIFEST,
  errorCode,
  OCI_INDEX,
  OCI_MANIFEST,
  RegistryClient,
  randomBlob,
  sha256,
} from "../helpers/registry.js";
import { type Berth, startBerth } from "../helpers/server.js";

let berth: Berth;
let client: RegistryClient;

beforeAll(async () => {
  berth = await startBerth({ env: { REGISTRY_STORAGE_DELETE_ENABLED: "true" } });
  client = new RegistryClient(berth.url);
});
afterAll(async () => {
  await berth?.cleanup();
});

describe("manifests", () => {
  it("stores and serves an OCI manifest byte-for-byte by tag and digest", async () => {
    const img = await client.pushImage("m/oci", "v1");
    for (const ref of ["v1", img.digest]) {
      const res = await client.fetch(`/v2/m/oci/manifests/${ref}`, { headers: { accept: OCI_MANIFEST } });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe(OCI_MANIFEST);
      expect(res.headers.get("docker-content-digest")).toBe(img.digest);
      expect(Buffer.from(await res.arrayBuffer()).equals(img.manifest)).toBe(true);
      const head = await client.fetch(`/v2/m/oci/manifests/${ref}`, {
        method: "HEAD",
        headers: { accept: OCI_MANIFEST },
      });
      expect(head.status).toBe(200);
      expect(head.headers.get("content-length")).toBe(String(img.manifest.length));
      expect(head.headers.get("docker-content-digest")).toBe(img.digest);
    }
  });

  it("keeps the exact bytes and media type of a Docker schema2 manifest", async () => {
    const layer = randomBlob(100);
    const config = blobOf('{"os":"linux"}');
    await client.pushBlob("m/docker", layer);
    await client.pushBlob("m/docker", config);
    // Odd spacing on purpose: bytes must come back exactly as pushed.
    const body = Buffer.from(
      `{\n   "schemaVersion": 2,\n   "mediaType": "${DOCKER_MANIFEST}",\n   "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": ${config.size}, "digest": "${config.digest}"},\n   "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": ${layer.size}, "digest": "${layer.digest}"}]\n}`,
    );
    const put = await client.putManifest("m/docker", "latest", body, DOCKER_MANIFEST);
    expect(put.status).toBe(201);
    expect(put.headers.get("docker-content-digest")).toBe(sha256(body));
    const get = await client.fetch("/v2/m/docker/manifests/latest", {
      headers: { accept: `${DOCKER_MANIFEST}, ${OCI_MANIFEST}` },
    });
    expect(get.headers.get("content-type")).toBe(DOCKER_MANIFEST);
    expect(Buffer.from(await get.arrayBuffer()).equals(body)).toBe(true);
  });

  it("refuses schema1 with MANIFEST_INVALID and says why", async () => {
    const res = await client.putManifest(
      "m/s1",
      "old",
      { schemaVersion: 1, name: "m/s1", tag: "old", fsLayers: [] },
      "application/vnd.docker.distribution.manifest.v1+prettyjws",
    );
    expect(res.status).toBe(400);
    const body = (await res.json()) as { errors: { code: string; message: string }[] };
    expect(body.errors[0]!.code).toBe("MANIFEST_INVALID");
    expect(body.errors[0]!.message).toMatch(/schema1/);
  });

  it("refuses malformed manifests and changes nothing", async () => {
    for (const body of [
      Buffer.from("not json"),
      Buffer.from("[]"),
      Buffer.from('{"schemaVersion":2,"config":{"digest":"nope"}}'),
    ]) {
      const res = await client.putManifest("m/bad", "t", body);
      expect(res.status).toBe(400);
      expect(await errorCode(res)).toBe("MANIFEST_INVALID");
    }
    expect((await client.fetch("/v2/m/bad/manifests/t")).status).toBe(404);
  });

  it("requires every referenced blob in the repository (MANIFEST_BLOB_UNKNOWN)", async () => {
    const layer = randomBlob(10);
    await client.pushBlob("m/elsewhere", layer);
    const config = blobOf("{}");
    await client.pushBlob("m/needs", config);
    const manifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: {
        mediaType: "application/vnd.oci.image.config.v1+json",
        digest: config.digest,
        size: config.size,
      },
      layers: [
        { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layer.digest, size: layer.size },
      ],
    };
    const res = await client.putManifest("m/needs", "v1", manifest);
    expect(res.status).toBe(400);
    expect(await errorCode(res)).toBe("MANIFEST_BLOB_UNKNOWN");
    expect((await client.fetch("/v2/m/needs/manifests/v1")).status).toBe(404);
  });

  it("takes OCI indexes and Docker manifest lists whose children exist, and refuses missing children", async () => {
    const amd = await client.pushImage("m/multi", "amd64");
    const arm = await client.pushImage("m/multi", "arm64", {
      config: { architecture: "arm64", os: "linux" },
    });
    for (const mediaType of [OCI_INDEX, DOCKER_LIST]) {
      const childType = mediaType === OCI_INDEX ? OCI_MANIFEST : DOCKER_MANIFEST;
      const index = {
        schemaVersion: 2,
        mediaType,
        manifests: [
          {
            mediaType: childType,
            digest: amd.digest,
            size: amd.manifest.length,
            platform: { os: "linux", architecture: "amd64" },
          },
          {
            mediaType: childType,
            digest: arm.digest,
            size: arm.manifest.length,
            platform: { os: "linux", architecture: "arm64" },
          },
        ],
      };
      const put = await client.putManifest(
        "m/multi",
        mediaType === OCI_INDEX ? "oci" : "list",
        index,
        mediaType,
      );
      expect(put.status).toBe(201);
      const get = await client.fetch(`/v2/m/multi/manifests/${mediaType === OCI_INDEX ? "oci" : "list"}`, {
        headers: { accept: mediaType },
      });
      expect(get.headers.get("content-type")).toBe(mediaType);
    }
    const missing = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: sha256("absent"), size: 10 }],
    };
    const res = await client.putManifest("m/multi", "broken", missing, OCI_INDEX);
    expect(res.status).toBe(400);
    expect(await errorCode(res)).toBe("MANIFEST_BLOB_UNKNOWN");
  });

  it("negotiates with Accept: an index is not served to a client that does not take indexes", async () => {
    const img = await client.pushImage("m/accept", "x");
    const index = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        {
          mediaType: OCI_MANIFEST,
          digest: img.digest,
          size: img.manifest.length,
          platform: { os: "linux", architecture: "amd64" },
        },
      ],
    };
    await client.putManifest("m/accept", "idx", index, OCI_INDEX);
    const asChild = await client.fetch("/v2/m/accept/manifests/idx", { headers: { accept: OCI_MANIFEST } });
    expect(asChild.status).toBe(200);
    expect(asChild.headers.get("docker-content-digest")).toBe(img.digest);
    const refused = await client.fetch("/v2/m/accept/manifests/x", { headers: { accept: DOCKER_MANIFEST } });
    expect(refused.status).toBe(404);
    const anything = await client.fetch("/v2/m/accept/manifests/idx", { headers: { accept: "*/*" } });
    expect(anything.headers.get("content-type")).toBe(OCI_INDEX);
  });

  it("verifies a PUT by digest", async () => {
    const img = await client.pushImage("m/bydigest", "seed");
    const ok = await client.putManifest("m/bydigest", img.digest, img.manifest);
    expect(ok.status).toBe(201);
    const wrong = await client.putManifest("m/bydigest", sha256("other"), img.manifest);
    expect(wrong.status).toBe(400);
    expect(await errorCode(wrong)).toBe("DIGEST_INVALID");
  });

  it("applies several tags in one PUT and answers with OCI-Tag", async () => {
    const img = await client.pushImage("m/tags", "first");
    const res = await client.fetch(`/v2/m/tags/manifests/${img.digest}?tag=a&tag=b&tag=c`, {
      method: "PUT",
      body: img.manifest,
      headers: { "content-type": OCI_MANIFEST },
    });
    expect(res.status).toBe(201);
    expect(res.headers.get("oci-tag")).toBe("a, b, c");
    const list = await (await client.fetch("/v2/m/tags/tags/list")).json();
    expect(list).toEqual({ name: "m/tags", tags: ["a", "b", "c", "first"] });
  });

  it("accepts a 4 MiB manifest and refuses a larger one with 413", async () => {
    const img = await client.pushImage("m/big", "seed");
    const base = JSON.parse(img.manifest.toString()) as Record<string, unknown>;
    const pad = (target: number) => {
      const m = { ...base, annotations: { pad: "" } };
      const overhead = Buffer.byteLength(JSON.stringify(m));
      (m.annotations as Record<string, string>).pad = "x".repeat(target - overhead);
      return Buffer.from(JSON.stringify(m));
    };
    const fits = pad(4 * 1024 * 1024);
    expect(fits.length).toBe(4 * 1024 * 1024);
    expect((await client.putManifest("m/big", "fits", fits)).status).toBe(201);
    const tooBig = pad(4 * 1024 * 1024 + 1);
    expect((await client.putManifest("m/big", "toobig", tooBig)).status).toBe(413);
    expect((await client.fetch("/v2/m/big/manifests/toobig")).status).toBe(404);
  });

  it("refuses invalid tags and digests with 400", async () => {
    const img = await client.pushImage("m/refs", "ok");
    expect((await client.putManifest("m/refs", ".dot", img.manifest)).status).toBe(400);
    expect((await client.putManifest("m/refs", "x".repeat(129), img.manifest)).status).toBe(400);
    const badTag = await client.fetch(`/v2/m/refs/manifests/${img.digest}?tag=-bad`, {
      method: "PUT",
      body: img.manifest,
      headers: { "content-type": OCI_MANIFEST },
    });
    expect(badTag.status).toBe(400);
  });

  it("answers GET, HEAD and DELETE by a reference that is neither tag nor digest with 404 MANIFEST_UNKNOWN", async () => {
    const img = await client.pushImage("m/badref", "ok");
    for (const ref of [".INVALID_MANIFEST_NAME", "sha256:zz", "x".repeat(129), "md5:0123"]) {
      const get = await client.fetch(`/v2/m/badref/manifests/${ref}`);
      expect(get.status, ref).toBe(404);
      expect(await errorCode(get)).toBe("MANIFEST_UNKNOWN");
      const head = await client.fetch(`/v2/m/badref/manifests/${ref}`, { method: "HEAD" });
      expect(head.status, ref).toBe(404);
      const del = await client.fetch(`/v2/m/badref/manifests/${ref}`, { method: "DELETE" });
      expect(del.status, ref).toBe(404);
      expect(await errorCode(del)).toBe("MANIFEST_UNKNOWN");
    }
    // A PUT still says what is wrong with the reference; a bad name is still NAME_INVALID.
    const put = await client.putManifest("m/badref", ".INVALID_MANIFEST_NAME", img.manifest);
    expect(put.status).toBe(400);
    expect(await errorCode(put)).toBe("TAG_INVALID");
    const badName = await client.fetch("/v2/M/BadRef/manifests/.INVALID_MANIFEST_NAME");
    expect(badName.status).toBe(400);
    expect(await errorCode(badName)).toBe("NAME_INVALID");
    expect((await client.fetch("/v2/m/badref/manifests/ok")).status).toBe(200);
  });

  it("deletes a tag alone, or a manifest with all its tags", async () => {
    const img = await client.pushImage("m/del", "one");
    await client.putManifest("m/del", "two", img.manifest);
    expect((await client.fetch("/v2/m/del/manifests/one", { method: "DELETE" })).status).toBe(202);
    expect((await client.fetch("/v2/m/del/manifests/one")).status).toBe(404);
    expect((await client.fetch("/v2/m/del/manifests/two")).status).toBe(200);
    expect((await client.fetch(`/v2/m/del/manifests/${img.digest}`, { method: "DELETE" })).status).toBe(202);
    expect((await client.fetch("/v2/m/del/manifests/two")).status).toBe(404);
    expect((await client.fetch(`/v2/m/del/manifests/${img.digest}`)).status).toBe(404);
    expect(await (await client.fetch("/v2/m/del/tags/list")).json()).toEqual({ name: "m/del", tags: [] });
    const again = await client.fetch(`/v2/m/del/manifests/${img.digest}`, { method: "DELETE" });
    expect(again.status).toBe(404);
    expect(await errorCode(again)).toBe("MANIFEST_UNKNOWN");
  });
});

describe("listings", () => {
  it("pages tags in lexical order with Link headers", async () => {
    const img = await client.pushImage("l/tags", "seed");
    const tags = ["b", "a", "c10", "c2", "Z", "d"];
    for (const t of tags) await client.putManifest("l/tags", t, img.manifest);
    const all = (await (await client.fetch("/v2/l/tags/tags/list")).json()) as { tags: string[] };
    expect(all.tags).toEqual(["Z", "a", "b", "c10", "c2", "d", "seed"]);
    const first = await client.fetch("/v2/l/tags/tags/list?n=3");
    expect(((await first.json()) as { tags: string[] }).tags).toEqual(["Z", "a", "b"]);
    expect(first.headers.get("link")).toBe('</v2/l/tags/tags/list?n=3&last=b>; rel="next"');
    const second = await client.fetch("/v2/l/tags/tags/list?n=3&last=b");
    expect(((await second.json()) as { tags: string[] }).tags).toEqual(["c10", "c2", "d"]);
    const third = await client.fetch("/v2/l/tags/tags/list?n=3&last=d");
    expect(((await third.json()) as { tags: string[] }).tags).toEqual(["seed"]);
    expect(third.headers.get("link")).toBeNull();
    expect((await client.fetch("/v2/l/tags/tags/list?n=-1")).status).toBe(400);
  });

  it("pages the catalog with Link headers and lists only repositories with manifests", async () => {
    for (const name of ["cat/c", "cat/a", "cat/b"]) await client.pushImage(name, "v1");
    await client.pushBlob("cat/blobonly", randomBlob(5));
    const all = (await (await client.fetch("/v2/_catalog?n=1000")).json()) as { repositories: string[] };
    const cats = all.repositories.filter((r) => r.startsWith("cat/"));
    expect(cats).toEqual(["cat/a", "cat/b", "cat/c"]);
    const page = await client.fetch("/v2/_catalog?n=2&last=cat/");
    expect(((await page.json()) as { repositories: string[] }).repositories).toEqual(["cat/a", "cat/b"]);
    expect(page.headers.get("link")).toBe('</v2/_catalog?n=2&last=cat%2Fb>; rel="next"');
  });
});

describe("referrers", () => {
  it("lists manifests whose subject is a digest, with the artifactType filter", async () => {
    const img = await client.pushImage("r/app", "v1");
    const subject = { mediaType: OCI_MANIFEST, digest: img.digest, size: img.manifest.length };
    const empty = blobOf("{}");
    await client.pushBlob("r/app", empty);
    const pushArtifact = async (artifactType: string, annotations: Record<string, string>) => {
      const body = {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType,
        config: { mediaType: "application/vnd.oci.empty.v1+json", digest: empty.digest, size: empty.size },
        layers: [{ mediaType: "application/vnd.oci.empty.v1+json", digest: empty.digest, size: empty.size }],
        subject,
        annotations,
      };
      const buf = Buffer.from(JSON.stringify(body));
      const res = await client.putManifest("r/app", sha256(buf), buf);
      expect(res.status).toBe(201);
      expect(res.headers.get("oci-subject")).toBe(img.digest);
      return sha256(buf);
    };
    const sig = await pushArtifact("application/vnd.example.signature", { "org.example.kind": "sig" });
    const sbom = await pushArtifact("application/spdx+json", { "org.example.kind": "sbom" });
    const res = await client.fetch(`/v2/r/app/referrers/${img.digest}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe(OCI_INDEX);
    const index = (await res.json()) as {
      manifests: { digest: string; artifactType: string; annotations: Record<string, string> }[];
    };
    expect(index.manifests.map((m) => m.digest).sort()).toEqual([sig, sbom].sort());
    expect(index.manifests.find((m) => m.digest === sbom)?.annotations).toEqual({
      "org.example.kind": "sbom",
    });
    const filtered = await client.fetch(
      `/v2/r/app/referrers/${img.digest}?artifactType=application/spdx%2Bjson`,
    );
    expect(filtered.headers.get("oci-filters-applied")).toBe("artifactType");
    expect(
      ((await filtered.json()) as { manifests: { digest: string }[] }).manifests.map((m) => m.digest),
    ).toEqual([sbom]);
  });

  it("accepts a referrer before its subject exists, and never answers 404", async () => {
    const subjectDigest = sha256("subject pushed later");
    const empty = blobOf("{}");
    await client.pushBlob("r/early", empty);
    const body = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: "application/vnd.example.early",
        config: { mediaType: "application/vnd.oci.empty.v1+json", digest: empty.digest, size: empty.size },
        layers: [],
        subject: { mediaType: OCI_MANIFEST, digest: subjectDigest, size: 100 },
      }),
    );
    const put = await client.putManifest("r/early", sha256(body), body);
    expect(put.status).toBe(201);
    expect(put.headers.get("oci-subject")).toBe(subjectDigest);
    const list = (await (await client.fetch(`/v2/r/early/referrers/${subjectDigest}`)).json()) as {
      manifests: unknown[];
    };
    expect(list.manifests).toHaveLength(1);
    const none = await client.fetch(`/v2/r/nothing/referrers/${subjectDigest}`);
    expect(none.status).toBe(200);
    expect(((await none.json()) as { manifests: unknown[] }).manifests).toEqual([]);
    expect((await client.fetch("/v2/r/early/referrers/sha256:nothex")).status).toBe(400);
  });
});

describe("delete switched off", () => {
  it("answers every delete with 405 UNSUPPORTED", async () => {
    const off = await startBerth({ env: { REGISTRY_STORAGE_DELETE_ENABLED: "false" } });
    try {
      const c = new RegistryClient(off.url);
      const img = await c.pushImage("nodel/app", "v1");
      for (const path of [
        "/v2/nodel/app/manifests/v1",
        `/v2/nodel/app/manifests/${img.digest}`,
        `/v2/nodel/app/blobs/${img.config.digest}`,
      ]) {
        const res = await c.fetch(path, { method: "DELETE" });
        expect(res.status).toBe(405);
        expect(await errorCode(res)).toBe("UNSUPPORTED");
      }
      expect((await c.fetch("/v2/nodel/app/manifests/v1")).status).toBe(200);
    } finally {
      await off.cleanup();
    }
  });
});
