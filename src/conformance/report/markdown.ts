/**
 * summary.md: the report as Markdown, for a CI job summary or a pull-request comment. It also holds
 * the formatting and grouping helpers the other writers share, so all three show the same numbers.
 */
import { CaseResult, Check, Report, STATUS_RANK, Status, TensorMetrics, worstStatus } from "../types";
import { coverageLines } from "../coverage";
import { localizeMarkdown } from "./localize-view";
import { floorSummary, EXCESS_EXPLAINED } from "../float64-floor";

export const STATUSES: readonly Status[] = ["pass", "fail", "xfail", "xpass", "error", "skip"];

/** Pipeline order; stages the runner adds later sort after these, in order of appearance. */
const STAGE_ORDER = ["tokenizer", "text_encoder", "rng", "scheduler", "unet", "vae_encode", "vae_decode", "vae_roundtrip", "vae", "end_to_end"];

/** Statuses that make a run fail, listed as "failing cases". */
export function isFailing(s: Status): boolean {
  return s === "fail" || s === "xpass" || s === "error";
}

/** XML 1.0 forbids most C0 controls and lone surrogates; HTML and Markdown gain nothing from them either. */
export function stripControl(text: string): string {
  return text.replace(/[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu, "");
}

function trimMantissa(s: string): string {
  const [mantissa, exp] = s.split("e");
  const m = mantissa.includes(".") ? mantissa.replace(/0+$/, "").replace(/\.$/, "") : mantissa;
  return exp === undefined ? m : `${m}e${exp.replace(/^\+/, "")}`;
}

/** 3 significant digits; exponent notation below 1e-3 and from 1e5; "∞" for infinities. */
export function formatNumber(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "∞";
  if (x === -Infinity) return "−∞";
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a < 1e-3 || a >= 1e5) return trimMantissa(x.toExponential(2));
  // toPrecision(3) would turn 1234 into "1.23e+3"; whole numbers read better there
  if (a >= 1000) return String(Math.round(x));
  return trimMantissa(x.toPrecision(3));
}

export function formatPsnr(x: number): string {
  return Number.isFinite(x) ? `${formatNumber(x)} dB` : formatNumber(x);
}

/** Cosines of close tensors all print as 1 at 3 digits, so near 1 the gap to 1 is shown instead. */
export function formatCosine(x: number): string {
  if (x === 1) return "1";
  if (x >= 0.999 && x < 1) return `1 − ${formatNumber(1 - x)}`;
  return formatNumber(x);
}

