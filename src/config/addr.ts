/**
 * `http.addr` as host and port: "0.0.0.0:5000", ":5000", "[::]:5000", "localhost:5000".
 * A module of its own with no imports, so that the supervisor of `berth serve` can use it.
 */
export function parseAddr(addr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(addr.trim());
  if (!m)
    throw new Error(`invalid address ${JSON.stringify(addr)}: expected host:port, for example 0.0.0.0:5000`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`invalid port in ${JSON.stringify(addr)}`);
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}
