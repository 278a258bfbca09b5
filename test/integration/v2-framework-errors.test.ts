import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseResponse, rawExchange } from "../helpers/raw-http.js";
import { type Berth, startBerth } from "../helpers/server.js";

// Every answer under /v2/ carries the spec's error body, {"errors":[{code,message,detail}]}, including
// what the web framework refuses before any route runs (issue 21, item 8).
let berth: Berth;

beforeAll(async () => {
  berth = await startBerth();
}, 60_000);
afterAll(async () => {
  await berth?.cleanup();
});

async function raw(head: string, body = ""): Promise<ReturnType<typeof parseResponse>> {
  const exchange = rawExchange(berth.port, head, body, { timeoutMs: 5_000 });
  return parseResponse(await exchange.done);
}

function expectSpecError(res: { status: number; body: string }, status: number, code?: string): void {
  expect(res.status).toBe(status);
  const parsed = JSON.parse(res.body) as {
    errors: Array<{ code: string; message: string; detail: unknown }>;
  };
  expect(Array.isArray(parsed.errors), res.body).toBe(true);
  expect(parsed.errors[0]).toHaveProperty("message");
  expect(parsed.errors[0]).toHaveProperty("detail");
  if (code) expect(parsed.errors[0]!.code).toBe(code);
  expect(res.body).not.toContain("FST_ERR");
}

describe("framework errors on /v2/ paths", () => {
  it("a malformed percent-escape in a manifest reference", async () => {
    const res = await fetch(`${berth.url}/v2/library/app/manifests/%ZZ`);
    expectSpecError({ status: res.status, body: await res.text() }, 400, "NAME_INVALID");
    expect(res.headers.get("docker-distribution-api-version")).toBe("registry/2.0");
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  });

  it("a malformed percent-escape in a repository name, on GET, HEAD and PUT", async () => {
    const get = await fetch(`${berth.url}/v2/a%ZZb/tags/list`);
    expectSpecError({ status: get.status, body: await get.text() }, 400, "NAME_INVALID");
    const head = await fetch(`${berth.url}/v2/a/blobs/%E0%A4%A`, { method: "HEAD" });
    expect(head.status).toBe(400);
    const put = await raw(
      `PUT /v2/a/manifests/%G1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n`,
      "{}",
    );
    expectSpecError(put, 400, "NAME_INVALID");
  });

  it("a long repository name is routed, not refused by the router", async () => {
    const name = `${"a".repeat(120)}/${"b".repeat(120)}`;
    const res = await fetch(`${berth.url}/v2/${name}/manifests/%ZZ`);
    expectSpecError({ status: res.status, body: await res.text() }, 400);
    const unknown = await fetch(`${berth.url}/v2/${name}/manifests/latest`);
    expectSpecError({ status: unknown.status, body: await unknown.text() }, 404, "NAME_UNKNOWN");
  });

  it("a manifest body over the limit", async () => {
    const res = await fetch(`${berth.url}/v2/a/manifests/latest`, {
      method: "PUT",
      headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
      body: Buffer.alloc(5 * 1024 * 1024, 0x20),
    });
    expectSpecError({ status: res.status, body: await res.text() }, 413, "SIZE_INVALID");
  });

  it("an unparseable Content-Length and a malformed request line", async () => {
    expectSpecError(
      await raw(`PUT /v2/a/manifests/latest HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n`),
      400,
    );
    expectSpecError(await raw(`GET /v2/a/manifests/latest HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n`), 400);
  });
});
