/** The conformance report writers: summary.md, junit.xml and the self-contained report.html. */
export { renderMarkdown } from "./markdown";
export { renderJunit } from "./junit";
export { renderHtml } from "./html";
