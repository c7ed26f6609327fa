/**
 * The report room: the reporter registry (`reporters.ts`: report.json, summary.md, junit.xml,
 * report.html, results.csv and the GitHub job summary, one `Reporter` each), what every writer
 * shares (`format.ts`, `svg-chart.ts`), the `--localize` and `sensitivity` views, reading a
 * report.json back (`report-file.ts`, for `--baseline` and `report merge`), joining shards
 * (`merge.ts`), and the report folder with its lock (`out-dir.ts`). The sensitivity writers are
 * imported from `./sensitivity` itself: the index stays free of the sensitivity room.
 *
 * Imports go to the files themselves; this index is the room's surface for the CLI.
 */
export { renderMarkdown } from "./markdown";
export { renderJunit } from "./junit";
export { renderHtml } from "./html";
export { REPORTERS, disabledReporters, writeReports } from "./reporters";
export { readReportFile, readAssetConfined } from "./report-file";
export { mergeReports } from "./merge";
export { ReportFolder } from "./out-dir";
