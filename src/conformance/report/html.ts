/**
 * report.html: one self-contained file (inline CSS, inline SVG charts, images as data: URIs, no
 * scripts, no external URLs) so it can be attached to a CI run or mailed and still open offline.
 * Elements tests and people look for carry stable ids / classes: #verdict, table.verdict-table,
 * svg.drift-plot[data-case], figure.image-triplet.
 */
import type { Reporter } from "./reporter";
import * as path from "node:path";
import { CaseResult, ImageMetrics, Report, Series, Status, TensorMetrics } from "../types";
import { coverageLines } from "../cases/coverage";
import {
  STATUSES,
  caseFigures,
  caseIds,
  countStatuses,
  escapeHtml as esc,
  figuresText,
  formatCosine,
  formatCount,
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
  worstElementText,
  worstFigures,
} from "./format";
import { PALETTE, DASHES, PlotLine, renderPlot } from "./svg-chart";
import { isFailing } from "../types";
import { plotRank } from "../stages/index";
import { localizeHtml } from "./localize-view";
import { EXCESS_EXPLAINED, floorText } from "../judge/float64-floor";
import { machineText, machinesDiffer } from "../../util/machine";

const STATUS_LABEL: Readonly<Record<Status, string>> = {
  pass: "PASS",
  fail: "FAIL",
  xfail: "XFAIL",
  xpass: "XPASS",
  error: "ERROR",
  skip: "SKIP",
};

/** Ids from case ids (`unet:astronaut-free`) and labels; unique within the page. */
class IdMaker {
  private readonly used = new Map<string, number>();
  private readonly given = new Map<string, string>();

  get(key: string, prefix: string): string {
    const full = `${prefix}\u0000${key}`;
    const known = this.given.get(full);
    if (known) return known;
    const base = `${prefix}-${key.replace(/[^A-Za-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "") || "x"}`;
    const n = this.used.get(base) ?? 0;
    this.used.set(base, n + 1);
    const id = n === 0 ? base : `${base}-${n + 1}`;
    this.given.set(full, id);
    return id;
  }
}

function badge(s: Status): string {
  return `<span class="badge st-${esc(s)}">${esc(STATUS_LABEL[s] ?? s)}</span>`;
}

function countChips(counts: Record<Status, number>): string {
  return STATUSES.filter((s) => counts[s] > 0)
    .map((s) => `<span class="chip st-${esc(s)}">${esc(counts[s])} ${esc(s)}</span>`)
    .join(" ");
}

/** Plots for one case: the max-abs drift (svg.drift-plot), then any other metric the series carry. */
function renderCasePlots(report: Report, id: string, models: readonly string[], ids: IdMaker): string {
  const withSeries = models
    .map((m) => report.results.find((c) => c.id === id && c.model === m))
    .filter((c): c is CaseResult => !!c && (c.series ?? []).some((s) => s.values.length > 0));
  if (withSeries.length === 0) return "";
  const all: { model: string; s: Series }[] = withSeries.flatMap((c) =>
    (c.series ?? []).filter((s) => s.values.length > 0).map((s) => ({ model: c.model, s })),
  );
  const metrics: string[] = [];
  for (const { s } of all) if (!metrics.includes(s.metric)) metrics.push(s.metric);
  metrics.sort((a, b) => Number(!/maxabs/i.test(a)) - Number(!/maxabs/i.test(b)));
  const anchor = ids.get(`${withSeries[0].model}\u0000${id}`, "case");
  return metrics
    .map((metric, k) => {
      const chosen = all.filter((x) => x.s.metric === metric);
      const names = [...new Set(chosen.map((x) => x.s.name))];
      const lines: PlotLine[] = chosen.map(({ model, s }) => ({
        label: names.length > 1 ? `${model} · ${s.name}` : model,
        color: PALETTE[Math.max(0, models.indexOf(model)) % PALETTE.length],
        dash: DASHES[names.indexOf(s.name) % DASHES.length],
        values: s.values,
      }));
      const cls = k === 0 ? "drift-plot" : "metric-plot";
      return renderPlot(id, metric, lines, cls, ids.get(`${id}\u0000${metric}`, "plot"), anchor);
    })
    .join("\n");
}

