/**
 * A final PUT sent again (issue 20): nginx's default `proxy_next_upstream error` resends an idempotent
 * request that a dead upstream cut off, so a single-request upload whose replica was killed in its commit
 * reaches another replica with the same body. Each state such a death can leave is made here exactly:
 * - the row records all the bytes and their digest (as the commit does before it moves them, and as a
 *   PATCH of the whole blob does), and the same PUT comes with the whole body;
 * - the commit finished (the row is gone, the blob linked), and the same PUT comes again.
 * Both answer 201 with the blob as it is; a body that is not the blob again is answered with where the
 * upload stands, and the upload is kept. The state with the bytes moved into place is in
 * commit-window.test.ts; kill -9 through nginx in replicas-resend.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryClient, randomBlob } from "../helpers/registry.js";
import { type Berth, startBerth } from "../helpers/server.js";

describe("a final PUT resent with its body", () => {
  let berth: Berth;
  let client: RegistryClient;
  beforeAll(async () => {
    berth = await startBerth();
    client = new RegistryClient(berth.url);
  });
  afterAll(async () => {
    await berth?.cleanup();
  });

  /** A new upload that holds all of `blob`, its size and digest recorded, not yet committed. */
  async function completeButUncommitted(repo: string, blob: { data: Buffer; size: number }) {
    const post = await client.fetch(`/v2/${repo}/blobs/uploads/`, { method: "POST" });
    expect(post.status).toBe(202);
    const location = new URL(post.headers.get("location")!, berth.url).pathname;
    const patch = await client.fetch(location, {
      method: "PATCH",
      body: blob.data,
      headers: { "content-type": "application/octet-stream", "content-range": `0-${blob.size - 1}` },
    });
    expect(patch.status).toBe(202);
    return location;
  }

  const put = (location: string, digest: string, body?: Buffer) =>
    client.fetch(`${location}?digest=${digest}`, {
      method: "PUT",
      ...(body ? { body, headers: { "content-type": "application/octet-stream" } } : {}),
    });

  it("commits an upload that holds the whole blob already when the whole body comes again, and answers the same PUT after the commit", async () => {
    const blob = randomBlob(3 * 1024 * 1024 + 17);
    const location = await completeButUncommitted("resend/app", blob);
    const first = await put(location, blob.digest, blob.data);
    expect(first.status, await first.clone().text()).toBe(201);
    expect(first.headers.get("docker-content-digest")).toBe(blob.digest);
    const again = await put(location, blob.digest, blob.data);
    expect(again.status, await again.clone().text()).toBe(201);
    expect(again.headers.get("docker-content-digest")).toBe(blob.digest);
    const got = await client.fetch(`/v2/resend/app/blobs/${blob.digest}`);
    expect(got.status).toBe(200);
    expect(Buffer.from(await got.arrayBuffer()).equals(blob.data)).toBe(true);
    // A finished upload is still unknown to anything but its own PUT with its own bytes.
    expect((await put(location, blob.digest)).status).toBe(404);
    expect((await put(location, blob.digest, randomBlob(blob.size).data)).status).toBe(404);
    expect((await client.fetch(location)).status).toBe(404);
  });

  it("answers a body that is not the blob again with where the upload stands, and keeps the upload", async () => {
    const blob = randomBlob(200_000);
    const location = await completeButUncommitted("resend/other", blob);
    const wrong = await put(location, blob.digest, randomBlob(blob.size).data);
    expect(wrong.status, await wrong.clone().text()).toBe(416);
    expect(wrong.headers.get("range")).toBe(`0-${blob.size - 1}`);
    const tail = await put(location, blob.digest, blob.data.subarray(0, 1000));
    expect(tail.status).toBe(416);
    const status = await client.fetch(location);
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe(`0-${blob.size - 1}`);
    const done = await put(location, blob.digest);
    expect(done.status).toBe(201);
  });
});
