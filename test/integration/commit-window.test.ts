/**
 * The commit window: a crash (kill -9) after an upload's bytes were moved to their blob path and before the
 * commit's transaction. The state such a crash leaves is made exactly, by hand, in a stopped server's data
 * directory: the upload's row still there, recording all its bytes and their digest, its file moved to the
 * content-addressed path, no blob row. Then status and the final PUT must agree, and the PUT must succeed;
 * the collector and the upload purger must neither lose those bytes nor break on that state.
 */
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { RegistryClient, randomBlob } from "../helpers/registry.js";
import { type Berth, startBerth, tempDir } from "../helpers/server.js";
import { berthJson } from "./gc-helpers.js";

const dirs: string[] = [];
const started: Berth[] = [];
afterEach(async () => {
  for (const b of started.splice(0)) await b.stop().catch(() => {});
  for (const d of dirs.splice(0)) await fs.rm(d, { recursive: true, force: true });
});

async function start(dataDir: string): Promise<{ berth: Berth; client: RegistryClient }> {
  const berth = await startBerth({ dataDir });
  started.push(berth);
  return { berth, client: new RegistryClient(berth.url) };
}

function blobFile(dataDir: string, digest: string): string {
  const hex = digest.slice("sha256:".length);
  return path.join(dataDir, "docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data");
}

/** Pushes all of `blob` into a new upload with PATCH and stops the server before the final PUT. */
async function uploadAllBytesThenStop(dataDir: string, name: string, size = 64 * 1024) {
  const { berth, client } = await start(dataDir);
  const blob = randomBlob(size);
  const post = await client.fetch(`/v2/${name}/blobs/uploads/`, { method: "POST" });
  const location = new URL(post.headers.get("location")!).pathname;
  const id = location.slice(location.lastIndexOf("/") + 1);
  const patch = await client.fetch(location, {
    method: "PATCH",
    body: blob.data,
    headers: { "content-type": "application/octet-stream", "content-range": `0-${blob.size - 1}` },
  });
  expect(patch.status).toBe(202);
  await berth.stop();
  started.splice(started.indexOf(berth), 1);
  return { blob, location, id };
}

/** What a crash between the commit's rename and its transaction leaves: the upload file at the blob path. */
async function moveUploadIntoPlace(dataDir: string, id: string, digest: string): Promise<void> {
  const target = blobFile(dataDir, digest);
  await fs.mkdir(path.dirname(target), { recursive: true });
  await fs.rename(path.join(dataDir, "berth/uploads", id), target);
  // Older than any grace period the collector below is given.
  const old = new Date(Date.now() - 3_600_000);
  await fs.utimes(target, old, old);
}

