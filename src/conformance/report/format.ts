/**
 * What every report writer shares, so all of them show the same numbers the same way: number and
 * metric formatting, control-character stripping and HTML escaping, a case's worst figures, the
 * order of stages, models and cases, and the short texts for non-finite values and worst elements.
 */
import { CaseResult, Check, ModelInfo, Report, STATUS_RANK, Status, TensorMetrics, worstStatus } from "../types";

export { countStatuses } from "../types";
import { displayRank } from "../stages/index";
import { runtimeText } from "../../runtime/types";
import { metricDef } from "../judge/metric-table";

/** Ranks past every stage the registry knows: a stage from another version's report sorts after them. */
const UNKNOWN_STAGE_RANK = 1000;

export const STATUSES: readonly Status[] = ["pass", "fail", "xfail", "xpass", "error", "skip"];

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

/** A metric as the metric table says to print it (judge/metric-table.ts); a name it does not know as a plain number. */
export function formatMetric(metric: string, value: number): string {
  switch (metricDef(metric)?.format) {
    case "psnr":
      return formatPsnr(value);
    case "cosine":
      return formatCosine(value);
    case "count":
      return formatCount(value);
    default:
      return formatNumber(value);
  }
}

export function formatCheck(c: Check): string {
  return `${c.tensor}: ${c.metric} = ${formatMetric(c.metric, c.value)} (limit ${c.kind === "max" ? "≤" : "≥"} ${formatMetric(c.metric, c.limit)})`;
}

/**
 * The worst figures of a case over its tensors and images (max abs, PSNR, cosine, ...), shown
 * beside its headline metric (../judge/headline.ts) in tables, case summaries and JUnit properties.
 */
export interface Figures {
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

export function caseFigures(c: CaseResult): Figures {
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

/** Worst figures over several cases (a stage of one model). */
export function worstFigures(cases: readonly CaseResult[]): Figures {
  let acc: Figures = { nonFinite: 0 };
  for (const c of cases) {
    const h = caseFigures(c);
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
export function figuresText(h: Figures): string {
  const parts: string[] = [];
  if (h.maxAbs !== undefined) parts.push(`max abs ${formatNumber(h.maxAbs)}`);
  if (h.maxUlp !== undefined) parts.push(`${formatNumber(h.maxUlp)} ULP`);
  if (h.psnr !== undefined) parts.push(`PSNR ${formatPsnr(h.psnr)}`);
  if (h.cosine !== undefined) parts.push(`cos ${formatCosine(h.cosine)}`);
  if (h.psnrU8 !== undefined) parts.push(`image PSNR ${formatPsnr(h.psnrU8)}`);
  if (h.nonFinite > 0) parts.push(`${formatCount(h.nonFinite)} NaN/Inf`);
  return parts.join(" · ");
}

/** The report's stages in pipeline order (the stage registry's display rank); stages this version does not know after them, in order of appearance. */
export function stageOrder(report: Report): string[] {
  const seen: string[] = [];
  for (const r of report.results) if (!seen.includes(r.stage)) seen.push(r.stage);
  const rank = (s: string) => displayRank(s) ?? UNKNOWN_STAGE_RANK + seen.indexOf(s);
  return seen.sort((a, b) => rank(a) - rank(b));
}

/** The --model order, then any label only results mention (a hand-edited or merged report). */
export function modelOrder(report: Report): string[] {
  const out = report.models.map((m) => m.label);
  for (const r of report.results) if (!out.includes(r.model)) out.push(r.model);
  return out;
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

/** HTML text and attribute escaping; every value a report holds goes through here, numbers too: report.json is read back from disk. */
export function escapeHtml(value: unknown): string {
  return stripControl(String(value))
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

/** The runtime a model ran on, in one line (reports before runtimes were recorded ran on onnxruntime-node). */
export function modelRuntimeText(m: ModelInfo): string {
  return m.runtime ? runtimeText(m.runtime) : "ort-node (not recorded in this report)";
}
