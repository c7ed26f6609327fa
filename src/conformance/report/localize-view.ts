/**
 * The --localize part of summary.md and report.html: per call, the first module over its limit and
 * the modules introducing the most drift; in HTML also a chart of relL2 along the network (modules
 * in the order their outputs come to exist, blocks named on the axis, one line per model) and the
 * full per-module table. The writers pass in their own escaping (`md`, `esc`), so every value read
 * back from report.json goes through the same function as the rest of the page.
 */
import type { Report } from "../types";
import type { CallLocalization, LocalizeReport, ModuleDrift } from "../types";
import { formatCosine, formatNumber, formatDuration } from "./format";
import { PALETTE } from "./svg-chart";

type Escape = (value: unknown) => string;

/** Calls in reference order, each with its results per model. */
function byCall(loc: LocalizeReport): { call: string; component: string; rows: CallLocalization[] }[] {
  const out: { call: string; component: string; rows: CallLocalization[] }[] = [];
  for (const r of loc.calls) {
    let g = out.find((x) => x.call === r.call);
    if (!g) out.push((g = { call: r.call, component: r.component, rows: [] }));
    g.rows.push(r);
  }
  return out;
}

function ratio(x: number | null): string {
  return x === null ? "—" : `×${formatNumber(x)}`;
}

function firstText(r: CallLocalization): string {
  if (r.error) return `not run: ${r.error}`;
  if (!r.first) return "none over its limit";
  return `${r.first.module} (relL2 ${formatNumber(r.first.relL2)} > ${formatNumber(r.first.limit)})`;
}

function growthText(r: CallLocalization, n = 3): string {
  return (
    r.growth
      .slice(0, n)
      .map((g) => `${g.module} ${ratio(g.introduced)}`)
      .join(", ") || "—"
  );
}

function namingText(r: CallLocalization): string {
  return r.naming === "parameter" ? "parameter names (the export has no scope names)" : "scope names";
}

export function localizeMarkdown(report: Report, md: Escape): string[] {
  const loc = report.localize;
  if (!loc) return [];
  const out: string[] = ["## Where drift starts (--localize)", ""];
  const against = loc.against ? `; each module compared with ${md(loc.against.label)}'s (${md(loc.against.dir)}), not PyTorch's` : "";
  out.push(
    `Module references ${md(loc.references.dir)} (${md(loc.references.model)})${against}; limits ${md(loc.limits.file)}, profile ${md(loc.profile)}; drift introduced = relL2 at the output ÷ relL2 at the module's input (floored at ${md(formatNumber(loc.floor))}); ${md(formatDuration(loc.timeMs))}.`,
    "",
  );
  out.push("| Call | Model | Compared | First module over its limit | Most drift introduced |", "| --- | --- | ---: | --- | --- |");
  for (const g of byCall(loc)) {
    for (const r of g.rows) {
      out.push(
        `| ${md(g.call)} | ${md(r.model)} | ${md(`${r.modules.length}/${r.total}`)}${r.naming === "parameter" ? " ¹" : ""} | ${md(firstText(r))} | ${md(growthText(r))} |`,
      );
    }
  }
  out.push("");
  if (loc.calls.some((r) => r.naming === "parameter"))
    out.push(
      "¹ no scope names in this export (node names were replaced): only modules with parameters of their own under their name (Conv, Linear, LayerNorm) could be matched.",
      "",
    );
  const reasons = new Map<string, number>();
  for (const r of loc.calls) for (const u of r.unmapped) reasons.set(u.why, (reasons.get(u.why) ?? 0) + 1);
  if (reasons.size) {
    out.push("Modules without a counterpart in the ONNX graph (not compared):", "");
    for (const [why, n] of [...reasons].sort((a, b) => b[1] - a[1])) out.push(`- ${md(n)} × ${md(why)}`);
    out.push("");
  }
  const limits = [
    ...Object.entries(loc.limits.profiles)
      .filter(([p]) => p === loc.profile)
      .map(([p, l]) => `profile ${p}: relL2 ≤ ${formatNumber(l.relL2)} — ${l.reason}`),
    ...loc.limits.overrides
      .filter((o) => o.profile === loc.profile)
      .map((o) => `${o.module}: relL2 ≤ ${formatNumber(o.relL2)} — ${o.reason}`),
  ];
  if (limits.length) {
    out.push("Module limits applied:", "");
    for (const l of limits) out.push(`- ${md(l)}`);
    out.push("");
  }
  return out;
}