export function formatCount(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : formatNumber(n);
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "?";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${formatNumber(s)} s`;
  const total = Math.round(s);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  return h > 0 ? `${h} h ${String(m).padStart(2, "0")} min` : `${m} min ${String(sec).padStart(2, "0")} s`;
}

/** A metric with how to print it and which direction is worse. */
export function formatMetric(metric: string, value: number): string {
  if (/psnr/i.test(metric)) return formatPsnr(value);
  if (/cosine/i.test(metric)) return formatCosine(value);
  if (/count|pixels|mismatch/i.test(metric)) return formatCount(value);
  return formatNumber(value);
}

export function formatCheck(c: Check): string {
  return `${c.tensor}: ${c.metric} = ${formatMetric(c.metric, c.value)} (limit ${c.kind === "max" ? "≤" : "≥"} ${formatMetric(c.metric, c.limit)})`;
}

/** The numbers a case is judged by at a glance, worst over its tensors and images. */
export interface Headline {
  readonly maxAbs?: number;
  readonly psnr?: number;
  readonly cosine?: number;
  readonly maxUlp?: number;
  readonly psnrU8?: number;
  readonly maxAbsU8?: number;
  readonly nonFinite: number;
}

/** NaN is the worst value in either direction: a NaN drift must never hide behind a finite one. */
function worseMax(a: number | undefined, b: number): number {
  if (a === undefined) return b;
  if (Number.isNaN(a) || Number.isNaN(b)) return NaN;
  return Math.max(a, b);
}

function worseMin(a: number | undefined, b: number): number {
  if (a === undefined) return b;
  if (Number.isNaN(a) || Number.isNaN(b)) return NaN;
  return Math.min(a, b);
}

export function headline(c: CaseResult): Headline {
  let maxAbs: number | undefined;
  let psnr: number | undefined;
  let cosine: number | undefined;
  let maxUlp: number | undefined;
  let psnrU8: number | undefined;
  let maxAbsU8: number | undefined;
  let nonFinite = 0;
  for (const m of Object.values(c.metrics) as TensorMetrics[]) {
    maxAbs = worseMax(maxAbs, m.maxAbs);
    psnr = worseMin(psnr, m.psnr);
    cosine = worseMin(cosine, m.cosine);
    if (m.maxUlp !== undefined) maxUlp = worseMax(maxUlp, m.maxUlp);
    nonFinite += m.nanCount + m.infCount;
  }
  for (const im of c.images ?? []) {
    psnrU8 = worseMin(psnrU8, im.psnrU8);
    maxAbsU8 = worseMax(maxAbsU8, im.maxAbsU8);
  }
  return { maxAbs, psnr, cosine, maxUlp, psnrU8, maxAbsU8, nonFinite };
}

/** Worst headline over several cases (a stage of one model). */
export function worstHeadline(cases: readonly CaseResult[]): Headline {
  let acc: Headline = { nonFinite: 0 };
  for (const c of cases) {
    const h = headline(c);
    acc = {
      maxAbs: h.maxAbs === undefined ? acc.maxAbs : worseMax(acc.maxAbs, h.maxAbs),
      psnr: h.psnr === undefined ? acc.psnr : worseMin(acc.psnr, h.psnr),
      cosine: h.cosine === undefined ? acc.cosine : worseMin(acc.cosine, h.cosine),
      maxUlp: h.maxUlp === undefined ? acc.maxUlp : worseMax(acc.maxUlp, h.maxUlp),
      psnrU8: h.psnrU8 === undefined ? acc.psnrU8 : worseMin(acc.psnrU8, h.psnrU8),
      maxAbsU8: h.maxAbsU8 === undefined ? acc.maxAbsU8 : worseMax(acc.maxAbsU8, h.maxAbsU8),
      nonFinite: acc.nonFinite + h.nonFinite,
    };
  }
  return acc;
}

/** One short line: max abs, PSNR, cosine, image PSNR, whichever the case has. */
export function headlineText(h: Headline): string {
  const parts: string[] = [];
  if (h.maxAbs !== undefined) parts.push(`max abs ${formatNumber(h.maxAbs)}`);
  if (h.maxUlp !== undefined) parts.push(`${formatNumber(h.maxUlp)} ULP`);
  if (h.psnr !== undefined) parts.push(`PSNR ${formatPsnr(h.psnr)}`);
  if (h.cosine !== undefined) parts.push(`cos ${formatCosine(h.cosine)}`);
  if (h.psnrU8 !== undefined) parts.push(`image PSNR ${formatPsnr(h.psnrU8)}`);
  if (h.nonFinite > 0) parts.push(`${formatCount(h.nonFinite)} NaN/Inf`);
  return parts.join(" · ");
}

export function stageOrder(report: Report): string[] {
  const seen: string[] = [];
  for (const r of report.results) if (!seen.includes(r.stage)) seen.push(r.stage);
  const rank = (s: string) => {
    const k = STAGE_ORDER.indexOf(s);
    return k >= 0 ? k : STAGE_ORDER.length + seen.indexOf(s);
  };
  return seen.sort((a, b) => rank(a) - rank(b));
}

/** The --model order, then any label only results mention (a hand-edited or merged report). */
export function modelOrder(report: Report): string[] {
  const out = report.models.map((m) => m.label);
  for (const r of report.results) if (!out.includes(r.model)) out.push(r.model);
  return out;
}

export function countStatuses(cases: readonly CaseResult[]): Record<Status, number> {
  const counts: Record<Status, number> = { pass: 0, fail: 0, xfail: 0, xpass: 0, error: 0, skip: 0 };
  for (const c of cases) counts[c.status]++;
  return counts;
}

export function groupVerdict(cases: readonly CaseResult[]): Status {
  return worstStatus(cases.map((c) => c.status));
}

/** Failing first (worst status), then by id, then by model order. */
export function sortCases(cases: readonly CaseResult[], models: readonly string[]): CaseResult[] {
  return [...cases].sort(
    (a, b) =>
      STATUS_RANK[b.status] - STATUS_RANK[a.status] ||
      (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) ||
      models.indexOf(a.model) - models.indexOf(b.model),
  );
}

/** Unique case ids in stage order, then id order. */
export function caseIds(report: Report): string[] {
  const stages = stageOrder(report);
  const byId = new Map<string, string>();
  for (const r of report.results) if (!byId.has(r.id)) byId.set(r.id, r.stage);
  return [...byId.keys()].sort((a, b) => stages.indexOf(byId.get(a)!) - stages.indexOf(byId.get(b)!) || (a < b ? -1 : a > b ? 1 : 0));
}

export function nonFiniteText(nf: NonNullable<CaseResult["nonFinite"]>): string {
  return `${nf.what} first at ${nf.stage}${nf.step === null ? "" : ` step ${nf.step}`}`;
}

/** The tensor with the largest drift, with where that drift sits. */
export function worstElementText(c: CaseResult): string | null {
  let worst: [string, TensorMetrics] | null = null;
  for (const e of Object.entries(c.metrics) as [string, TensorMetrics][]) {
    if (worst === null || !(e[1].maxAbs <= worst[1].maxAbs)) worst = e;
  }
  if (worst === null || worst[1].worstIndex.length === 0) return null;
  const [name, m] = worst;
  return `${name}[${m.worstIndex.join(", ")}]: ours ${formatNumber(m.worstOurs)} vs ref ${formatNumber(m.worstRef)}`;
}

// --- Markdown proper -------------------------------------------------------------------------

const STATUS_MARK: Readonly<Record<Status, string>> = { pass: "✅", fail: "❌", xfail: "⚠️", xpass: "❗", error: "💥", skip: "⏭️" };

/** Text from prompts, paths and messages must not open tables, links, emphasis or raw HTML. */
function md(value: unknown): string {
  return stripControl(String(value)).replace(/\r\n|\r|\n/g, " ").replace(/([\\`*_[\]<>|#~!])/g, "\\$1");
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

function headlineCells(h: Headline): [string, string] {
  const drift = h.maxAbs !== undefined ? formatNumber(h.maxAbs) : h.maxAbsU8 !== undefined ? `${formatNumber(h.maxAbsU8)} (u8)` : "—";
  const psnr = h.psnr !== undefined ? formatPsnr(h.psnr) : h.psnrU8 !== undefined ? `${formatPsnr(h.psnrU8)} (image)` : "—";
  return [drift, psnr];
}

export function renderMarkdown(report: Report): string {
  const out: string[] = [];
  const models = modelOrder(report);
  const stages = stageOrder(report);
  const s = report.summary;

  const verdict = md(String(s.verdict).toUpperCase());
  out.push(`# sd-harness conformance: ${verdict}`, "");
  out.push(`**Verdict: ${STATUS_MARK[s.verdict] ?? ""} ${verdict}** — ${md(s.total)} case results: ${countsText(s) || "none"}`, "");

  out.push("## Run", "");
  out.push("- **Models:**");
  for (const m of report.models) {
    out.push(`  - ${mdCode(m.label)} — ${mdCode(m.dir)} (${md(Object.keys(m.hashes).length)} ONNX files hashed)`);
  }
  if (report.against) out.push(`- **Against:** ${mdCode(report.against.label)} — ${mdCode(report.against.dir)}: model stages judged against its outputs on the reference set's inputs, not against PyTorch's`);
  const r = report.references;
  out.push(`- **Reference set:** ${mdCode(r.dir)} — ${md(r.model)} on ${md(r.device)} (${md(r.deviceName)})`);
  const refVersions = Object.entries(r.versions).map(([k, v]) => `${md(k)} ${md(v)}`).join(", ");
  if (refVersions) out.push(`- **Reference versions:** ${refVersions}`);
  if (r.command) out.push(`- **Reference command:** ${mdCode(r.command)}`);
  out.push(`- **Tolerance profile:** ${mdCode(report.profile)}`);
  out.push(`- **Started:** ${md(report.run.started)} · **duration** ${formatDuration(report.run.durationMs)}`);
  const h = report.run.host;
  out.push(`- **Host:** ${md(h.platform)}/${md(h.arch)}, ${md(h.cpus)} (${md(h.cores)} cores), ${md(report.run.threads || "ORT default")} threads`);
  const versions = Object.entries(report.run.versions).map(([k, v]) => `${md(k)} ${md(v)}`).join(", ");
  if (versions) out.push(`- **Versions:** ${versions}`);
  if (report.run.shard) out.push(`- **Shard:** ${md(report.run.shard.index)}/${md(report.run.shard.count)}`);
  if (report.run.argv.length > 0) out.push(`- **Command:** ${mdCode(report.run.argv.join(" "))}`);
  out.push("");

  out.push("## Verdict by stage", "");
  const shown = STATUSES.filter((st) => st === "pass" || st === "fail" || report.results.some((c) => c.status === st));
  const verdictRows: string[][] = [];
  for (const stage of stages) {
    for (const model of models) {
      const cases = report.results.filter((c) => c.stage === stage && c.model === model);
      if (cases.length === 0) continue;
      const counts = countStatuses(cases);
      const v = groupVerdict(cases);
      verdictRows.push([md(stage), md(model), `${STATUS_MARK[v] ?? ""} ${md(v)}`, ...shown.map((st) => md(counts[st])), ...headlineCells(worstHeadline(cases)).map(md)]);
    }
  }
  out.push(...table(["Stage", "Model", "Verdict", ...shown, "Worst max abs", "Worst PSNR"], verdictRows, ["l", "l", "l", ...shown.map(() => "r" as const), "r", "r"]), "");

  const floors = floorSummary(report.results);
  if (floors.length > 0) {
    out.push("## Drift against the float64 floor", "", md(EXCESS_EXPLAINED), "");
    const rows = floors.map((f) => [
      md(f.stage), md(f.model),
      f.without === 0 ? `yes (${md(f.withFloor)})` : `${f.withFloor ? `yes (${md(f.withFloor)}), ` : ""}no (${md(f.without)}: ${md(f.whyNot.join("; "))})`,
      f.worst ? `×${md(formatNumber(f.worst.excess))}` : "—",
      f.worst ? md(`${f.worst.id} ${f.worst.tensor}: relL2 ${formatNumber(f.worst.relL2)}, floor ${formatNumber(f.worst.floor)}`) : "—",
    ]);
    out.push(...table(["Stage", "Model", "float64 floor", "Worst excess", "Where (our relL2, PyTorch float32 vs float64)"], rows, ["l", "l", "l", "r", "l"]), "");
  }

  if (report.coverage) {
    out.push("## Coverage", "");
    for (const line of coverageLines(report.coverage)) out.push(`- ${md(line)}`);
    out.push("", report.coverage.gaps.length ? "**Not covered:**" : "Nothing the reference set can check was left out.", "");
    for (const g of report.coverage.gaps) out.push(`- ${md(g.what)}: ${md(g.why)}`);
    if (report.coverage.gaps.length) out.push("");
  }

  if (models.length > 1) {
    out.push("## Drift side by side", "");
    const head = ["Case", ...models.map((m) => `${md(m)} max abs`), ...models.map((m) => `${md(m)} PSNR`), ...models.map((m) => `${md(m)} cosine`)];
    const rows: string[][] = [];
    for (const id of caseIds(report)) {
      const cells = models.map((m) => report.results.find((c) => c.id === id && c.model === m));
      const hs = cells.map((c) => (c ? headline(c) : null));
      rows.push([
        md(id),
        ...hs.map((x) => (x ? md(headlineCells(x)[0]) : "—")),
        ...hs.map((x) => (x ? md(headlineCells(x)[1]) : "—")),
        ...hs.map((x) => (x?.cosine !== undefined ? md(formatCosine(x.cosine)) : "—")),
      ]);
    }
    out.push(...table(head, rows, head.map((_, i) => (i === 0 ? "l" : "r"))), "");
  }

  const failing = sortCases(report.results.filter((c) => isFailing(c.status)), models);
  if (failing.length > 0) {
    out.push(`## Failing cases (${failing.length})`, "");
    for (const c of failing) {
      out.push(`### ${STATUS_MARK[c.status] ?? ""} ${md(c.id)} (${md(c.model)}) — ${md(c.status)}`, "");
      if (c.message) out.push(`- ${md(c.message)}`);
      for (const ch of c.checks.filter((x) => !x.ok)) out.push(`- ✗ ${md(formatCheck(ch))}`);
      if (c.float64Floor !== undefined) out.push(`- float64 floor: ${md(c.float64Floor)}`);
      if (c.status === "xpass") out.push(`- expected to fail${c.tolerance.reason ? `: ${md(c.tolerance.reason)}` : ""}, but every check passed`);
      if (c.nonFinite) out.push(`- first non-finite: ${md(nonFiniteText(c.nonFinite))}`);
      const worst = worstElementText(c);
      if (worst) out.push(`- worst element: ${md(worst)}`);
      out.push(`- tolerance: profile ${mdCode(c.tolerance.profile)}, ${md(c.tolerance.source)}${c.tolerance.reason ? ` — ${md(c.tolerance.reason)}` : ""}`);
      out.push("");
    }
  }

  const xfails = report.results.filter((c) => c.status === "xfail");
  if (xfails.length > 0) {
    out.push(`## Expected failures (${xfails.length})`, "");
    for (const c of xfails) out.push(`- ${md(c.id)} (${md(c.model)}): ${md(c.tolerance.reason ?? c.message ?? "no reason recorded")}`);
    out.push("");
  }

  if (report.baseline) {
    const b = report.baseline;
    out.push("## Baseline regressions", "");
    out.push(`Against ${mdCode(b.file)}, flagging growth beyond ×${md(formatNumber(b.factor))}: **${md(b.regressions)}** regression${b.regressions === 1 ? "" : "s"}.`, "");
    const flagged = report.results.filter((c) => c.regression?.flagged);
    if (flagged.length > 0) {
      const rows = flagged.map((c) => {
        const g = c.regression!;
        return [md(c.id), md(c.model), md(g.metric), md(formatMetric(g.metric, g.before)), md(formatMetric(g.metric, g.after)), `×${md(formatNumber(g.factor))}`];
      });
      out.push(...table(["Case", "Model", "Metric", "Before", "After", "Growth"], rows, ["l", "l", "l", "r", "r", "r"]), "");
    }
  }

  out.push(...localizeMarkdown(report, md));
  return out.join("\n");
}
