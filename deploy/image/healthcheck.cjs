// The image's HEALTHCHECK: exits 0 when Berth's /readyz answers 200 (storage writable, database answering).
// It asks the port of REGISTRY_HTTP_ADDR (default :5000) on the loopback, over HTTPS when a certificate
// is configured by variable (REGISTRY_HTTP_TLS_CERTIFICATE); BERTH_HEALTHCHECK_URL replaces the address
// (a config.yml that turns TLS on or moves the port).
const http = require("node:http");
const https = require("node:https");

const addr = process.env.REGISTRY_HTTP_ADDR || ":5000";
const port = addr.slice(addr.lastIndexOf(":") + 1) || "5000";
const scheme = process.env.REGISTRY_HTTP_TLS_CERTIFICATE ? "https" : "http";
const url = new URL(process.env.BERTH_HEALTHCHECK_URL || `${scheme}://127.0.0.1:${port}/readyz`);
const client = url.protocol === "https:" ? https : http;
const req = client.get(url, { timeout: 8000, rejectUnauthorized: false }, (res) => {
  res.resume();
  process.exit(res.statusCode === 200 ? 0 : 1);
});
req.on("timeout", () => req.destroy(new Error("timeout")));
req.on("error", (err) => {
  process.stderr.write(`healthcheck: ${url.href}: ${err.message}\n`);
  process.exit(1);
});