// ---- HTML -------------------------------------------------------------------------------------

/** The block a module belongs to, for the chart's axis: `down_blocks.1`, `text_model.encoder.layers.2`, `decoder.mid_block`. */
function blockOf(module: string): string {
  const p = module.split(".");
  // the component's wrappers (CLIPTextModel.text_model.encoder, AutoencoderKL.decoder / .encoder)
  let w = 0;
  while (w < p.length - 1 && ["text_model", "encoder", "decoder"].includes(p[w])) w++;
  if (/(_blocks|layers)$/.test(p[w]) && /^\d+$/.test(p[w + 1] ?? "")) return p.slice(0, w + 2).join(".");
  return p.slice(0, w + 1).join(".");
}

function plot(g: { call: string; rows: CallLocalization[] }, models: readonly string[], esc: Escape, limit: number | null): string {
  const order = g.rows.find((r) => r.modules.length > 0)?.modules ?? [];
  const total = Math.max(...g.rows.map((r) => r.total), 1);
  if (order.length === 0) return "";
  const W = 900,
    L = 64,
    R = 16,
    T = 28,
    PH = 240,
    B = 120;
  const PW = W - L - R;
  const values = g.rows.flatMap((r) => r.modules.map((m) => m.relL2)).filter((v) => Number.isFinite(v) && v > 0);
  if (limit !== null) values.push(limit);
  const e0 = Math.floor(Math.log10(Math.min(...values, 1e-7)));
  let e1 = Math.ceil(Math.log10(Math.max(...values, 1e-6)));
  if (e1 <= e0) e1 = e0 + 1;
  const y = (v: number) => T + PH - ((Math.log10(Math.max(v, 10 ** e0)) - e0) / (e1 - e0)) * PH;
  const x = (pos: number) => L + (total <= 1 ? 0 : (pos / (total - 1)) * PW);
  const parts: string[] = [];
  parts.push(
    `<svg class="localize-plot" data-call="${esc(g.call)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${T + PH + B}" width="${W}" height="${T + PH + B}" style="width:100%;height:auto;display:block" role="img" aria-label="${esc(`relL2 per module along the network for ${g.call}`)}">`,
  );
  parts.push(`<rect class="plot-bg" x="${L}" y="${T}" width="${PW}" height="${PH}"/>`);
  parts.push(`<text class="plot-title" x="${L}" y="18">${esc(g.call)}: relL2 per module, in network order</text>`);
  for (let e = e0; e <= e1; e++) {
    parts.push(`<line class="grid" x1="${L}" x2="${L + PW}" y1="${y(10 ** e).toFixed(1)}" y2="${y(10 ** e).toFixed(1)}"/>`);
    parts.push(`<text class="tick" x="${L - 6}" y="${(y(10 ** e) + 4).toFixed(1)}" text-anchor="end">${esc(formatNumber(10 ** e))}</text>`);
  }
  // blocks: a faint separator where each starts, its name below the axis
  let prev = "";
  for (const m of order) {
    const b = blockOf(m.module);
    if (b === prev) continue;
    prev = b;
    const bx = x(m.position).toFixed(1);
    parts.push(`<line class="grid block-start" x1="${bx}" x2="${bx}" y1="${T}" y2="${T + PH}"/>`);
    parts.push(`<text class="tick block-label" transform="translate(${bx},${T + PH + 8}) rotate(50)" text-anchor="start">${esc(b)}</text>`);
  }
  if (limit !== null) {
    parts.push(
      `<line class="limit" x1="${L}" x2="${L + PW}" y1="${y(limit).toFixed(1)}" y2="${y(limit).toFixed(1)}" stroke="#8c959f" stroke-dasharray="6 4"/>`,
    );
    parts.push(
      `<text class="tick" x="${L + PW}" y="${(y(limit) - 4).toFixed(1)}" text-anchor="end">limit ${esc(formatNumber(limit))}</text>`,
    );
  }
  g.rows.forEach((r) => {
    const colour = PALETTE[Math.max(0, models.indexOf(r.model)) % PALETTE.length];
    const pts = r.modules.filter((m) => Number.isFinite(m.relL2)).map((m) => `${x(m.position).toFixed(1)},${y(m.relL2).toFixed(1)}`);
    if (pts.length > 1) parts.push(`<polyline class="line" data-model="${esc(r.model)}" points="${pts.join(" ")}" stroke="${colour}"/>`);
    for (const m of r.modules) {
      if (!Number.isFinite(m.relL2)) continue;
      parts.push(
        `<circle cx="${x(m.position).toFixed(1)}" cy="${y(m.relL2).toFixed(1)}" r="${m === r.first ? 5 : 1.6}" fill="${colour}"${m === r.first ? ' class="first-over"' : ""}><title>${esc(`${r.model} ${m.module}: relL2 ${formatNumber(m.relL2)}`)}</title></circle>`,
      );
    }
  });
  parts.push(legendRow(g.rows, models, L, T + PH + B, esc));
  parts.push("</svg>");
  return parts.join("");
}

