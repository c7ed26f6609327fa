/** The conformance report writers: report.json, summary.md, junit.xml, report.html, results.csv and the GitHub job summary (./reporters.ts lists them). */
export { renderMarkdown } from "./markdown";
export { renderJunit } from "./junit";
export { renderHtml } from "./html";
export { REPORTERS, writeReports } from "./reporters";