// --- Tables and case details -------------------------------------------------------------------

function provenance(report: Report): string {
  const r = report.references;
  const h = report.run.host;
  const versions = (v: Readonly<Record<string, string>>) =>
    Object.entries(v)
      .map(([k, x]) => `<span class="ver"><b>${esc(k)}</b> ${esc(x)}</span>`)
      .join(" ");
  const modelRows = report.models
    .map((m, i) => {
      const files = Object.entries(m.hashes);
      const hashes = files.length
        ? `<details class="hashes"><summary>${esc(files.length)} ONNX file${files.length === 1 ? "" : "s"}</summary><ul>${files
            .map(([f, sha]) => `<li><code>${esc(f)}</code> <code class="sha">${esc(sha.slice(0, 16))}…</code></li>`)
            .join("")}</ul></details>`
        : "—";
      return `<tr><td><span class="swatch" style="background:${PALETTE[i % PALETTE.length]}"></span><b>${esc(m.label)}</b></td><td><code>${esc(m.dir)}</code></td><td>${hashes}</td><td>${esc(modelRuntimeText(m))}</td></tr>`;
    })
    .join("");
  const rows: [string, string][] = [
    ["Reference set", `<code>${esc(r.dir)}</code> — ${esc(r.model)} on <b>${esc(r.device)}</b> (${esc(r.deviceName)})`],
    ["Reference versions", versions(r.versions) || "—"],
    ["Reference command", r.command ? `<code>${esc(r.command)}</code>` : "—"],
    ["Tolerance profile", `<code>${esc(report.profile)}</code>`],
    ["Started", `${esc(report.run.started)} · finished ${esc(report.run.finished)} · <b>${esc(formatDuration(report.run.durationMs))}</b>`],
    [
      "Host",
      `${esc(h.platform)}/${esc(h.arch)}, ${esc(machineText({ model: h.cpus, isa: h.isa }))} (${esc(h.cores)} cores), ${esc(report.run.threads || "ORT default")} threads`,
    ],
    ...(r.machine
      ? [
          [
            "Reference machine",
            `${esc(machineText(r.machine))}${machinesDiffer({ model: h.cpus, isa: h.isa }, r.machine) ? " — <b>another CPU than this run's</b>: float32 rounding differs between them, which the set's floor envelope allows for" : ""}`,
          ] as [string, string],
        ]
      : []),
    ["Versions", versions(report.run.versions) || "—"],
  ];
  if (report.run.shard) rows.push(["Shard", `${esc(report.run.shard.index)} / ${esc(report.run.shard.count)}`]);
  if (report.run.argv.length) rows.push(["Command", `<code>${esc(report.run.argv.join(" "))}</code>`]);
  return `<section class="card provenance" id="provenance"><h2>Run</h2>
<table class="models"><thead><tr><th>Model</th><th>Folder</th><th>Files</th><th>Runtime</th></tr></thead><tbody>${modelRows}</tbody></table>
<dl>${rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl></section>`;
}

function verdictTable(report: Report, stages: readonly string[], models: readonly string[], ids: IdMaker): string {
  if (stages.length === 0)
    return `<section class="card" id="verdicts"><h2>Verdict by stage</h2><p>No case results in this run (all filtered out, or an empty shard).</p></section>`;
  const head = `<tr><th>Stage</th>${models.map((m, i) => `<th><span class="swatch" style="background:${PALETTE[i % PALETTE.length]}"></span>${esc(m)}</th>`).join("")}</tr>`;
  const body = stages
    .map((stage) => {
      const cells = models
        .map((model) => {
          const cases = report.results.filter((c) => c.stage === stage && c.model === model);
          if (cases.length === 0) return `<td class="empty">—</td>`;
          const v = groupVerdict(cases);
          const text = figuresText(worstFigures(cases));
          return `<td class="cell st-${esc(v)}" data-status="${esc(v)}">${badge(v)} <span class="counts">${countChips(countStatuses(cases))}</span>${text ? `<div class="worst">worst: ${esc(text)}</div>` : ""}</td>`;
        })
        .join("");
      return `<tr><th scope="row"><a href="#${esc(ids.get(stage, "stage"))}">${esc(stage)}</a></th>${cells}</tr>`;
    })
    .join("\n");
  return `<section class="card" id="verdicts"><h2>Verdict by stage</h2><table class="verdict-table"><thead>${head}</thead><tbody>${body}</tbody></table></section>`;
}