/** One coloured swatch and label per model along the bottom of a localize plot of height `bottom`. */
function legendRow(rows: readonly CallLocalization[], models: readonly string[], left: number, bottom: number, esc: Escape): string {
  let lx = left;
  const out: string[] = [];
  for (const r of rows) {
    const colour = PALETTE[Math.max(0, models.indexOf(r.model)) % PALETTE.length];
    out.push(
      `<line x1="${lx}" x2="${lx + 20}" y1="${bottom - 10}" y2="${bottom - 10}" stroke="${colour}" stroke-width="3"/><text class="legend" x="${lx + 26}" y="${bottom - 6}">${esc(r.model)}</text>`,
    );
    lx += 40 + r.model.length * 7;
  }
  return out.join("");
}

/**
 * The drift each leaf adds itself: its "introduced" ratio (relL2 at its output ÷ relL2 at its
 * input, the input's floored) as a stem from 1 (adds nothing) at the leaf's place in network order,
 * log scale, one colour per model. Blocks are left out: a block's ratio is the sum of the leaves
 * inside it. Where the first chart shows drift growing, this one shows which leaf grew it.
 */
function addedPlot(g: { call: string; rows: CallLocalization[] }, models: readonly string[], esc: Escape): string {
  const total = Math.max(...g.rows.map((r) => r.total), 1);
  const leaves = g.rows.map((r) => {
    const names = r.modules.map((m) => m.module);
    return r.modules.filter(
      (m) => m.introduced !== null && Number.isFinite(m.introduced) && m.introduced > 0 && !names.some((n) => n.startsWith(`${m.module}.`)),
    );
  });
  const values = leaves.flat().map((m) => m.introduced!);
  if (values.length === 0) return "";
  const W = 900,
    L = 64,
    R = 16,
    T = 28,
    PH = 180,
    B = 40;
  const PW = W - L - R;
  const e0 = Math.min(0, Math.floor(Math.log10(Math.min(...values))));
  let e1 = Math.ceil(Math.log10(Math.max(...values, 10)));
  if (e1 <= e0) e1 = e0 + 1;
  const y = (v: number) => T + PH - ((Math.log10(Math.max(v, 10 ** e0)) - e0) / (e1 - e0)) * PH;
  const x = (pos: number) => L + (total <= 1 ? 0 : (pos / (total - 1)) * PW);
  const parts: string[] = [];
  parts.push(
    `<svg class="localize-added" data-call="${esc(g.call)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${T + PH + B}" width="${W}" height="${T + PH + B}" style="width:100%;height:auto;display:block" role="img" aria-label="${esc(`drift each leaf module adds itself for ${g.call}`)}">`,
  );
  parts.push(`<rect class="plot-bg" x="${L}" y="${T}" width="${PW}" height="${PH}"/>`);
  parts.push(`<text class="plot-title" x="${L}" y="18">${esc(g.call)}: drift each leaf adds itself (relL2 out ÷ in; 1 = none)</text>`);
  for (let e = e0; e <= e1; e++) {
    parts.push(`<line class="grid" x1="${L}" x2="${L + PW}" y1="${y(10 ** e).toFixed(1)}" y2="${y(10 ** e).toFixed(1)}"/>`);
    parts.push(
      `<text class="tick" x="${L - 6}" y="${(y(10 ** e) + 4).toFixed(1)}" text-anchor="end">×${esc(formatNumber(10 ** e))}</text>`,
    );
  }
  g.rows.forEach((r, k) => {
    const colour = PALETTE[Math.max(0, models.indexOf(r.model)) % PALETTE.length];
    const dx = (k - (g.rows.length - 1) / 2) * 1.5; // models side by side at one place
    for (const m of leaves[k]) {
      const px = (x(m.position) + dx).toFixed(1);
      parts.push(
        `<line class="added" data-model="${esc(r.model)}" x1="${px}" x2="${px}" y1="${y(1).toFixed(1)}" y2="${y(m.introduced!).toFixed(1)}" stroke="${colour}" stroke-width="${m === r.first ? 3 : 1.2}"><title>${esc(`${r.model} ${m.module}: x${formatNumber(m.introduced!)} (relL2 ${formatNumber(m.relL2)} from ${formatNumber(m.inputRelL2 ?? 0)} at ${m.input})`)}</title></line>`,
      );
    }
  });
  parts.push(legendRow(g.rows, models, L, T + PH + B, esc));
  parts.push("</svg>");
  return parts.join("");
}

