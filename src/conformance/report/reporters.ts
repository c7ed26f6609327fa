/**
 * The reporter registry: every report format, one object each (./reporter.ts), written in this
 * order by the runner and by `report merge`. A new format is its own file and a line here.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { HarnessError, ExitCode } from "../../errors";
import { writeFileAtomic } from "../../util/atomic";
import { confinedAssetReader } from "../report-file";
import type { Report } from "../types";
import type { Reporter, ReporterEnv } from "./reporter";
import { jsonReporter } from "./json";
import { markdownReporter } from "./markdown";
import { junitReporter } from "./junit";
import { htmlReporter } from "./html";
import { csvReporter } from "./csv";
import { githubSummaryReporter } from "./github-summary";

export type { Reporter, ReporterEnv, RenderContext } from "./reporter";

export const REPORTERS: readonly Reporter[] = [jsonReporter, markdownReporter, junitReporter, htmlReporter, csvReporter, githubSummaryReporter];

/**
 * Writes every format not in `disabled` for `report` into `outDir`: files in the folder atomically,
 * appended ones (outside it, where `env` names) last. `env` defaults to none: only the folder.
 */
export function writeReports(outDir: string, report: Report, options: { env?: ReporterEnv; disabled?: readonly string[] } = {}): void {
  const env = options.env ?? {};
  const disabled = new Set(options.disabled ?? []);
  // confined: a path in the report can only ever name a regular file under outDir/assets
  const ctx = { readAsset: confinedAssetReader(outDir) };
  for (const r of REPORTERS) {
    if (disabled.has(r.name)) continue;
    const target = typeof r.file === "string" ? path.join(outDir, r.file) : r.file(env);
    if (target === null) continue;
    const content = r.render(report, ctx);
    if (!r.append) writeFileAtomic(target, content);
    else {
      try {
        fs.appendFileSync(target, content);
      } catch (e) {
        throw new HarnessError(`${target}: cannot append the ${r.name} report (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, ExitCode.output);
      }
    }
  }
}

/** The reporters a command line turned off: those with an opt-out flag set to false (`--no-<flag>`). */
export function disabledReporters(args: Readonly<Record<string, unknown>>): string[] {
  return REPORTERS.filter((r) => r.optOut && args[r.optOut.flag] === false).map((r) => r.name);
}
