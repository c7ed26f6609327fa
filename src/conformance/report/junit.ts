/**
 * JUnit XML for CI test tabs: one <testsuite> per stage and model variant, one <testcase> per case.
 * xpass counts as a failure (a stale expected-failure entry must be noticed); xfail is reported as
 * skipped with its reason, so it shows but does not break the build.
 */
import type { Reporter } from "./reporter";
import { CaseResult, Report } from "../types";
import {
  caseFigures,
  countStatuses,
  formatCheck,
  modelOrder,
  modelRuntimeText,
  nonFiniteText,
  stageOrder,
  stripControl,
  worstElementText,
} from "./format";

function escapeText(text: string): string {
  return stripControl(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Parsers normalise raw tabs and newlines in attributes to spaces, so those are written as references. */
function escapeAttr(text: string): string {
  return escapeText(text)
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;")
    .replace(/\t/g, "&#9;")
    .replace(/\n/g, "&#10;")
    .replace(/\r/g, "&#13;");
}

function attrs(values: Readonly<Record<string, string | number>>): string {
  return Object.entries(values)
    .map(([k, v]) => ` ${k}="${escapeAttr(String(v))}"`)
    .join("");
}

function seconds(ms: number): string {
  return Number.isFinite(ms) ? (Math.max(0, ms) / 1000).toFixed(3) : "0";
}

/** Full precision: properties feed dashboards, not eyes. */
function properties(c: CaseResult): string[] {
  const h = caseFigures(c);
  const props: [string, number | string][] = [];
  if (h.maxAbs !== undefined) props.push(["maxAbs", h.maxAbs]);
  if (h.psnr !== undefined) props.push(["psnr", h.psnr]);
  if (h.cosine !== undefined) props.push(["cosine", h.cosine]);
  if (h.maxUlp !== undefined) props.push(["maxUlp", h.maxUlp]);
  if (h.psnrU8 !== undefined) props.push(["psnrU8", h.psnrU8]);
  if (h.maxAbsU8 !== undefined) props.push(["maxAbsU8", h.maxAbsU8]);
  if (h.nonFinite > 0) props.push(["nonFinite", h.nonFinite]);
  props.push(["tolerance", `${c.tolerance.profile}: ${c.tolerance.source}`]);
  if (c.regression) props.push(["regression", `${c.regression.metric} ×${c.regression.factor}`]);
  return [
    "      <properties>",
    ...props.map(([name, value]) => `        <property${attrs({ name, value: String(value) })}/>`),
    "      </properties>",
  ];
}

function detailLines(c: CaseResult): string[] {
  const lines: string[] = [];
  if (c.message) lines.push(c.message);
  for (const ch of c.checks) lines.push(`${ch.ok ? "ok  " : "FAIL"} ${formatCheck(ch)}`);
  if (c.nonFinite) lines.push(`non-finite: ${nonFiniteText(c.nonFinite)}`);
  const worst = worstElementText(c);
  if (worst) lines.push(`worst element: ${worst}`);
  lines.push(`tolerance: ${c.tolerance.profile}, ${c.tolerance.source}${c.tolerance.reason ? ` (${c.tolerance.reason})` : ""}`);
  return lines;
}

function failureMessage(c: CaseResult): string {
  if (c.status === "xpass")
    return `expected to fail${c.tolerance.reason ? ` (${c.tolerance.reason})` : ""} but passed; remove the expected-failure entry`;
  const failed = c.checks.filter((ch) => !ch.ok).map(formatCheck);
  const parts = [c.message, ...failed].filter((p): p is string => !!p);
  return parts.length > 0 ? parts.join("; ") : c.status;
}

function testcase(c: CaseResult): string[] {
  const classname = `${c.model}.${c.stage}`;
  const lines = [`    <testcase${attrs({ classname, name: c.id, time: seconds(c.timeMs) })}>`, ...properties(c)];
  const body = escapeText(detailLines(c).join("\n"));
  if (c.status === "fail" || c.status === "xpass") {
    lines.push(`      <failure${attrs({ message: failureMessage(c), type: c.status })}>${body}</failure>`);
  } else if (c.status === "error") {
    lines.push(`      <error${attrs({ message: c.message ?? "error", type: "error" })}>${body}</error>`);
  } else if (c.status === "skip") {
    lines.push(`      <skipped${attrs({ message: c.message ?? "skipped" })}/>`);
  } else if (c.status === "xfail") {
    lines.push(
      `      <skipped${attrs({ message: `expected failure: ${c.tolerance.reason ?? c.message ?? "no reason recorded"}` })}>${body}</skipped>`,
    );
  }
  lines.push("    </testcase>");
  return lines;
}

export function renderJunit(report: Report): string {
  const out: string[] = [];
  const all = countStatuses(report.results);
  const totalMs = report.results.reduce((a, c) => a + c.timeMs, 0);
  out.push('<?xml version="1.0" encoding="UTF-8"?>');
  out.push(
    `<testsuites${attrs({
      name: `sd-harness conformance (${report.profile})`,
      tests: report.results.length,
      failures: all.fail + all.xpass,
      errors: all.error,
      skipped: all.skip + all.xfail,
      time: seconds(report.run.durationMs || totalMs),
    })}>`,
  );
  for (const stage of stageOrder(report)) {
    for (const model of modelOrder(report)) {
      const cases = report.results.filter((c) => c.stage === stage && c.model === model);
      if (cases.length === 0) continue;
      const n = countStatuses(cases);
      out.push(
        `  <testsuite${attrs({
          name: `${model}.${stage}`,
          tests: cases.length,
          failures: n.fail + n.xpass,
          errors: n.error,
          skipped: n.skip + n.xfail,
          time: seconds(cases.reduce((a, c) => a + c.timeMs, 0)),
          timestamp: report.run.started,
        })}>`,
      );
      const m = report.models.find((x) => x.label === model);
      out.push(
        "    <properties>",
        `      <property${attrs({ name: "runtime", value: m ? modelRuntimeText(m) : "unknown" })}/>`,
        "    </properties>",
      );
      for (const c of cases) out.push(...testcase(c));
      out.push("  </testsuite>");
    }
  }
  out.push("</testsuites>", "");
  return out.join("\n");
}

export const junitReporter: Reporter = {
  name: "junit",
  file: "junit.xml",
  render: (report) => renderJunit(report),
};