function moduleRows(r: CallLocalization, esc: Escape): string {
  const row = (m: ModuleDrift) =>
    `<tr class="${m.over ? "st-fail" : ""}"><td>${esc(m.position)}</td><td><code>${esc(m.module)}</code></td><td>${esc(m.class)}</td><td class="num">${esc(formatNumber(m.relL2))}</td><td class="num">${esc(formatNumber(m.maxAbs))}</td><td class="num">${esc(formatCosine(m.cosine))}</td><td class="num">${esc(formatNumber(m.limit))}</td><td class="num">${esc(ratio(m.introduced))}</td><td>${esc(m.input ?? "—")}</td></tr>`;
  const unmapped = r.unmapped
    .map((u) => `<tr><td></td><td><code>${esc(u.module)}</code></td><td colspan="7">not compared: ${esc(u.why)}</td></tr>`)
    .join("");
  return `<table class="localize-table"><thead><tr><th>#</th><th>Module</th><th>Class</th><th>relL2</th><th>max abs</th><th>cosine</th><th>limit</th><th>introduced</th><th>input from</th></tr></thead><tbody>${r.modules.map(row).join("")}${unmapped}</tbody></table>`;
}

export function localizeHtml(report: Report, esc: Escape): string {
  const loc = report.localize;
  if (!loc) return "";
  const models = [...new Set(loc.calls.map((r) => r.model))];
  const groups = byCall(loc);
  const profileLimit = loc.limits.profiles[loc.profile]?.relL2 ?? null;
  const summary = groups
    .flatMap((g) =>
      g.rows.map(
        (r) =>
          `<tr class="${r.first ? "st-fail" : r.error ? "st-error" : ""}"><td>${esc(g.call)}</td><td>${esc(r.model)}</td><td class="num">${esc(`${r.modules.length}/${r.total}`)}</td><td>${esc(firstText(r))}</td><td>${esc(growthText(r))}</td><td>${esc(namingText(r))}</td></tr>`,
      ),
    )
    .join("");
  const details = groups
    .flatMap((g) =>
      g.rows.map(
        (r) =>
          `<details class="localize-details" data-call="${esc(g.call)}" data-model="${esc(r.model)}"><summary>${esc(g.call)} · ${esc(r.model)}: every module</summary>${moduleRows(r, esc)}</details>`,
      ),
    )
    .join("");
  const limitNotes = [
    ...Object.entries(loc.limits.profiles)
      .filter(([p]) => p === loc.profile)
      .map(([p, l]) => `<li>profile ${esc(p)}: relL2 ≤ ${esc(formatNumber(l.relL2))} — ${esc(l.reason)}</li>`),
    ...loc.limits.overrides
      .filter((o) => o.profile === loc.profile)
      .map((o) => `<li><code>${esc(o.module)}</code>: relL2 ≤ ${esc(formatNumber(o.relL2))} — ${esc(o.reason)}</li>`),
  ].join("");
  return `<section class="card" id="localize"><h2>Where drift starts (--localize)</h2>
<p>Each module's output against ${loc.against ? `${esc(loc.against.label)}'s (${esc(loc.against.dir)}; inputs from ${esc(loc.references.dir)})` : `PyTorch's (${esc(loc.references.dir)})`}, in network order; the dashed line is the profile's module limit (overrides in the table below). Drift introduced = relL2 at the output ÷ relL2 at the module's input (floored at ${esc(formatNumber(loc.floor))}). ${esc(formatDuration(loc.timeMs))}.</p>
<table class="localize-summary"><thead><tr><th>Call</th><th>Model</th><th>Compared</th><th>First module over its limit</th><th>Most drift introduced</th><th>Matched by</th></tr></thead><tbody>${summary}</tbody></table>
<div class="plots">${groups.map((g) => plot(g, models, esc, profileLimit) + addedPlot(g, models, esc)).join("\n")}</div>
<ul class="limits">${limitNotes}</ul>
${details}</section>`;
}
