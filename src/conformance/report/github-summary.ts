/**
 * The GitHub Actions job summary: summary.md appended to the file GitHub names in
 * $GITHUB_STEP_SUMMARY (each step's additions are shown on the run's page), when that variable is
 * set; `--no-github-summary` leaves it alone. GitHub takes at most 1 MiB per step, so a longer
 * summary is cut at a line and says where the whole report is.
 */
import { renderMarkdown } from "./markdown";
import type { Reporter } from "./reporter";

/** GitHub's limit for one step's summary, in bytes. */
const STEP_SUMMARY_LIMIT = 1024 * 1024;

const CUT_NOTE =
  "\n\n_(cut here: GitHub shows at most 1 MiB of a step's summary; the whole report is summary.md and report.html in the report folder)_\n";

/** `markdown` cut at a line so that it and the note fit in `limit` bytes of UTF-8. */
export function fitSummary(markdown: string, limit = STEP_SUMMARY_LIMIT): string {
  const text = `\n${markdown}\n`;
  if (Buffer.byteLength(text) <= limit) return text;
  const room = limit - Buffer.byteLength(CUT_NOTE);
  let cut = Buffer.from(text).subarray(0, Math.max(0, room)).toString("utf8");
  // a partial multi-byte character decodes as U+FFFD; the last whole line drops it anyway
  cut = cut.slice(0, Math.max(0, cut.lastIndexOf("\n")));
  return `${cut}${CUT_NOTE}`;
}

export const githubSummaryReporter: Reporter = {
  name: "github-summary",
  file: (env) => env.GITHUB_STEP_SUMMARY || null,
  append: true,
  optOut: {
    flag: "github-summary",
    describe: "append summary.md to the GitHub Actions job summary (the file $GITHUB_STEP_SUMMARY names, when set)",
  },
  render: (report) => fitSummary(renderMarkdown(report)),
};
