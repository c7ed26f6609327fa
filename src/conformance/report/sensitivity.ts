/**
 * The sensitivity table (`sd-harness sensitivity`) as terminal text, Markdown and one
 * self-contained HTML page (no scripts, no external assets). One row per layer kind: the smallest
 * single-weight change and (attention projections) the smallest whole-tensor scale the default
 * run caught, the stage that caught it, and how the kind fared at the issue's target sizes.
 */
import { SensitivityReport, KindSummary, LadderSummary, TargetTally, Decider, describeSize } from "../sensitivity/sensitivity";
import { formatNumber, formatDuration, stripControl } from "./format";

export interface Row {
  readonly kind: string;
  readonly tensors: string;
  readonly single: string;
  readonly singleBy: string;
  readonly scale: string;
  readonly scaleBy: string;
  readonly target: string;
  readonly targetScale: string;
}

/** The kind's figure over its sampled tensors: the weakest sample decides ("any weight"). */
function ladderFigure(ls: readonly LadderSummary[], mode: "single" | "scale"): { text: string; by: string } {
  if (ls.length === 0) return { text: "—", by: "" };
  const missedAll = ls.filter((l) => l.smallestCaught === null);
  if (missedAll.length) {
    const l = missedAll[0];
    return {
      text: `not caught${l.largestMissed !== null ? ` at ${describeSize(mode, l.largestMissed)}` : ""}${l.settled ? "" : " (unsettled)"}`,
      by: "",
    };
  }
  const worst = [...ls].sort((a, b) =>
    mode === "single"
      ? b.smallestCaught! - a.smallestCaught!
      : Math.abs(Math.log(b.smallestCaught!)) - Math.abs(Math.log(a.smallestCaught!)),
  )[0];
  const below =
    worst.largestMissed !== null
      ? ` (${describeSize(mode, worst.largestMissed)} missed)`
      : worst.settled
        ? " (smallest tried)"
        : " (unsettled)";
  return { text: `${describeSize(mode, worst.smallestCaught!)}${below}`, by: worst.caughtBy.join(", ") };
}

function tallyText(t: TargetTally | null): string {
  if (!t) return "—";
  if (t.tested === 0) return t.untested ? "not tested" : "—";
  const verdict = t.caught === t.tested ? (t.untested ? "held so far" : "holds") : "FAILS";
  return `${verdict}: ${t.caught}/${t.tested} tensors caught${t.untested ? `, ${t.untested} untested` : ""}`;
}

export function rows(report: SensitivityReport): Row[] {
  return report.kinds.map((k) => {
    const s = ladderFigure(k.single, "single");
    const c = k.attention ? ladderFigure(k.scale, "scale") : { text: "—", by: "" };
    return {
      kind: k.id,
      tensors: String(k.tensors),
      single: k.notMeasured && k.single.length === 0 ? `not measured: ${k.notMeasured}` : s.text,
      singleBy: s.by,
      scale: c.text,
      scaleBy: c.by,
      target: k.target ? tallyText(k.atTarget.single) : `(no target) ${tallyText(k.atTarget.single)}`,
      targetScale: k.attention ? tallyText(k.atTarget.scale) : "—",
    };
  });
}

function deciderText(d: Decider | null): string {
  if (!d) return "";
  if (Number.isNaN(d.value)) return `${d.caseId}: ${d.metric}`;
  return `${d.caseId} ${d.tensor} ${d.metric} ${formatNumber(d.value)} vs limit ${formatNumber(d.limit)} (${formatNumber(d.ratio)}× the limit)`;
}