function driftTable(report: Report, models: readonly string[], ids: IdMaker): string {
  const head = `<tr><th rowspan="2">Case</th>${models.map((m) => `<th colspan="3" class="group">${esc(m)}</th>`).join("")}</tr><tr>${models.map(() => "<th>max abs</th><th>PSNR</th><th>cosine</th>").join("")}</tr>`;
  const rows = caseIds(report)
    .map((id) => {
      const cells = models
        .map((m) => {
          const c = report.results.find((x) => x.id === id && x.model === m);
          if (!c) return `<td class="empty">—</td><td class="empty">—</td><td class="empty">—</td>`;
          const h = caseFigures(c);
          const drift =
            h.maxAbs !== undefined
              ? esc(formatNumber(h.maxAbs))
              : h.maxAbsU8 !== undefined
                ? `${esc(formatNumber(h.maxAbsU8))} <small>u8</small>`
                : "—";
          const psnr =
            h.psnr !== undefined
              ? esc(formatPsnr(h.psnr))
              : h.psnrU8 !== undefined
                ? `${esc(formatPsnr(h.psnrU8))} <small>image</small>`
                : "—";
          const cos = h.cosine !== undefined ? esc(formatCosine(h.cosine)) : "—";
          const st = esc(c.status);
          return `<td class="num st-${st}">${drift}</td><td class="num st-${st}">${psnr}</td><td class="num st-${st}">${cos}</td>`;
        })
        .join("");
      const first = report.results.find((x) => x.id === id)!;
      return `<tr><th scope="row"><a href="#${esc(ids.get(`${first.model}\u0000${id}`, "case"))}">${esc(id)}</a></th>${cells}</tr>`;
    })
    .join("\n");
  return `<section class="card" id="drift"><h2>Drift side by side</h2><div class="scroll"><table class="drift-table"><thead>${head}</thead><tbody>${rows}</tbody></table></div></section>`;
}

function coverageSection(report: Report): string {
  const c = report.coverage;
  if (!c) return "";
  const facts = coverageLines(c)
    .map((l) => `<li>${esc(l)}</li>`)
    .join("");
  const gaps = c.gaps.length
    ? `<h3>Not covered</h3><ul class="gaps">${c.gaps.map((g) => `<li><b>${esc(g.what)}</b>: ${esc(g.why)}</li>`).join("")}</ul>`
    : "<p>Nothing the reference set can check was left out.</p>";
  return `<section class="card" id="coverage"><h2>Coverage</h2><ul>${facts}</ul>${gaps}</section>`;
}

function baselineSection(report: Report): string {
  const b = report.baseline;
  if (!b) return "";
  const flagged = report.results.filter((c) => c.regression?.flagged);
  const rows = flagged
    .map((c) => {
      const g = c.regression!;
      return `<tr><td>${esc(c.id)}</td><td>${esc(c.model)}</td><td>${esc(g.metric)}</td><td class="num">${esc(formatMetric(g.metric, g.before))}</td><td class="num">${esc(formatMetric(g.metric, g.after))}</td><td class="num st-fail">×${esc(formatNumber(g.factor))}</td></tr>`;
    })
    .join("");
  return `<section class="card" id="baseline"><h2>Baseline regressions</h2><p>Against <code>${esc(b.file)}</code>, flagging growth beyond ×${esc(formatNumber(b.factor))}: <b>${esc(b.regressions)}</b> regression${b.regressions === 1 ? "" : "s"}.</p>${
    flagged.length
      ? `<table class="regressions"><thead><tr><th>Case</th><th>Model</th><th>Metric</th><th>Before</th><th>After</th><th>Growth</th></tr></thead><tbody>${rows}</tbody></table>`
      : ""
  }</section>`;
}

