// Turning measurements into table rows, and rows into Markdown and JSON.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { SERVER_KEYS, SERVER_LABELS } from "./servers.mjs";
import { formatNumber } from "./util.mjs";

/**
 * A table row.
 *   result: what Context.alternate returned ({ berth: { value, samples, error, details }, distribution })
 *   target: { kind: "ratio", min } — Berth/Distribution must be ≥ min (higher-is-better metrics)
 *           { kind: "ratio", max } — Berth/Distribution must be ≤ max (lower-is-better metrics)
 *           { kind: "berth", max } — Berth's own value must be < max
 *           { kind: "berth", min } — Berth's own value must be ≥ min
 *           null — reported only
 */
export function makeRow({
  id,
  label,
  unit,
  higherIsBetter,
  result,
  target = null,
  aggregate = "median",
  notes = [],
}) {
  const servers = {};
  for (const key of SERVER_KEYS) {
    const r = result[key] ?? { samples: [], error: "not measured" };
    servers[key] = {
      value: Number.isFinite(r.value) ? r.value : null,
      samples: r.samples ?? [],
      error: r.error ?? null,
      details: r.details ?? [],
    };
  }
  const b = servers.berth.value;
  const d = servers.distribution.value;
  const ratio = b !== null && d !== null && d !== 0 ? b / d : null;
  let met = null;
  if (target?.kind === "ratio" && ratio !== null) {
    met = target.min !== undefined ? ratio >= target.min : ratio <= target.max;
  } else if (target?.kind === "berth" && b !== null) {
    met = target.min !== undefined ? b >= target.min : b < target.max;
  }
  if (target && servers.berth.error) met = false;
  return { id, label, unit, higherIsBetter, aggregate, servers, ratio, target, met, notes };
}

/**
 * "server CPU per GiB moved: Berth x s, Distribution y s" from details carrying cpuSeconds (the
 * server's process tree, user + system), as a median over the repetitions.
 */
export function cpuNote(result, bytes) {
  const parts = [];
  for (const key of SERVER_KEYS) {
    const cpu = (result[key]?.details ?? []).map((d) => d.cpuSeconds).filter((x) => Number.isFinite(x));
    if (cpu.length === 0) continue;
    const sorted = [...cpu].sort((a, b) => a - b);
    const mid = sorted[Math.floor(sorted.length / 2)];
    parts.push(`${SERVER_LABELS[key]} ${(mid / (bytes / 1024 ** 3)).toFixed(2)} s`);
  }
  return parts.length > 0 ? [`server CPU (user+sys) per GiB moved, median: ${parts.join(", ")}`] : [];
}

export function targetText(target, unit) {
  if (!target) return "—";
  if (target.kind === "ratio") return target.min !== undefined ? `≥ ${target.min}x` : `≤ ${target.max}x`;
  if (target.min !== undefined) return `Berth ≥ ${target.min} ${unit}`;
  return `Berth < ${target.max} ${unit}`;
}

function cell(server) {
  if (server.value === null) return server.error ? `error¹` : "n/a";
  return formatNumber(server.value) + (server.error ? " ¹" : "");
}

function ratioText(ratio) {
  if (ratio === null) return "n/a";
  return `${ratio >= 10 ? ratio.toFixed(1) : ratio.toFixed(2)}x`;
}

function metText(row) {
  if (!row.target) return "—";
  if (row.met === null) return "n/a";
  return row.met ? "yes" : "**no**";
}

/** The results table (plus footnotes for errors and notes) as Markdown. */
export function renderMarkdown(results) {
  const lines = [];
  lines.push(`## Berth vs Distribution — ${results.mode} run, ${results.finishedAt}`);
  lines.push("");
  lines.push(
    `Machine: ${results.machine.cpus} × ${results.machine.cpuModel}, ${results.machine.memGiB} GiB RAM, ${results.machine.kernel}, Node ${results.machine.node}. ` +
      `Berth ${results.versions.berth}; Distribution ${results.versions.distribution}. ` +
      `Blob ${results.options.blobLabel}, ${results.options.reps} repetitions (medians), ${results.options.repos.toLocaleString("en-US")} repositories.`,
  );
  const load = results.machine.loadAverage;
  const context = [
    `Load average (1/5/15 min) ${load.start.join("/")} at start, ${load.end.join("/")} at end`,
  ];
  if (results.machine.diskWriteMBps) {
    context.push(
      `disk ${Math.round(results.machine.diskWriteMBps)} MB/s sequential write with fdatasync (dd)`,
    );
  }
  lines.push("");
  lines.push(`${context.join("; ")}.`);
  lines.push("");
  lines.push(
    `| Metric | ${SERVER_LABELS.berth} | ${SERVER_LABELS.distribution} | Berth/Distribution | Target | Met |`,
  );
  lines.push("|---|---:|---:|---:|:---:|:---:|");
  const footnotes = [];
  for (const row of results.rows) {
    lines.push(
      `| ${row.label} (${row.unit}${row.higherIsBetter ? ", higher is better" : ", lower is better"}) | ${cell(row.servers.berth)} | ${cell(row.servers.distribution)} | ${ratioText(row.ratio)} | ${targetText(row.target, row.unit)} | ${metText(row)} |`,
    );
    for (const key of SERVER_KEYS) {
      const err = row.servers[key].error;
      if (err) {
        const text = err
          .split("\n")
          .map((l) => l.trim())
          .filter(Boolean)
          .join(" | ");
        footnotes.push(`¹ ${row.label}, ${SERVER_LABELS[key]}: ${text.slice(0, 500)}`);
      }
    }
    for (const note of row.notes) footnotes.push(`- ${row.label}: ${note}`);
  }
  if (footnotes.length > 0) {
    lines.push("");
    lines.push(...footnotes);
  }
  lines.push("");
  return lines.join("\n");
}

export function writeOutputs(outDir, results) {
  const markdown = renderMarkdown(results);
  writeFileSync(path.join(outDir, "results.md"), markdown);
  writeFileSync(path.join(outDir, "results.json"), `${JSON.stringify(results, null, 2)}\n`);
  return markdown;
}
