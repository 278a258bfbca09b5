/**
 * Byte counts for people, in the CLI (`berth gc`, `usage`, `retention`) and the web UI alike (ui/src/lib
 * imports this file): decimal (SI) units as `docker images` and most registries show them. No imports, so
 * that the UI's bundle can take it as it is.
 */
const SIZE_UNITS = ["B", "kB", "MB", "GB", "TB", "PB", "EB"] as const;

/**
 * Bytes with decimal (SI) units, as `docker images` and most registries show them:
 * three significant digits, "999 B", "1.00 kB", "12.3 MB", "456 GB".
 */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes) || bytes < 0) return "—";
  if (bytes < 1000) return `${Math.round(bytes)} B`;
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < SIZE_UNITS.length - 1) {
    value /= 1000;
    unit++;
  }
  // Rounding can carry into the next unit: 999.96 kB would print as "1000 kB".
  let text = value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
  if (Number(text) >= 1000 && unit < SIZE_UNITS.length - 1) {
    unit++;
    text = (value / 1000).toFixed(2);
  }
  return `${text} ${SIZE_UNITS[unit]}`;
}
