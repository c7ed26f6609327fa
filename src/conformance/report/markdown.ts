/** summary.md: the report as Markdown, for a CI job summary or a pull-request comment. */
import type { Reporter } from "./reporter";
import { Report, Status, harnessOverhead, isFailing } from "../types";
import { coverageLines } from "../cases/coverage";
import { localizeMarkdown } from "./localize-view";
import { machineText, machinesDiffer } from "../../util/machine";
import { floorSummary, floorText, EXCESS_EXPLAINED } from "../judge/float64-floor";
import { Headline, worstHeadlines } from "../judge/headline";
import {
  STATUSES,
  Figures,
  caseFigures,
  caseIds,
  countStatuses,
  formatCheck,
  formatCosine,
  formatDuration,
  formatMetric,
  formatNumber,
  formatPsnr,
  groupVerdict,
  modelOrder,
  modelRuntimeText,
  nonFiniteText,
  sortCases,
  stageOrder,
  stripControl,
  worstElementText,
  worstFigures,
} from "./format";

const STATUS_MARK: Readonly<Record<Status, string>> = { pass: "✅", fail: "❌", xfail: "⚠️", xpass: "❗", error: "💥", skip: "⏭️" };

/** Text from prompts, paths and messages must not open tables, links, emphasis or raw HTML. */
function md(value: unknown): string {
  return stripControl(String(value))
    .replace(/\r\n|\r|\n/g, " ")
    .replace(/([\\`*_[\]<>|#~!])/g, "\\$1");
}

/** Inline code (list items only: in a table a pipe would still end the cell) that survives backticks inside. */
function mdCode(value: unknown): string {
  const clean = stripControl(String(value)).replace(/\r\n|\r|\n/g, " ");
  const longest = Math.max(0, ...(clean.match(/`+/g) ?? []).map((r) => r.length));
  const fence = "`".repeat(longest + 1);
  const pad = clean.startsWith("`") || clean.endsWith("`") ? " " : "";
  return `${fence}${pad}${clean}${pad}${fence}`;
}

function table(head: readonly string[], rows: readonly (readonly string[])[], align?: readonly ("l" | "r")[]): string[] {
  const sep = head.map((_, i) => (align?.[i] === "r" ? "---:" : "---"));
  return [`| ${head.join(" | ")} |`, `| ${sep.join(" | ")} |`, ...rows.map((r) => `| ${r.join(" | ")} |`)];
}

function countsText(counts: Record<Status, number>): string {
  return STATUSES.filter((s) => counts[s] > 0)
    .map((s) => `${md(counts[s])} ${md(s)}`)
    .join(", ");
}

function figureCells(h: Figures): [string, string] {
  const drift = h.maxAbs !== undefined ? formatNumber(h.maxAbs) : h.maxAbsU8 !== undefined ? `${formatNumber(h.maxAbsU8)} (u8)` : "—";
  const psnr = h.psnr !== undefined ? formatPsnr(h.psnr) : h.psnrU8 !== undefined ? `${formatPsnr(h.psnrU8)} (image)` : "—";
  return [drift, psnr];
}

/** "relL2 3.95e-6" (several metrics joined by "; "), "—" when nothing was measured. */
function headlinesText(hs: readonly Headline[]): string {
  return hs.map((h) => `${h.metric} ${formatMetric(h.metric, h.value)}`).join("; ") || "—";
}

/** What every section reads: the model and stage orders. */
interface View {
  readonly models: readonly string[];
  readonly stages: readonly string[];
}

/** The title and the verdict line. */
function title(report: Report, out: string[]): void {
  const s = report.summary;
  const verdict = md(String(s.verdict).toUpperCase());
  out.push(`# sd-harness conformance: ${verdict}`, "");
  out.push(`**Verdict: ${STATUS_MARK[s.verdict] ?? ""} ${verdict}** — ${md(s.total)} case results: ${countsText(s) || "none"}`, "");
}

