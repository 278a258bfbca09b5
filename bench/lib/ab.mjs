// Runs ApacheBench (ab) and parses its report.
import { spawn } from "node:child_process";
import { run } from "./util.mjs";

export const AB_BIN = process.env.BENCH_AB_BIN ?? "ab";

function field(text, label) {
  const m = text.match(new RegExp(`^${label}:\\s+([0-9.]+)`, "m"));
  return m ? Number(m[1]) : null;
}

/** Parses the parts of ab's report the metrics use. */
export function parseAb(text) {
  const percentiles = {};
  for (const m of text.matchAll(/^\s+(\d+)%\s+(\d+)/gm)) percentiles[m[1]] = Number(m[2]);
  return {
    complete: field(text, "Complete requests") ?? 0,
    failed: field(text, "Failed requests") ?? 0,
    non2xx: field(text, "Non-2xx responses") ?? 0,
    keepAlive: field(text, "Keep-Alive requests") ?? 0,
    rps: field(text, "Requests per second"),
    seconds: field(text, "Time taken for tests"),
    documentLength: field(text, "Document Length"),
    percentilesMs: percentiles,
  };
}

/**
 * ab -k -c <concurrency> -n <requests> (or -t <seconds>) [-i] [-H ...] <url>. Resolves with the parsed report.
 * Throws when ab fails, or when any request failed or was answered with a non-2xx status (a
 * benchmark of error responses measures nothing useful).
 */
export async function runAb(
  url,
  { concurrency = 64, requests, seconds, head = false, headers = [], timeoutSec = 30 } = {},
) {
  const args = ["-q", "-k", "-r", "-s", String(timeoutSec), "-c", String(concurrency)];
  // With a time limit (-t), -n only caps the number of requests (and must come after -t).
  if (seconds !== undefined) args.push("-t", String(seconds), "-n", "100000000");
  else args.push("-n", String(requests));
  if (head) args.push("-i");
  for (const h of headers) args.push("-H", h);
  args.push(url);
  const res = await run(AB_BIN, args, { timeoutMs: 10 * 60_000, allowFailure: true });
  const report = parseAb(res.stdout);
  const command = `ab ${args.join(" ")}`;
  if (res.code !== 0 || report.rps === null) {
    const detail = (res.stderr || res.stdout).trim().split("\n").slice(-3).join(" | ");
    throw new Error(`${command} failed (exit ${res.code}): ${detail}`);
  }
  if (report.non2xx > 0) {
    throw new Error(`${command}: ${report.non2xx} of ${report.complete} responses were not 2xx`);
  }
  if (report.failed > 0) {
    throw new Error(
      `${command}: ${report.failed} of ${report.complete} requests failed (connect/receive/length/exceptions)`,
    );
  }
  return { ...report, command };
}

/**
 * Starts ab -k -c <concurrency> in the background, for as long as it takes: stop() interrupts it
 * (SIGINT, on which ab prints its report for the requests done so far) and resolves with the parsed
 * report. Throws then when any request failed or was not answered 2xx.
 */
export function startAb(url, { concurrency = 8, headers = [], timeoutSec = 30 } = {}) {
  const args = [
    "-q",
    "-k",
    "-r",
    "-s",
    String(timeoutSec),
    "-c",
    String(concurrency),
    "-t",
    "36000",
    "-n",
    "100000000",
  ];
  for (const h of headers) args.push("-H", h);
  args.push(url);
  const child = spawn(AB_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d) => {
    stdout += d;
  });
  child.stderr.setEncoding("utf8").on("data", (d) => {
    stderr += d;
  });
  const closed = new Promise((resolve) => child.on("close", resolve));
  return {
    async stop() {
      child.kill("SIGINT");
      await closed;
      const report = parseAb(stdout);
      const command = `ab ${args.join(" ")}`;
      if (report.rps === null) throw new Error(`${command}: no report (${stderr.trim().split("\n").pop()})`);
      if (report.non2xx > 0 || report.failed > 0) {
        throw new Error(
          `${command}: ${report.non2xx} non-2xx and ${report.failed} failed of ${report.complete}`,
        );
      }
      return report;
    },
  };
}
