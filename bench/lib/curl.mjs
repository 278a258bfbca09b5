// curl as the client of the PostgreSQL and S3 rows: many requests from one curl process (a config
// file, run in parallel with keep-alive), timed request series, and single uploads and downloads.
import { writeFileSync } from "node:fs";
import { run } from "./util.mjs";

/** A value quoted for a curl config file. */
function quote(value) {
  return `"${String(value).replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/**
 * Runs `requests` ({ url, method, headers: [], data (a string), dataFile }) from one curl process,
 * `parallel` at a time over keep-alive connections. Throws unless every status is in `expect`.
 * Returns { seconds, statuses: Map<status, count> }.
 */
export async function curlBatch(configFile, requests, { parallel = 16, expect = [200, 201, 202] } = {}) {
  const lines = [];
  for (const r of requests) {
    lines.push(`url = ${quote(r.url)}`);
    if (r.method) lines.push(`request = ${quote(r.method)}`);
    for (const h of r.headers ?? []) lines.push(`header = ${quote(h)}`);
    if (r.data !== undefined) lines.push(`data-binary = ${quote(r.data)}`);
    if (r.dataFile !== undefined) lines.push(`data-binary = ${quote(`@${r.dataFile}`)}`);
    lines.push(`output = "/dev/null"`, `write-out = "%{http_code} %{url}\\n"`, "next");
  }
  // A trailing `next` would add an empty transfer that fails.
  lines.pop();
  writeFileSync(configFile, `${lines.join("\n")}\n`);
  const t0 = performance.now();
  const res = await run(
    "curl",
    ["-sS", "--no-progress-meter", "--parallel", "--parallel-max", String(parallel), "-K", configFile],
    { timeoutMs: 60 * 60_000, allowFailure: true },
  );
  const seconds = (performance.now() - t0) / 1000;
  const statuses = new Map();
  let bad = null;
  for (const line of res.stdout.split("\n")) {
    if (!line) continue;
    const [code, url] = line.split(" ");
    const status = Number(code);
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
    if (!expect.includes(status)) bad ??= `${status} for ${url}`;
  }
  const answered = [...statuses.values()].reduce((a, b) => a + b, 0);
  if (bad || answered !== requests.length) {
    throw new Error(
      `curl batch of ${requests.length} requests: ${answered} answered, statuses ${JSON.stringify(Object.fromEntries(statuses))}` +
        `${bad ? `; first unexpected: ${bad}` : ""}${res.stderr ? `; ${res.stderr.trim().split("\n")[0]}` : ""}`,
    );
  }
  return { seconds, statuses };
}

/**
 * GETs `urls` one after the other from one curl process over one keep-alive connection.
 * Returns the milliseconds of each (curl's time_total); throws on any status but 200.
 */
export async function curlTimes(configFile, urls) {
  const lines = [];
  for (const url of urls) {
    lines.push(
      `url = ${quote(url)}`,
      `output = "/dev/null"`,
      `write-out = "%{http_code} %{time_total}\\n"`,
      "next",
    );
  }
  lines.pop();
  writeFileSync(configFile, `${lines.join("\n")}\n`);
  const res = await run("curl", ["-sS", "-K", configFile], { timeoutMs: 30 * 60_000 });
  const times = [];
  for (const line of res.stdout.trim().split("\n")) {
    const [code, total] = line.split(" ");
    if (code !== "200") throw new Error(`curl: HTTP ${code} in a timed GET series`);
    times.push(Number(total) * 1000);
  }
  if (times.length !== urls.length) throw new Error(`curl: ${times.length} of ${urls.length} GETs answered`);
  return times;
}

/**
 * One curl request; returns { status, headers (lower-case names), seconds, bytes, speed }.
 * `upload`: a file sent as the body; `follow`: follow redirects (-L).
 */
export async function curlOne(
  url,
  { method = "GET", headers = [], upload, follow = false, timeoutMs = 30 * 60_000 } = {},
) {
  const args = ["-sS", "-o", "/dev/null", "-D", "-", "-X", method];
  for (const h of headers) args.push("-H", h);
  if (upload) args.push("-T", upload);
  if (follow) args.push("-L");
  args.push(
    "-w",
    "\n@@ %{http_code} %{time_total} %{size_download} %{speed_download} %{num_redirects}\n",
    url,
  );
  const res = await run("curl", args, { timeoutMs });
  const marker = res.stdout.lastIndexOf("\n@@ ");
  const [status, seconds, bytes, speed, redirects] = res.stdout
    .slice(marker + 4)
    .trim()
    .split(" ")
    .map(Number);
  const answered = {};
  for (const line of res.stdout.slice(0, marker).split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0) answered[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status, headers: answered, seconds, bytes, speed, redirects };
}