/** Models, reference set, profile, host, versions, command. */
function runSection(report: Report, out: string[]): void {
  out.push("## Run", "");
  out.push("- **Models:**");
  for (const m of report.models) {
    out.push(
      `  - ${mdCode(m.label)} — ${mdCode(m.dir)} (${md(Object.keys(m.hashes).length)} ONNX files hashed) on runtime ${md(modelRuntimeText(m))}`,
    );
  }
  if (report.against)
    out.push(
      `- **Against:** ${mdCode(report.against.label)} — ${mdCode(report.against.dir)}: model stages judged against its outputs on the reference set's inputs, not against PyTorch's`,
    );
  const r = report.references;
  out.push(`- **Reference set:** ${mdCode(r.dir)} — ${md(r.model)} on ${md(r.device)} (${md(r.deviceName)})`);
  const refVersions = Object.entries(r.versions)
    .map(([k, v]) => `${md(k)} ${md(v)}`)
    .join(", ");
  if (refVersions) out.push(`- **Reference versions:** ${refVersions}`);
  if (r.command) out.push(`- **Reference command:** ${mdCode(r.command)}`);
  out.push(`- **Tolerance profile:** ${mdCode(report.profile)}`);
  const overhead = harnessOverhead(report.run);
  const ort =
    report.run.ort && overhead !== null
      ? ` (onnxruntime: ${formatDuration(report.run.ort.runMs)} in ${report.run.ort.runs} calls, ${formatDuration(report.run.ort.createMs)} creating sessions; ${(100 * overhead).toFixed(1)} % outside it)`
      : "";
  out.push(`- **Started:** ${md(report.run.started)} · **duration** ${formatDuration(report.run.durationMs)}${ort}`);
  const h = report.run.host;
  out.push(
    `- **Host:** ${md(h.platform)}/${md(h.arch)}, ${md(machineText({ model: h.cpus, isa: h.isa }))} (${md(h.cores)} cores), ${md(report.run.threads || "ORT default")} threads`,
  );
  if (r.machine) {
    const differs = machinesDiffer({ model: h.cpus, isa: h.isa }, r.machine);
    out.push(
      `- **Reference machine:** ${md(machineText(r.machine))}${differs ? " — another CPU than this run's: float32 rounding differs between them, which the set's floor envelope allows for" : ""}`,
    );
  }
  const versions = Object.entries(report.run.versions)
    .map(([k, v]) => `${md(k)} ${md(v)}`)
    .join(", ");
  if (versions) out.push(`- **Versions:** ${versions}`);
  if (report.run.shard) out.push(`- **Shard:** ${md(report.run.shard.index)}/${md(report.run.shard.count)}`);
  if (report.run.argv.length > 0) out.push(`- **Command:** ${mdCode(report.run.argv.join(" "))}`);
  out.push("");
}

/** Verdict by stage and model, with the worst headline metric and PSNR. */
function verdicts(report: Report, out: string[], view: View): void {
  const models = view.models;
  const stages = view.stages;
  out.push("## Verdict by stage", "");
  const shown = STATUSES.filter((st) => st === "pass" || st === "fail" || report.results.some((c) => c.status === st));
  const verdictRows: string[][] = [];
  for (const stage of stages) {
    for (const model of models) {
      const cases = report.results.filter((c) => c.stage === stage && c.model === model);
      if (cases.length === 0) continue;
      const counts = countStatuses(cases);
      const v = groupVerdict(cases);
      verdictRows.push([
        md(stage),
        md(model),
        `${STATUS_MARK[v] ?? ""} ${md(v)}`,
        ...shown.map((st) => md(counts[st])),
        md(headlinesText(worstHeadlines(cases))),
        md(figureCells(worstFigures(cases))[1]),
      ]);
    }
  }
  out.push(
    ...table(["Stage", "Model", "Verdict", ...shown, "Worst headline metric", "Worst PSNR"], verdictRows, [
      "l",
      "l",
      "l",
      ...shown.map(() => "r" as const),
      "r",
      "r",
    ]),
    "",
  );
}

/** Drift against the float64 floor, per stage and model. */
function floors(report: Report, out: string[]): void {
  const floors = floorSummary(report.results);
  if (floors.length > 0) {
    out.push("## Drift against the float64 floor", "", md(EXCESS_EXPLAINED), "");
    const rows = floors.map((f) => [
      md(f.stage),
      md(f.model),
      f.without === 0
        ? `yes (${md(f.withFloor)})`
        : `${f.withFloor ? `yes (${md(f.withFloor)}), ` : ""}no (${md(f.without)}: ${md(f.whyNot.join("; "))})`,
      f.worst ? `×${md(formatNumber(f.worst.excess))}` : "—",
      f.worst ? md(`${f.worst.id} ${f.worst.tensor}: relL2 ${formatNumber(f.worst.relL2)}, floor ${formatNumber(f.worst.floor)}`) : "—",
    ]);
    out.push(
      ...table(
        ["Stage", "Model", "float64 floor", "Worst excess", "Where (our relL2, the float32 floor: PyTorch's float32 runs vs float64)"],
        rows,
        ["l", "l", "l", "r", "l"],
      ),
      "",
    );
  }
}

/** What the run exercised and what it did not. */
function coverage(report: Report, out: string[]): void {
  if (report.coverage) {
    out.push("## Coverage", "");
    for (const line of coverageLines(report.coverage)) out.push(`- ${md(line)}`);
    out.push("", report.coverage.gaps.length ? "**Not covered:**" : "Nothing the reference set can check was left out.", "");
    for (const g of report.coverage.gaps) out.push(`- ${md(g.what)}: ${md(g.why)}`);
    if (report.coverage.gaps.length) out.push("");
  }
}