describe("a crash inside the commit window", () => {
  it("leaves an upload that status reports whole and the final PUT completes, even after a collection", async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const { blob, location, id } = await uploadAllBytesThenStop(dataDir, "crash/app");
    await moveUploadIntoPlace(dataDir, id, blob.digest);

    // The collector, run while the server is down, must not take the bytes as an orphan file.
    const report = await berthJson<{ orphans: { digest: string }[] }>([
      "gc",
      "--data-dir",
      dataDir,
      "--grace-period",
      "0s",
    ]);
    expect(report.orphans.map((o) => o.digest)).not.toContain(blob.digest);
    expect(existsSync(blobFile(dataDir, blob.digest))).toBe(true);

    const { client } = await start(dataDir);
    const status = await client.fetch(location);
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe(`0-${blob.size - 1}`);
    // More bytes cannot go into a complete upload whose file is gone; the upload stays.
    const more = await client.fetch(location, {
      method: "PATCH",
      body: Buffer.from("x"),
      headers: { "content-type": "application/octet-stream", "content-range": `${blob.size}-${blob.size}` },
    });
    expect(more.status).toBe(416);
    expect(more.headers.get("range")).toBe(`0-${blob.size - 1}`);

    const put = await client.fetch(`${location}?digest=${blob.digest}`, { method: "PUT" });
    expect(put.status).toBe(201);
    const pulled = await client.fetch(`/v2/crash/app/blobs/${blob.digest}`);
    expect(pulled.status).toBe(200);
    expect(Buffer.from(await pulled.arrayBuffer()).equals(blob.data)).toBe(true);

    // Done: the upload is unknown everywhere now.
    expect((await client.fetch(location)).status).toBe(404);
    expect((await client.fetch(`${location}?digest=${blob.digest}`, { method: "PUT" })).status).toBe(404);
  });

  it("completes the upload when the final PUT that carried the whole blob comes again (a proxy's resend)", async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const { blob, location, id } = await uploadAllBytesThenStop(dataDir, "crash/resent");
    await moveUploadIntoPlace(dataDir, id, blob.digest);
    const { client } = await start(dataDir);
    const resend = () =>
      client.fetch(`${location}?digest=${blob.digest}`, {
        method: "PUT",
        body: blob.data,
        headers: { "content-type": "application/octet-stream" },
      });
    const put = await resend();
    expect(put.status, await put.clone().text()).toBe(201);
    expect(put.headers.get("docker-content-digest")).toBe(blob.digest);
    // And once more, after the commit: the same answer.
    expect((await resend()).status).toBe(201);
    const pulled = await client.fetch(`/v2/crash/resent/blobs/${blob.digest}`);
    expect(Buffer.from(await pulled.arrayBuffer()).equals(blob.data)).toBe(true);
  });

  it("purging the interrupted upload leaves status and PUT agreeing that it is gone", async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const { blob, location, id } = await uploadAllBytesThenStop(dataDir, "crash/purged");
    await moveUploadIntoPlace(dataDir, id, blob.digest);
    const env = { REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE: "1ms" };
    await new Promise((r) => setTimeout(r, 20));
    const purge = await berthJson<{ uploads: { id: string }[] }>(
      ["gc", "--data-dir", dataDir, "--grace-period", "0s"],
      env,
    );
    expect(purge.uploads.map((u) => u.id)).toContain(id);
    // With the session gone nothing names those bytes: the next collection may take them.
    const again = await berthJson<{ orphans: { digest: string }[] }>(
      ["gc", "--data-dir", dataDir, "--grace-period", "0s"],
      env,
    );
    expect(again.orphans.map((o) => o.digest)).toContain(blob.digest);

    const { client } = await start(dataDir);
    expect((await client.fetch(location)).status).toBe(404);
    expect((await client.fetch(`${location}?digest=${blob.digest}`, { method: "PUT" })).status).toBe(404);
  });

  it("an upload whose file is gone and whose bytes are nowhere is unknown to status and PUT alike", async () => {
    const dataDir = tempDir();
    dirs.push(dataDir);
    const { blob, location, id } = await uploadAllBytesThenStop(dataDir, "crash/lost");
    await fs.rm(path.join(dataDir, "berth/uploads", id));
    const { client } = await start(dataDir);
    const status = await client.fetch(location);
    expect(status.status).toBe(404);
    const put = await client.fetch(`${location}?digest=${blob.digest}`, { method: "PUT" });
    expect(put.status).toBe(404);
  });

  it("a PUT that carries its last chunk records the whole upload before its bytes move", async () => {
    // After the fix the row is brought up to date before the rename, so a crash after the rename
    // still finds a row that names the bytes; a normal PUT with a body shows the path works end to end.
    const dataDir = tempDir();
    dirs.push(dataDir);
    const { client } = await start(dataDir);
    const blob = randomBlob(10_000);
    await client.pushBlobChunked("crash/chunked", blob, 4_000);
    const pulled = await client.fetch(`/v2/crash/chunked/blobs/${blob.digest}`);
    expect(Buffer.from(await pulled.arrayBuffer()).equals(blob.data)).toBe(true);
  });
});
