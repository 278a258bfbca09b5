/**
 * Log lines without a logging library: the supervisor of `berth serve` writes its few lines with this
 * (it must stay small: no pino), and workers use `textLine` when `log.formatter` is `text`.
 *
 * A JSON line has pino's shape ({"level":30,"time":...,"pid":...,"msg":...}), so that the supervisor's
 * lines and the workers' lines read alike in one stream.
 */

import { writeSync } from "node:fs";

export type LogFormat = "json" | "text";

export const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;
export type LevelName = keyof typeof LEVELS;

const NAMES: Record<number, string> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};

/** A value as text for a `key=value` pair: bare when it has no spaces or quotes, JSON otherwise. */
function textValue(value: unknown): string {
  if (typeof value === "string") return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  if (value instanceof Error) return JSON.stringify(value.message);
  if (typeof value === "object" && value !== null) {
    try {
      return JSON.stringify(value);
    } catch {
      return '"[unserialisable]"';
    }
  }
  return String(value);
}

/**
 * One record (pino's shape: level, time, msg and any other fields) as a text line:
 * `2026-12-01T14:31:45.123Z INFO  berth listening on 0.0.0.0:5000 pid=12 workers=2`.
 */
export function textLine(record: Record<string, unknown>): string {
  const { level, time, msg, ...fields } = record;
  const when = typeof time === "number" ? new Date(time).toISOString() : new Date().toISOString();
  const name = (NAMES[Number(level)] ?? String(level ?? "")).padEnd(5);
  let line = `${when} ${name}`;
  if (msg !== undefined && msg !== "") line += ` ${String(msg)}`;
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    if (key === "err" && value && typeof value === "object") {
      const err = value as { message?: unknown; stack?: unknown };
      line += ` err=${textValue(err.message ?? value)}`;
      continue;
    }
    line += ` ${key}=${textValue(value)}`;
  }
  return `${line}\n`;
}

export interface LineLogger {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

let stream = false;

/**
 * One line to stdout, written straight to file descriptor 1 while that works: process.stdout on a pipe
 * is a socket object that loads Node's network and stream modules into the supervisor (about 0.2 MB).
 * A full non-blocking pipe (EAGAIN) or any other error hands this and later lines to process.stdout.
 */
function writeLine(line: string): void {
  let rest = Buffer.from(line);
  if (!stream) {
    try {
      while (rest.length > 0) rest = rest.subarray(writeSync(1, rest));
      return;
    } catch {
      stream = true;
    }
  }
  process.stdout.write(rest);
}

/** A logger that writes whole lines to stdout (the supervisor's; workers use pino). */
export function lineLogger(options: {
  level: string;
  format: LogFormat;
  base: Record<string, unknown>;
}): LineLogger {
  const threshold = LEVELS[options.level as LevelName] ?? (options.level === "silent" ? 100 : 30);
  const write = (level: number, fields: Record<string, unknown>, msg: string) => {
    if (level < threshold) return;
    const record = { level, time: Date.now(), ...options.base, ...fields, msg };
    writeLine(options.format === "text" ? textLine(record) : `${JSON.stringify(record)}\n`);
  };
  return {
    info: (fields, msg) => write(30, fields, msg),
    warn: (fields, msg) => write(40, fields, msg),
    error: (fields, msg) => write(50, fields, msg),
  };
}