function metricsTable(metrics: Readonly<Record<string, TensorMetrics>>): string {
  const entries = Object.entries(metrics) as [string, TensorMetrics][];
  if (entries.length === 0) return "";
  const ulp = entries.some(([, m]) => m.maxUlp !== undefined);
  const excess = entries.some(([, m]) => m.excess !== undefined);
  const head = `<tr><th>Tensor</th><th>elements</th><th>max abs</th><th>mean abs</th><th>RMSE</th><th>rel L2</th>${excess ? `<th title="${esc(EXCESS_EXPLAINED)}">excess (× float32 floor)</th>` : ""}<th>cosine</th><th>PSNR</th><th>p99 abs</th>${ulp ? "<th>max ULP</th>" : ""}<th>NaN / Inf</th><th>worst element</th></tr>`;
  const rows = entries
    .map(([name, m]) => {
      const bad = m.nanCount + m.infCount > 0 ? ' class="num bad"' : ' class="num"';
      const n = (x: number) => esc(formatNumber(x));
      return `<tr><td><code>${esc(name)}</code></td><td class="num">${esc(formatCount(m.count))}</td><td class="num">${n(m.maxAbs)}</td><td class="num">${n(m.meanAbs)}</td><td class="num">${n(m.rmse)}</td><td class="num">${n(m.relL2)}</td>${excess ? `<td class="num">${m.excess === undefined ? "—" : n(m.excess)}</td>` : ""}<td class="num">${esc(formatCosine(m.cosine))}</td><td class="num">${esc(formatPsnr(m.psnr))}</td><td class="num">${n(m.p99Abs)}</td>${
        ulp ? `<td class="num">${m.maxUlp === undefined ? "—" : n(m.maxUlp)}</td>` : ""
      }<td${bad}>${esc(formatCount(m.nanCount))} / ${esc(formatCount(m.infCount))}</td><td><code>[${esc(m.worstIndex.join(", "))}]</code> ${n(m.worstOurs)} vs ${n(m.worstRef)}</td></tr>`;
    })
    .join("");
  return `<table class="metrics"><thead>${head}</thead><tbody>${rows}</tbody></table>`;
}

