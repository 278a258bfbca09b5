import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RawResponse, rawRequest } from "../helpers/raw-http.js";
import { blobOf, RegistryClient, randomBlob } from "../helpers/registry.js";
import { type Berth, startBerth } from "../helpers/server.js";

// A client that declares Content-Length 1000, sends 100 bytes and then ends its side of the connection
// (FIN) must get the spec's error body on the half that is still open, and the upload must keep exactly
// what was acknowledged before. fetch cannot send such a request, so these go over a raw socket.
let berth: Berth;
let client: RegistryClient;

beforeAll(async () => {
  berth = await startBerth();
  client = new RegistryClient(berth.url);
});
afterAll(async () => {
  await berth?.cleanup();
});

function cutShort(method: string, target: string, extra: string[] = []): Promise<RawResponse> {
  const head = [
    `${method} ${target} HTTP/1.1`,
    `Host: ${berth.host}`,
    "Content-Type: application/octet-stream",
    "Content-Length: 1000",
    ...extra,
    "",
    "",
  ].join("\r\n");
  return rawRequest(berth.port, head, Buffer.alloc(100, 7), { halfClose: true });
}

function expectSpecError(res: RawResponse): void {
  expect(res.status).toBe(400);
  expect(res.headers["content-type"]).toMatch(/^application\/json/);
  const body = JSON.parse(res.body) as { errors: { code: string }[] };
  expect(["BLOB_UPLOAD_INVALID", "SIZE_INVALID"]).toContain(body.errors[0]!.code);
}

/** Starts an upload and acknowledges `first` bytes of `blob` with one PATCH; returns its path. */
async function uploadWithFirstChunk(name: string, blob: Buffer, first: number): Promise<string> {
  const started = await client.fetch(`/v2/${name}/blobs/uploads/`, { method: "POST" });
  expect(started.status).toBe(202);
  const location = new URL(started.headers.get("location")!, berth.url).pathname;
  const res = await client.fetch(location, {
    method: "PATCH",
    body: blob.subarray(0, first),
    headers: { "content-type": "application/octet-stream", "content-range": `0-${first - 1}` },
  });
  expect(res.status).toBe(202);
  return location;
}

async function expectRange(location: string, range: string): Promise<void> {
  const status = await client.fetch(location);
  expect(status.status).toBe(204);
  expect(status.headers.get("range")).toBe(range);
}

describe("a body that ends before its Content-Length", () => {
  it("PATCH: spec error, the upload keeps what was acknowledged and a correct PATCH continues it", async () => {
    const blob = randomBlob(500);
    const location = await uploadWithFirstChunk("early/patch", blob.data, 200);
    expectSpecError(await cutShort("PATCH", location, ["Content-Range: 200-1199"]));
    await expectRange(location, "0-199");
    expectSpecError(await cutShort("PATCH", location));
    await expectRange(location, "0-199");

    const rest = await client.fetch(location, {
      method: "PATCH",
      body: blob.data.subarray(200),
      headers: { "content-type": "application/octet-stream", "content-range": "200-499" },
    });
    expect(rest.status).toBe(202);
    expect(rest.headers.get("range")).toBe("0-499");
    const done = await client.fetch(`${location}?digest=${blob.digest}`, { method: "PUT" });
    expect(done.status).toBe(201);
    const pulled = await client.fetch(`/v2/early/patch/blobs/${blob.digest}`);
    expect(Buffer.from(await pulled.arrayBuffer()).equals(blob.data)).toBe(true);
  });

  it("PUT with a last chunk: spec error, nothing committed, the upload can still be finished", async () => {
    const blob = randomBlob(300);
    const location = await uploadWithFirstChunk("early/put", blob.data, 100);
    expectSpecError(await cutShort("PUT", `${location}?digest=${blob.digest}`, ["Content-Range: 100-1099"]));
    await expectRange(location, "0-99");
    expect((await client.fetch(`/v2/early/put/blobs/${blob.digest}`, { method: "HEAD" })).status).toBe(404);

    const done = await client.fetch(`${location}?digest=${blob.digest}`, {
      method: "PUT",
      body: blob.data.subarray(100),
      headers: { "content-type": "application/octet-stream", "content-range": "100-299" },
    });
    expect(done.status).toBe(201);
    expect((await client.fetch(`/v2/early/put/blobs/${blob.digest}`, { method: "HEAD" })).status).toBe(200);
  });

  it("POST ?digest=: spec error and no blob", async () => {
    // The digest of the 100 bytes actually sent: a server that took the short body as whole would commit it.
    const sent = blobOf(Buffer.alloc(100, 7));
    expectSpecError(await cutShort("POST", `/v2/early/post/blobs/uploads/?digest=${sent.digest}`));
    expect((await client.fetch(`/v2/early/post/blobs/${sent.digest}`, { method: "HEAD" })).status).not.toBe(
      200,
    );
    await client.pushBlob("early/post", sent);
    expect((await client.fetch(`/v2/early/post/blobs/${sent.digest}`, { method: "HEAD" })).status).toBe(200);
  });

  it("a PATCH without Content-Range whose short body would otherwise be taken as a whole chunk", async () => {
    const blob = randomBlob(400);
    const location = await uploadWithFirstChunk("early/norange", blob.data, 100);
    const head = [
      `PATCH ${location} HTTP/1.1`,
      `Host: ${berth.host}`,
      "Content-Type: application/octet-stream",
      "Transfer-Encoding: chunked",
      "",
      "",
    ].join("\r\n");
    // One complete 100-byte chunk, then FIN before the terminating zero-length chunk.
    const res = await rawRequest(
      berth.port,
      head,
      Buffer.concat([Buffer.from("64\r\n"), blob.data.subarray(100, 200), Buffer.from("\r\n")]),
      {
        halfClose: true,
      },
    );
    expectSpecError(res);
    await expectRange(location, "0-99");
  });
});
