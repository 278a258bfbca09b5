import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rawRequest } from "../helpers/raw-http.js";
import { RegistryClient, randomBlob } from "../helpers/registry.js";
import { type Berth, startBerth } from "../helpers/server.js";

// RFC 9112 §3.2.2: some proxies send the whole URL as the request target. Berth must route those
// exactly like origin-form targets (fetch always sends origin form, so these go over a raw socket).
let berth: Berth;
let client: RegistryClient;
let image: Awaited<ReturnType<RegistryClient["pushImage"]>>;

beforeAll(async () => {
  berth = await startBerth();
  client = new RegistryClient(berth.url);
  image = await client.pushImage("abs/app", "v1");
});
afterAll(async () => {
  await berth?.cleanup();
});

function request(method: string, target: string, extra: string[] = []): string {
  return [`${method} ${target} HTTP/1.1`, `Host: ${berth.host}`, "Connection: close", ...extra, "", ""].join(
    "\r\n",
  );
}

describe("absolute-form request targets", () => {
  it("serves the base endpoint, tags, manifests and blobs", async () => {
    const base = await rawRequest(berth.port, request("GET", `http://${berth.host}/v2/`));
    expect(base.status).toBe(200);
    expect(base.headers["docker-distribution-api-version"]).toBe("registry/2.0");

    const tags = await rawRequest(berth.port, request("GET", `http://${berth.host}/v2/abs/app/tags/list`));
    expect(tags.status).toBe(200);
    expect(JSON.parse(tags.body)).toEqual({ name: "abs/app", tags: ["v1"] });

    const paged = await rawRequest(
      berth.port,
      request("GET", `http://${berth.host}/v2/abs/app/tags/list?n=1`),
    );
    expect(paged.status).toBe(200);

    const manifest = await rawRequest(
      berth.port,
      request("GET", `http://${berth.host}/v2/abs/app/manifests/v1`, [
        "Accept: application/vnd.oci.image.manifest.v1+json",
      ]),
    );
    expect(manifest.status).toBe(200);
    expect(manifest.headers["docker-content-digest"]).toBe(image.digest);

    const blob = await rawRequest(
      berth.port,
      request("HEAD", `http://${berth.host}/v2/abs/app/blobs/${image.layers[0]!.digest}`),
    );
    expect(blob.status).toBe(200);
    expect(blob.headers["content-length"]).toBe(String(image.layers[0]!.size));

    const unknown = await rawRequest(
      berth.port,
      request("GET", `http://${berth.host}/v2/abs/nothing/tags/list`),
    );
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.body).errors[0].code).toBe("NAME_UNKNOWN");
  });

  it("starts and continues uploads, with Locations on the host the target named", async () => {
    // The target's authority wins over the Host header (RFC 9112 §3.2.2).
    const authority = `localhost:${berth.port}`;
    const started = await rawRequest(
      berth.port,
      request("POST", `http://${authority}/v2/abs/app/blobs/uploads/`, ["Content-Length: 0"]),
    );
    expect(started.status).toBe(202);
    const location = started.headers.location!;
    expect(location).toMatch(new RegExp(`^http://${authority}/v2/abs/app/blobs/uploads/[0-9a-f-]+$`));

    const blob = randomBlob(300);
    const patched = await rawRequest(
      berth.port,
      request("PATCH", location, [
        "Content-Type: application/octet-stream",
        `Content-Length: ${blob.size}`,
        `Content-Range: 0-${blob.size - 1}`,
      ]),
      blob.data,
    );
    expect(patched.status).toBe(202);
    expect(patched.headers.range).toBe(`0-${blob.size - 1}`);
    expect(patched.headers.location).toBe(location);

    const put = await rawRequest(
      berth.port,
      request("PUT", `${location}?digest=${blob.digest}`, ["Content-Length: 0"]),
    );
    expect(put.status).toBe(201);
    expect((await client.fetch(`/v2/abs/app/blobs/${blob.digest}`)).status).toBe(200);
  });
});