/** Misses at the target sizes, one line each, with how close the nearest check came. */
function missLines(report: SensitivityReport): string[] {
  const out: string[] = [];
  for (const k of report.kinds) {
    for (const [mode, t] of [
      ["single", k.atTarget.single],
      ["scale", k.atTarget.scale],
    ] as const) {
      if (!t) continue;
      for (const m of t.missed) {
        const unmoved = m.casesUnmoved ? `; ${m.casesUnmoved} of ${m.casesRun} cases bit-identical to the unperturbed run` : "";
        out.push(
          `${k.id} ${describeSize(mode, t.size)} on ${m.module ?? m.tensor} (${m.region ?? "?"}): not caught${m.complete ? "" : " by the cases run (budget or sweep)"}; closest: ${deciderText(m.decider) || "nothing changed"}${unmoved}`,
        );
      }
    }
  }
  return out;
}

const HEAD = [
  "Layer kind",
  "Tensors",
  "Smallest single weight caught",
  "Caught by",
  "Smallest scale caught",
  "Caught by",
  "+1e-2 target",
  "×1.01 target",
] as const;

function cells(r: Row): string[] {
  return [r.kind, r.tensors, r.single, r.singleBy, r.scale, r.scaleBy, r.target, r.targetScale];
}

/** The table for the terminal: fixed-width columns. */
export function renderSensitivityText(report: SensitivityReport): string {
  const body = rows(report).map(cells);
  const widths = HEAD.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cs: readonly string[]) =>
    cs
      .map((c, i) => c.padEnd(widths[i]))
      .join("  ")
      .trimEnd();
  const out = [line(HEAD), line(widths.map((w) => "-".repeat(w))), ...body.map(line)];
  const misses = missLines(report);
  if (misses.length) out.push("", "Missed at the target sizes:", ...misses.map((m) => `  ${m}`));
  if (report.notMeasured.length) out.push("", "Not measured:", ...report.notMeasured.map((m) => `  ${m}`));
  if (report.unmapped.length) out.push("", `Unmapped tensors (no module name from the exporter): ${report.unmapped.length}`);
  return out.map(stripControl).join("\n") + "\n";
}

function mdCell(s: string): string {
  return stripControl(s)
    .replace(/\\/g, "\\\\")
    .replace(/\|/g, "\\|")
    .replace(/[<>]/g, (c) => (c === "<" ? "&lt;" : "&gt;"))
    .replace(/\n/g, " ");
}

function settingsLines(r: SensitivityReport): string[] {
  const s = r.settings;
  return [
    `Model \`${r.model.dir}\` against \`${r.references.dir}\` (${r.references.model}, ${r.references.device}), profile ${r.profile}.`,
    `Seed ${r.run.seed}, budget ${r.run.budgetSeconds} s, took ${formatDuration(r.run.durationMs)}; ${r.probes.length} probes; single-weight sizes ${s.relatives.map((x) => describeSize("single", x)).join(", ")}; scales ${s.scales.map((x) => describeSize("scale", x)).join(", ")}; ${s.samples} sampled tensor(s) per kind; sweep ${s.sweep ? "on" : "off"}.`,
    `Control run: ${r.control.cases} cases on the unperturbed copy (${formatDuration(r.control.timeMs)}), ${r.control.excluded.length} left out as not passing unperturbed.`,
  ];
}

export function renderSensitivityMarkdown(report: SensitivityReport): string {
  const out = ["# Sensitivity", "", ...settingsLines(report).flatMap((l) => [mdCell(l), ""])];
  out.push(`| ${HEAD.join(" | ")} |`, `| ${HEAD.map((_, i) => (i === 1 ? "---:" : "---")).join(" | ")} |`);
  for (const r of rows(report)) out.push(`| ${cells(r).map(mdCell).join(" | ")} |`);
  out.push(
    "",
    "A size is the change of one weight relative to its value (+1e-2 = +1 %) or the factor on a whole tensor; \"caught\" means some case of the default run that the component reaches fails under the profile's limits. The figure per kind is its weakest sampled tensor's.",
  );
  const misses = missLines(report);
  if (misses.length) out.push("", "## Missed at the target sizes", "", ...misses.map((m) => `- ${mdCell(m)}`));
  if (report.notMeasured.length) out.push("", "## Not measured", "", ...report.notMeasured.map((m) => `- ${mdCell(m)}`));
  if (report.unmapped.length) {
    out.push("", "## Unmapped tensors", "", "Anonymous initializers whose readers name no single module; not perturbed.", "");
    for (const u of report.unmapped)
      out.push(`- ${mdCell(`${u.component}: ${u.name} (${u.count} values) read by ${u.readers.join("; ") || "no node"}`)}`);
  }
  return out.join("\n") + "\n";
}

