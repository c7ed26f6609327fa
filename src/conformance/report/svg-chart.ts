/**
 * The SVG line chart report.html draws drift-vs-step plots with: inline SVG (no scripts), a log
 * axis for error metrics and a linear one otherwise, one coloured line per model, a tooltip per
 * point, and a marker where a value is not finite. Stable classes for tests: the class given
 * (svg.drift-plot, svg.metric-plot), data-case, data-metric, data-scale.
 */
import { escapeHtml as esc, formatMetric, formatNumber } from "./format";

/** One colour per model variant, the same in every plot and table. */
export const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
/** Several series of one model in one plot differ by dash pattern, keeping the model's colour. */
export const DASHES = ["", "7 4", "2 3", "10 3 2 3"];

export interface PlotLine {
  readonly label: string;
  readonly color: string;
  readonly dash: string;
  readonly values: readonly number[];
}

function niceStep(raw: number): number {
  if (!(raw > 0) || !Number.isFinite(raw)) return 1;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

function linearTicks(lo: number, hi: number, target: number, integer: boolean): { lo: number; hi: number; ticks: number[] } {
  let step = niceStep((hi - lo) / target);
  if (integer) step = Math.max(1, Math.round(step));
  const start = Math.floor(lo / step) * step;
  const end = Math.ceil(hi / step) * step;
  const ticks: number[] = [];
  // index-based so accumulated float error cannot drop the last tick
  for (let k = 0; start + k * step <= end + step * 1e-9; k++) ticks.push(Number((start + k * step).toPrecision(12)));
  return { lo: start, hi: end, ticks };
}

function isLogMetric(metric: string): boolean {
  return /abs|rmse|rel|ulp|err|diff/i.test(metric);
}

function fx(v: number): string {
  return (Math.round(v * 10) / 10).toString();
}

export function renderPlot(
  caseId: string,
  metric: string,
  lines: readonly PlotLine[],
  cls: string,
  id: string,
  caseAnchor: string,
): string {
  const W = 720;
  const M = { l: 70, r: 20, t: 30, b: 46 };
  const PH = 250;
  const PW = W - M.l - M.r;
  const log = isLogMetric(metric);
  const steps = Math.max(1, ...lines.map((l) => l.values.length));

  const finite = lines.flatMap((l) => l.values.filter((v) => Number.isFinite(v)));
  const positive = finite.filter((v) => v > 0);
  let yOf: (v: number) => number;
  const yTicks: { v: number; label: string; major: boolean }[] = [];
  if (log) {
    const lo = positive.length > 0 ? Math.min(...positive) : 1e-8;
    const hi = positive.length > 0 ? Math.max(...positive) : 1e-7;
    const e0 = Math.floor(Math.log10(lo));
    let e1 = Math.ceil(Math.log10(hi));
    if (e1 <= e0) e1 = e0 + 1;
    const span = e1 - e0;
    const every = Math.max(1, Math.ceil(span / 7));
    yOf = (v) => M.t + PH - ((Math.log10(v) - e0) / span) * PH;
    for (let e = e0; e <= e1; e++) {
      if ((e - e0) % every === 0) yTicks.push({ v: 10 ** e, label: formatNumber(10 ** e), major: true });
      if (span <= 4 && e < e1) for (let k = 2; k <= 9; k++) yTicks.push({ v: k * 10 ** e, label: "", major: false });
    }
  } else {
    let lo = finite.length > 0 ? Math.min(...finite) : 0;
    let hi = finite.length > 0 ? Math.max(...finite) : 1;
    if (lo === hi) {
      const pad = Math.abs(lo) * 0.1 || 1;
      lo -= pad;
      hi += pad;
    }
    const t = linearTicks(lo, hi, 5, false);
    yOf = (v) => M.t + PH - ((v - t.lo) / (t.hi - t.lo)) * PH;
    for (const v of t.ticks) yTicks.push({ v, label: formatMetric(metric, v), major: true });
  }
  const bottom = M.t + PH;
  // zero drift has no place on a log axis; it sits on the floor, the tooltip tells the truth
  const yClamped = (v: number) => (log && v <= 0 ? bottom : Math.min(bottom, Math.max(M.t, yOf(v))));
  const xt = linearTicks(0, Math.max(1, steps - 1), 8, true);
  const xOf = (i: number) => M.l + (i / xt.hi) * PW;

  const legendItems = lines.map((l) => ({ ...l, w: 34 + l.label.length * 7 }));
  const legendRows: (typeof legendItems)[] = [[]];
  let rowW = 0;
  for (const item of legendItems) {
    if (rowW + item.w > PW && legendRows[legendRows.length - 1].length > 0) {
      legendRows.push([]);
      rowW = 0;
    }
    legendRows[legendRows.length - 1].push(item);
    rowW += item.w + 14;
  }
  const H = bottom + M.b + legendRows.length * 20 + 6;

  const parts: string[] = [];
  parts.push(
    `<svg class="${cls}" id="${esc(id)}" data-case="${esc(caseId)}" data-metric="${esc(metric)}" data-scale="${log ? "log" : "linear"}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(`${metric} vs step for ${caseId}`)}">`,
  );
  parts.push(`<title>${esc(`${caseId}: ${metric} vs step${log ? " (log scale)" : ""}`)}</title>`);
  parts.push(`<rect class="plot-bg" x="${M.l}" y="${M.t}" width="${PW}" height="${PH}"/>`);
  for (const t of yTicks) {
    const y = yOf(t.v);
    if (y < M.t - 0.5 || y > bottom + 0.5) continue;
    parts.push(`<line class="${t.major ? "grid" : "grid minor"}" x1="${M.l}" x2="${M.l + PW}" y1="${fx(y)}" y2="${fx(y)}"/>`);
    if (t.label) parts.push(`<text class="tick" x="${M.l - 6}" y="${fx(y + 4)}" text-anchor="end">${esc(t.label)}</text>`);
  }
  for (const v of xt.ticks) {
    const x = xOf(v);
    parts.push(`<line class="grid" x1="${fx(x)}" x2="${fx(x)}" y1="${M.t}" y2="${bottom}"/>`);
    parts.push(`<line class="axis" x1="${fx(x)}" x2="${fx(x)}" y1="${bottom}" y2="${bottom + 5}"/>`);
    parts.push(`<text class="tick" x="${fx(x)}" y="${bottom + 18}" text-anchor="middle">${v}</text>`);
  }
  parts.push(`<line class="axis" x1="${M.l}" x2="${M.l + PW}" y1="${bottom}" y2="${bottom}"/>`);
  parts.push(`<line class="axis" x1="${M.l}" x2="${M.l}" y1="${M.t}" y2="${bottom}"/>`);
  parts.push(`<text class="axis-label" x="${M.l + PW / 2}" y="${bottom + 36}" text-anchor="middle">step</text>`);
  parts.push(
    `<text class="axis-label" x="16" y="${M.t + PH / 2}" text-anchor="middle" transform="rotate(-90 16 ${M.t + PH / 2})">${esc(metric)}${log ? " (log)" : ""}</text>`,
  );
  parts.push(`<text class="plot-title" x="${M.l}" y="18">${esc(caseId)}</text>`);

  const marks = steps <= 80;
  for (const l of lines) {
    let d = "";
    let pen = false;
    const dots: string[] = [];
    l.values.forEach((v, i) => {
      const x = xOf(i);
      const tip = `<title>${esc(`${l.label}, step ${i}: ${formatMetric(metric, v)}`)}</title>`;
      if (!Number.isFinite(v)) {
        pen = false;
        dots.push(`<text class="nonfinite" x="${fx(x)}" y="${M.t + 12}" text-anchor="middle">×${tip}</text>`);
        return;
      }
      const y = yClamped(v);
      d += `${pen ? "L" : "M"}${fx(x)} ${fx(y)}`;
      pen = true;
      if (marks) dots.push(`<circle cx="${fx(x)}" cy="${fx(y)}" r="2.6" fill="${l.color}">${tip}</circle>`);
    });
    if (d) parts.push(`<path class="line" d="${d}" stroke="${l.color}"${l.dash ? ` stroke-dasharray="${l.dash}"` : ""}/>`);
    parts.push(...dots);
  }

  legendRows.forEach((row, r) => {
    let x = M.l;
    const y = bottom + M.b + r * 20 + 4;
    for (const item of row) {
      parts.push(
        `<g class="legend-item"><line x1="${x}" x2="${x + 26}" y1="${y}" y2="${y}" stroke="${item.color}" stroke-width="2.5"${item.dash ? ` stroke-dasharray="${item.dash}"` : ""}/><text class="legend" x="${x + 32}" y="${y + 4}">${esc(item.label)}</text></g>`,
      );
      x += item.w + 14;
    }
  });
  parts.push("</svg>");
  return `<figure class="plot-figure">${parts.join("")}<figcaption><a href="#${esc(caseAnchor)}">${esc(caseId)}</a> — ${esc(metric)} vs step${log ? ", log scale" : ""}</figcaption></figure>`;
}
