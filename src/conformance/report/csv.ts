/**
 * results.csv: one row per case and model — id, stage, model, status, the headline metric
 * (../judge/headline.ts) with its value and limit, and the worst excess over the float64 floor where the
 * set has one — for a spreadsheet or a dashboard.
 *
 * RFC 4180: CRLF line ends; a field holding a comma, a double quote, CR or LF is quoted, its
 * quotes doubled. Text fields come from report.json, which can come from anywhere, so a text that a
 * spreadsheet would run as a formula (starting with = + - @, a tab or CR) is prefixed with a single
 * quote (OWASP's CSV injection advice). Numbers are written at full precision, as JavaScript prints
 * them (NaN, Infinity); they never start with anything but a digit, "-", "N" or "I".
 */
import type { CaseResult } from "../types";
import { headline } from "../judge/headline";
import { worstExcess } from "../judge/float64-floor";
import type { Reporter } from "./reporter";
import { modelRuntimeText } from "./format";

export const CSV_COLUMNS = ["id", "stage", "model", "status", "metric", "value", "limit", "excess", "runtime"] as const;

/** A text cell: formula-injection safe and quoted where RFC 4180 needs it. */
export function csvText(text: string): string {
  const safe = /^[=+\-@\t\r]/.test(text) ? `'${text}` : text;
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

function csvNumber(x: number | undefined): string {
  return x === undefined ? "" : String(x);
}

/** The row of one result: its headline metric, the limit checked on that metric and tensor, the worst excess, the runtime that ran it. */
export function csvRow(r: CaseResult, runtime = ""): string {
  const h = headline(r);
  const limit = h.tensor === undefined ? undefined : r.checks.find((c) => c.metric === h.metric && c.tensor === h.tensor)?.limit;
  const excess = worstExcess(r.metrics)?.value;
  return [
    csvText(r.id),
    csvText(r.stage),
    csvText(r.model),
    csvText(r.status),
    csvText(h.metric),
    csvNumber(h.value),
    csvNumber(limit),
    csvNumber(excess),
    csvText(runtime),
  ].join(",");
}

export const csvReporter: Reporter = {
  name: "csv",
  file: "results.csv",
  render: (report) => {
    const runtimes = new Map((report.models ?? []).map((m) => [m.label, modelRuntimeText(m)]));
    return [CSV_COLUMNS.join(","), ...report.results.map((r) => csvRow(r, runtimes.get(r.model)))].map((line) => `${line}\r\n`).join("");
  },
};
