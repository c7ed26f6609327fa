/** report.json: the whole report, the input of --baseline and `report merge` (read back by ./report-file.ts). */
import type { Reporter } from "./reporter";

/** JSON has no Infinity or NaN: they are written as strings and revived when read back. */
export const jsonReporter: Reporter = {
  name: "json",
  file: "report.json",
  render: (report) => JSON.stringify(report, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v), 1) + "\n",
};