/** Figures per case and model, when there are several models. */
function sideBySide(report: Report, out: string[], view: View): void {
  const models = view.models;
  if (models.length > 1) {
    out.push("## Drift side by side", "");
    const head = [
      "Case",
      ...models.map((m) => `${md(m)} max abs`),
      ...models.map((m) => `${md(m)} PSNR`),
      ...models.map((m) => `${md(m)} cosine`),
    ];
    const rows: string[][] = [];
    for (const id of caseIds(report)) {
      const cells = models.map((m) => report.results.find((c) => c.id === id && c.model === m));
      const hs = cells.map((c) => (c ? caseFigures(c) : null));
      rows.push([
        md(id),
        ...hs.map((x) => (x ? md(figureCells(x)[0]) : "—")),
        ...hs.map((x) => (x ? md(figureCells(x)[1]) : "—")),
        ...hs.map((x) => (x?.cosine !== undefined ? md(formatCosine(x.cosine)) : "—")),
      ]);
    }
    out.push(
      ...table(
        head,
        rows,
        head.map((_, i) => (i === 0 ? "l" : "r")),
      ),
      "",
    );
  }
}

/** Each failing case: its failed checks, non-finite values, worst element, tolerance. */
function failing(report: Report, out: string[], view: View): void {
  const models = view.models;
  const failing = sortCases(
    report.results.filter((c) => isFailing(c.status)),
    models,
  );
  if (failing.length > 0) {
    out.push(`## Failing cases (${failing.length})`, "");
    for (const c of failing) {
      out.push(`### ${STATUS_MARK[c.status] ?? ""} ${md(c.id)} (${md(c.model)}) — ${md(c.status)}`, "");
      if (c.message) out.push(`- ${md(c.message)}`);
      for (const ch of c.checks.filter((x) => !x.ok)) out.push(`- ✗ ${md(formatCheck(ch))}`);
      if (c.float64Floor !== undefined) out.push(`- float64 floor: ${md(floorText(c))}`);
      if (c.status === "xpass")
        out.push(`- expected to fail${c.tolerance.reason ? `: ${md(c.tolerance.reason)}` : ""}, but every check passed`);
      if (c.nonFinite) out.push(`- first non-finite: ${md(nonFiniteText(c.nonFinite))}`);
      const worst = worstElementText(c);
      if (worst) out.push(`- worst element: ${md(worst)}`);
      out.push(
        `- tolerance: profile ${mdCode(c.tolerance.profile)}, ${md(c.tolerance.source)}${c.tolerance.reason ? ` — ${md(c.tolerance.reason)}` : ""}`,
      );
      out.push("");
    }
  }
}

/** Expected failures with their reasons. */
function expectedFailures(report: Report, out: string[]): void {
  const xfails = report.results.filter((c) => c.status === "xfail");
  if (xfails.length > 0) {
    out.push(`## Expected failures (${xfails.length})`, "");
    for (const c of xfails) out.push(`- ${md(c.id)} (${md(c.model)}): ${md(c.tolerance.reason ?? c.message ?? "no reason recorded")}`);
    out.push("");
  }
}

/** Baseline regressions (--baseline). */
function baselineSection(report: Report, out: string[]): void {
  if (report.baseline) {
    const b = report.baseline;
    out.push("## Baseline regressions", "");
    out.push(
      `Against ${mdCode(b.file)}, flagging growth beyond ×${md(formatNumber(b.factor))}: **${md(b.regressions)}** regression${b.regressions === 1 ? "" : "s"}.`,
      "",
    );
    const flagged = report.results.filter((c) => c.regression?.flagged);
    if (flagged.length > 0) {
      const rows = flagged.map((c) => {
        const g = c.regression!;
        return [
          md(c.id),
          md(c.model),
          md(g.metric),
          md(formatMetric(g.metric, g.before)),
          md(formatMetric(g.metric, g.after)),
          `×${md(formatNumber(g.factor))}`,
        ];
      });
      out.push(...table(["Case", "Model", "Metric", "Before", "After", "Growth"], rows, ["l", "l", "l", "r", "r", "r"]), "");
    }
  }
}

/** Where drift starts (--localize): localize-view.ts. */
function localize(report: Report, out: string[]): void {
  out.push(...localizeMarkdown(report, md));
}

/** summary.md's sections, in order; each adds its lines (none when it has nothing to say). */
/** Warnings under the verdict, before anything that depends on them (the runtime's version). */
function warnings(report: Report, out: string[]): void {
  if (!report.warnings || report.warnings.length === 0) return;
  for (const w of report.warnings) out.push(`> **Warning:** ${md(w)}`, ">");
  out.pop();
  out.push("");
}

const SECTIONS: readonly ((report: Report, out: string[], view: View) => void)[] = [
  title,
  warnings,
  runSection,
  verdicts,
  floors,
  coverage,
  sideBySide,
  failing,
  expectedFailures,
  baselineSection,
  localize,
];

export function renderMarkdown(report: Report): string {
  const out: string[] = [];
  const view: View = { models: modelOrder(report), stages: stageOrder(report) };
  for (const section of SECTIONS) section(report, out, view);
  return out.join("\n");
}

export const markdownReporter: Reporter = {
  name: "markdown",
  file: "summary.md",
  render: (report) => renderMarkdown(report),
};