function esc(s: string): string {
  return stripControl(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

function probeRows(report: SensitivityReport): string {
  return report.probes
    .map((p) => {
      const d = p.decider;
      return `<tr class="${p.caught ? "caught" : "missed"}"><td>${esc(p.kind)}</td><td>${esc(p.phase)}</td><td>${esc(p.module ?? p.tensor)}${p.index !== null ? `[${p.index}]` : ""}</td><td>${esc(describeSize(p.mode, p.size))}</td><td>${p.caught ? "caught" : p.unrepresentable ? "unchanged" : "missed"}</td><td>${esc(p.caughtBy.join(", "))}</td><td>${esc(d ? deciderText(d) : "")}</td><td class="num">${p.casesRun}/${p.casesAffected}${p.complete ? "" : ` (${esc(p.partial ?? "budget")})`}${p.casesUnmoved ? `, ${p.casesUnmoved} unmoved` : ""}</td></tr>`;
    })
    .join("\n");
}

function kindRow(k: KindSummary, r: Row): string {
  const cls = k.atTarget.single.missed.length || (k.atTarget.scale?.missed.length ?? 0) ? "fails" : k.notMeasured ? "unmeasured" : "ok";
  return `<tr class="${cls}" title="${esc(k.description)}">${cells(r)
    .map((c, i) => `<td${i === 1 ? ' class="num"' : ""}>${esc(c)}</td>`)
    .join("")}</tr>`;
}

/** One page, styles inline, no script: safe to open from a CI artifact. */
export function renderSensitivityHtml(report: SensitivityReport): string {
  const rs = rows(report);
  const misses = missLines(report);
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sd-harness sensitivity</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right}tr.fails td{background:#fde8e8}tr.unmeasured td{color:#888}
tr.caught td:nth-child(5){color:#1a7f37}tr.missed td:nth-child(5){color:#b42318}
details{margin:1em 0}code{background:#f3f3f3;padding:0 .2em}
</style></head><body>
<h1>Sensitivity</h1>
${settingsLines(report)
  .map((l) => `<p>${esc(l)}</p>`)
  .join("\n")}
<table><thead><tr>${HEAD.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>
${report.kinds.map((k, i) => kindRow(k, rs[i])).join("\n")}
</tbody></table>
<p>A size is the change of one weight relative to its value (+1e-2 = +1 %) or the factor on a whole tensor; "caught" means some case of the default run that the component reaches fails under the profile's limits. The figure per kind is its weakest sampled tensor's.</p>
${misses.length ? `<h2>Missed at the target sizes</h2><ul>${misses.map((m) => `<li>${esc(m)}</li>`).join("")}</ul>` : ""}
${report.notMeasured.length ? `<h2>Not measured</h2><ul>${report.notMeasured.map((m) => `<li>${esc(m)}</li>`).join("")}</ul>` : ""}
${report.unmapped.length ? `<h2>Unmapped tensors</h2><ul>${report.unmapped.map((u) => `<li>${esc(`${u.component}: ${u.name} (${u.count} values) read by ${u.readers.join("; ") || "no node"}`)}</li>`).join("")}</ul>` : ""}
<details><summary>Every probe (${report.probes.length})</summary>
<table><thead><tr><th>Kind</th><th>Phase</th><th>Weight</th><th>Size</th><th>Result</th><th>Caught by</th><th>Deciding check (or closest)</th><th>Cases run / affected</th></tr></thead><tbody>
${probeRows(report)}
</tbody></table></details>
</body></html>
`;
}