function checksTable(c: CaseResult): string {
  if (c.checks.length === 0) return "";
  const rows = [...c.checks]
    .sort((a, b) => Number(a.ok) - Number(b.ok))
    .map(
      (ch) =>
        `<tr class="${ch.ok ? "ok" : "bad"}"><td>${ch.ok ? "✓" : "✗"}</td><td><code>${esc(ch.tensor)}</code></td><td>${esc(ch.metric)}</td><td class="num">${esc(formatMetric(ch.metric, ch.value))}</td><td class="num">${ch.kind === "max" ? "≤" : "≥"} ${esc(formatMetric(ch.metric, ch.limit))}</td></tr>`,
    )
    .join("");
  return `<table class="checks"><thead><tr><th></th><th>Tensor</th><th>Metric</th><th>Value</th><th>Limit</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function dataUri(rel: string | undefined, readAsset: (relPath: string) => Buffer | null): string | null {
  if (!rel) return null;
  let buf: Buffer | null;
  try {
    buf = readAsset(rel);
  } catch {
    // an unreadable picture should cost one panel, not the whole report
    buf = null;
  }
  if (!buf) return null;
  const ext = path.extname(rel).toLowerCase();
  const mime =
    ext === ".jpg" || ext === ".jpeg" ? "image/jpeg" : ext === ".webp" ? "image/webp" : ext === ".svg" ? "image/svg+xml" : "image/png";
  return `data:${mime};base64,${buf.toString("base64")}`;
}

function imageTriplet(im: ImageMetrics, index: number, count: number, readAsset: (relPath: string) => Buffer | null): string {
  const total = im.width * im.height;
  const pct = total > 0 ? (100 * im.mismatchedPixels) / total : 0;
  const caption = `${count > 1 ? `image ${index} · ` : ""}${im.width}×${im.height} · PSNR ${formatPsnr(im.psnrU8)} · max abs ${formatNumber(im.maxAbsU8)} / 255 · ${formatCount(im.mismatchedPixels)} px differ (${formatNumber(pct)}%)`;
  if (!im.refPng && !im.oursPng && !im.diffPng) return `<p class="image-metrics">${esc(caption)}</p>`;
  const small = im.width > 0 && im.width < 256 ? " pixelated" : "";
  const panel = (rel: string | undefined, label: string) => {
    const uri = dataUri(rel, readAsset);
    if (!uri)
      return `<div class="panel missing"><div class="placeholder">${rel ? `missing: ${esc(rel)}` : "not written"}</div><span>${label}</span></div>`;
    return `<div class="panel"><img class="${label.replace(/\W.*/, "")}${small}" src="${esc(uri)}" alt="${esc(label)}" width="${esc(im.width)}" height="${esc(im.height)}"><span>${label}</span></div>`;
  };
  return `<figure class="image-triplet">${panel(im.refPng, "reference")}${panel(im.oursPng, "ours")}${panel(im.diffPng, "diff heat map")}<figcaption>${esc(caption)}</figcaption></figure>`;
}

function caseDetails(
  c: CaseResult,
  ids: IdMaker,
  plotIds: ReadonlyMap<string, string>,
  readAsset: (relPath: string) => Buffer | null,
): string {
  const id = ids.get(`${c.model}\u0000${c.id}`, "case");
  const h = figuresText(caseFigures(c));
  const body: string[] = [];
  if (c.message) body.push(`<p class="message">${esc(c.message)}</p>`);
  if (c.status === "xpass")
    body.push(
      `<p class="callout st-xpass">Expected to fail${c.tolerance.reason ? ` (${esc(c.tolerance.reason)})` : ""}, but every check passed: the expected-failure entry is stale.</p>`,
    );
  if (c.status === "xfail" && c.tolerance.reason) body.push(`<p class="callout st-xfail">Expected failure: ${esc(c.tolerance.reason)}</p>`);
  if (c.nonFinite) body.push(`<p class="callout st-error">Non-finite values: ${esc(nonFiniteText(c.nonFinite))}</p>`);
  const worst = worstElementText(c);
  if (worst && isFailing(c.status)) body.push(`<p class="worst-element">Worst element: <code>${esc(worst)}</code></p>`);
  body.push(checksTable(c));
  body.push(metricsTable(c.metrics));
  const images = c.images ?? [];
  images.forEach((im, i) => body.push(imageTriplet(im, i, images.length, readAsset)));
  const plot = plotIds.get(c.id);
  if (plot) body.push(`<p class="plot-link"><a href="#${esc(plot)}">Drift vs step plot ↑</a></p>`);
  const tol = `Tolerance: profile <code>${esc(c.tolerance.profile)}</code>, ${esc(c.tolerance.source)}${c.tolerance.reason && c.status !== "xfail" ? ` — ${esc(c.tolerance.reason)}` : ""}`;
  body.push(`<p class="tolerance">${tol}</p>`);
  if (c.float64Floor !== undefined) body.push(`<p class="floor">float64 floor: ${esc(floorText(c))}</p>`);
  if (c.regression) {
    const g = c.regression;
    body.push(
      `<p class="regression${g.flagged ? " flagged" : ""}">Baseline: ${esc(g.metric)} ${esc(formatMetric(g.metric, g.before))} → ${esc(formatMetric(g.metric, g.after))} (×${esc(formatNumber(g.factor))})${g.flagged ? " — regression" : ""}</p>`,
    );
  }
  const open = isFailing(c.status) ? " open" : "";
  return `<details class="case st-${esc(c.status)}" id="${esc(id)}" data-case="${esc(c.id)}" data-model="${esc(c.model)}" data-status="${esc(c.status)}"${open}><summary>${badge(c.status)} <code class="case-id">${esc(c.id)}</code> <span class="model">${esc(c.model)}</span> <span class="headline">${esc(h)}</span> <span class="time">${esc(formatDuration(c.timeMs))}</span></summary><div class="case-body">${body.filter(Boolean).join("\n")}</div></details>`;
}

const CSS = `
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--card:#fff;
--pass:#1a7f37;--pass-bg:#dafbe1;--fail:#cf222e;--fail-bg:#ffebe9;--error:#82071e;--error-bg:#ffd8d3;
--xfail:#9a6700;--xfail-bg:#fff8c5;--xpass:#bc4c00;--xpass-bg:#fff1e5;--skip:#59636e;--skip-bg:#eff2f5}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Helvetica,Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:0 20px 40px}
code{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;background:#eff2f5;border-radius:4px;padding:1px 4px;word-break:break-all}
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}
#verdict{color:#fff;padding:26px 20px 22px;margin-bottom:20px}
#verdict .inner{max-width:1240px;margin:0 auto;display:flex;flex-wrap:wrap;align-items:baseline;gap:10px 24px}
#verdict h1{margin:0;font-size:34px;letter-spacing:.04em}
#verdict .sub{font-size:15px;opacity:.95}
#verdict .chip{background:rgba(255,255,255,.92)}
#verdict.st-pass{background:linear-gradient(135deg,#1a7f37,#2da44e)}
#verdict.st-fail{background:linear-gradient(135deg,#a40e26,#cf222e)}
#verdict.st-error{background:linear-gradient(135deg,#5c0011,#82071e)}
#verdict.st-xfail{background:linear-gradient(135deg,#7d4e00,#bf8700)}
#verdict.st-xpass{background:linear-gradient(135deg,#953800,#d4560b)}
#verdict.st-skip{background:linear-gradient(135deg,#424a53,#6e7781)}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin:0 0 20px;box-shadow:0 1px 2px rgba(31,35,40,.05)}
h2{font-size:18px;margin:0 0 12px}h3{font-size:16px;margin:18px 0 10px}
table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}
thead th{background:#f6f8fa;font-weight:600;font-size:12.5px;color:var(--muted)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{overflow-x:auto}
dl{display:grid;grid-template-columns:max-content 1fr;gap:6px 16px;margin:12px 0 0}dt{color:var(--muted);font-weight:600}dd{margin:0}
.ver{display:inline-block;margin-right:10px}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:baseline}
details.hashes ul{margin:6px 0 0;padding-left:18px}.sha{color:var(--muted)}
.badge{display:inline-block;font-weight:700;font-size:11px;letter-spacing:.05em;border-radius:999px;padding:2px 8px;color:#fff}
.chip{display:inline-block;font-size:12px;border-radius:999px;padding:1px 8px;margin:1px 2px 1px 0;border:1px solid currentColor}
.badge.st-pass{background:var(--pass)}.badge.st-fail{background:var(--fail)}.badge.st-error{background:var(--error)}
.badge.st-xfail{background:var(--xfail)}.badge.st-xpass{background:var(--xpass)}.badge.st-skip{background:var(--skip)}
.chip.st-pass{color:var(--pass)}.chip.st-fail{color:var(--fail)}.chip.st-error{color:var(--error)}
.chip.st-xfail{color:var(--xfail)}.chip.st-xpass{color:var(--xpass)}.chip.st-skip{color:var(--skip)}
td.st-pass{background:var(--pass-bg)}td.st-fail{background:var(--fail-bg)}td.st-error{background:var(--error-bg)}
td.st-xfail{background:var(--xfail-bg)}td.st-xpass{background:var(--xpass-bg)}td.st-skip{background:var(--skip-bg)}
table.verdict-table td.cell{border:2px solid #fff;border-radius:6px;padding:10px}
table.verdict-table .worst{color:var(--muted);font-size:12px;margin-top:4px}
table.drift-table th.group{text-align:center;border-bottom:2px solid var(--line)}
td.empty{color:var(--muted);text-align:center}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:16px}
figure{margin:0}
.plot-figure{border:1px solid var(--line);border-radius:8px;padding:8px;background:#fff}
.plot-figure figcaption{font-size:12px;color:var(--muted);padding:2px 4px}
svg.drift-plot,svg.metric-plot{width:100%;height:auto;display:block}
svg .plot-bg{fill:#fbfcfd}svg .grid{stroke:#e4e8ec;stroke-width:1}svg .grid.minor{stroke:#f0f2f4}
svg .axis{stroke:#8c959f;stroke-width:1}svg .tick{font-size:11px;fill:#59636e}
svg .axis-label{font-size:12px;fill:#1f2328}svg .plot-title{font-size:13px;font-weight:600;fill:#1f2328}
svg .legend{font-size:12px;fill:#1f2328}svg .line{fill:none;stroke-width:2;stroke-linejoin:round;stroke-linecap:round}
svg .nonfinite{font-size:14px;font-weight:700;fill:#cf222e}
details.case{border:1px solid var(--line);border-left:5px solid var(--skip);border-radius:8px;margin:8px 0;background:#fff}
details.case.st-pass{border-left-color:var(--pass)}details.case.st-fail{border-left-color:var(--fail)}details.case.st-error{border-left-color:var(--error)}
details.case.st-xfail{border-left-color:var(--xfail)}details.case.st-xpass{border-left-color:var(--xpass)}
details.case>summary{cursor:pointer;padding:8px 12px;display:flex;flex-wrap:wrap;gap:6px 12px;align-items:center}
details.case .model{font-weight:600}details.case .headline{color:var(--muted);font-size:13px}details.case .time{margin-left:auto;color:var(--muted);font-size:12px}
.case-body{padding:4px 14px 12px}
.message{white-space:pre-wrap;margin:6px 0}
.callout{padding:8px 12px;border-radius:6px;margin:8px 0}
.callout.st-error{background:var(--error-bg);color:var(--error)}.callout.st-xfail{background:var(--xfail-bg);color:var(--xfail)}.callout.st-xpass{background:var(--xpass-bg);color:var(--xpass)}
table.checks tr.bad td{background:var(--fail-bg);color:var(--fail);font-weight:600}
table.checks tr.ok td:first-child{color:var(--pass)}
table.metrics{font-size:12.5px}td.bad{color:var(--fail);font-weight:700}
.tolerance,.plot-link,.regression{color:var(--muted);font-size:12.5px;margin:6px 0}.regression.flagged{color:var(--fail);font-weight:600}
figure.image-triplet{display:grid;grid-template-columns:repeat(3,minmax(0,256px));gap:12px;margin:12px 0}
figure.image-triplet figcaption{grid-column:1/-1;color:var(--muted);font-size:12.5px}
figure.image-triplet .panel{text-align:center;font-size:12px;color:var(--muted)}
figure.image-triplet img{display:block;width:100%;height:auto;border:1px solid var(--line);border-radius:4px;background:#fff;margin-bottom:4px}
figure.image-triplet img.pixelated{image-rendering:pixelated}
.placeholder{aspect-ratio:1;display:flex;align-items:center;justify-content:center;border:1px dashed var(--line);border-radius:4px;padding:8px;margin-bottom:4px;word-break:break-all}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:24px}
`;

/** What the sections read: orders, the page's ids, and the plots and case details made before them (ids are given in that order). */
interface View {
  readonly models: readonly string[];
  readonly stages: readonly string[];
  readonly ids: IdMaker;
  readonly plots: readonly string[];
  readonly stageSections: string;
}

/** report.html's sections under the verdict banner, in order; one line each, empty when it has nothing to show. */
const SECTIONS: readonly ((report: Report, view: View) => string)[] = [
  (report) => provenance(report),
  (report, v) => verdictTable(report, v.stages, v.models, v.ids),
  (report, v) => (v.models.length > 1 ? driftTable(report, v.models, v.ids) : ""),
  (report) => baselineSection(report),
  (report) => coverageSection(report),
  (report) => localizeHtml(report, esc),
  (_report, v) =>
    v.plots.length ? `<section class="card" id="plots"><h2>Drift vs step</h2><div class="plots">${v.plots.join("\n")}</div></section>` : "",
  (_report, v) => v.stageSections,
];

export function renderHtml(report: Report, readAsset: (relPath: string) => Buffer | null): string {
  const ids = new IdMaker();
  const models = modelOrder(report);
  const stages = stageOrder(report);
  const s = report.summary;

  const plotIds = new Map<string, string>();
  const plots: string[] = [];
  // Drift-vs-step plots are for the loops a person reads step by step: the U-Net's free-running
  // runs and the end-to-end runs, those first. (Scheduler traces keep their series in report.json;
  // a few hundred near-identical plots would bury the ones that matter.)
  // which stages, in which order: the stage registry's plot rank
  const stageOf = new Map(report.results.map((r) => [r.id, r.stage]));
  const rank = (id: string) => plotRank(stageOf.get(id)!) ?? Infinity;
  const plotted = caseIds(report)
    .filter((id) => rank(id) < Infinity)
    .sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : 1));
  for (const id of plotted) {
    const html = renderCasePlots(report, id, models, ids);
    if (!html) continue;
    plots.push(html);
    const first = report.results.find((c) => c.id === id && (c.series ?? []).some((x) => x.values.length > 0));
    const metric = (first?.series ?? []).map((x) => x.metric).sort((a, b) => Number(!/maxabs/i.test(a)) - Number(!/maxabs/i.test(b)))[0];
    if (metric !== undefined) plotIds.set(id, ids.get(`${id}\u0000${metric}`, "plot"));
  }

  const stageSections = stages
    .map((stage) => {
      const cases = sortCases(
        report.results.filter((c) => c.stage === stage),
        models,
      );
      const counts = countChips(countStatuses(cases));
      return `<section class="card stage-details" id="${esc(ids.get(stage, "stage"))}" data-stage="${esc(stage)}"><h2>${esc(stage)} ${badge(groupVerdict(cases))} <span class="counts">${counts}</span></h2>${cases
        .map((c) => caseDetails(c, ids, plotIds, readAsset))
        .join("\n")}</section>`;
    })
    .join("\n");

  const verdictLabel = STATUS_LABEL[s.verdict] ?? String(s.verdict);
  const title = `sd-harness conformance — ${verdictLabel}`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="sd-harness (${esc(report.format)})">
<title>${esc(title)}</title>
<style>${CSS}</style>
</head>
<body>
<header id="verdict" class="verdict st-${esc(s.verdict)}" data-verdict="${esc(s.verdict)}">
<div class="inner"><h1>${esc(verdictLabel)}</h1>
<div class="sub">${esc(s.total)} case result${s.total === 1 ? "" : "s"} · ${countChips(s)} · profile <b>${esc(report.profile)}</b> · ${esc(models.join(" vs "))} · ${esc(formatDuration(report.run.durationMs))}</div></div>
</header>
<main>
${SECTIONS.map((section) => section(report, { models, stages, ids, plots, stageSections })).join("\n")}
<footer>${esc(report.format)} · started ${esc(report.run.started)} · written by sd-harness</footer>
</main>
</body>
</html>
`;
}

export const htmlReporter: Reporter = {
  name: "html",
  file: "report.html",
  render: (report, ctx) => renderHtml(report, ctx.readAsset),
};
