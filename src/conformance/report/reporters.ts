/**
 * The reporter registry: every report format, one object each (./reporter.ts), written in this
 * order by the runner and by `report merge`. A new format is its own file and a line here.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "../../util/atomic";
import { confinedAssetReader } from "./report-file";
import type { Report } from "../types";
import type { Reporter, ReporterEnv } from "./reporter";
import { jsonReporter } from "./json";
import { markdownReporter } from "./markdown";
import { junitReporter } from "./junit";
import { htmlReporter } from "./html";
import { csvReporter } from "./csv";
import { githubSummaryReporter } from "./github-summary";

export type { Reporter, ReporterEnv, RenderContext } from "./reporter";

export const REPORTERS: readonly Reporter[] = [
  jsonReporter,
  markdownReporter,
  junitReporter,
  htmlReporter,
  csvReporter,
  githubSummaryReporter,
];

/**
 * Appends `content` to a file the harness does not own (the GitHub job summary), never blocking and
 * never failing the run: only a regular file, or a path that does not exist yet (created), is
 * appended to. A FIFO would block the open (and a synchronous open cannot be interrupted, so
 * SIGTERM would wait forever), a socket, /dev/full, a terminal or a folder is not a summary; those,
 * and a write that fails (a full disk), come back as one warning line, and the run's exit code
 * stays what its cases made it. Returns the warning, or null when the content was appended.
 */
function appendOutside(target: string, content: string | Uint8Array, what: string): string | null {
  const refuse = (why: string) => `${target}: the ${what} was not written: ${why}`;
  let st: fs.Stats | null = null;
  try {
    st = fs.lstatSync(target);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "ENOENT") return refuse(`cannot look at it (${code})`);
  }
  // a link is followed only to a regular file: the fstat below checks what was opened
  if (st && !st.isFile() && !st.isSymbolicLink()) return refuse(`it is ${kindOf(st)}, not a regular file`);
  let fd: number;
  try {
    // O_NONBLOCK: should it have become a FIFO since the lstat, the open fails (ENXIO) instead of waiting for a reader
    fd = fs.openSync(
      target,
      fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY,
      0o644,
    );
  } catch (e) {
    return refuse(`cannot open it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const fst = fs.fstatSync(fd);
    if (!fst.isFile()) return refuse(`it is ${kindOf(fst)}, not a regular file`);
    const buf = typeof content === "string" ? Buffer.from(content) : content;
    for (let off = 0; off < buf.length;) off += fs.writeSync(fd, buf, off);
    return null;
  } catch (e) {
    return refuse(`cannot append to it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  } finally {
    fs.closeSync(fd);
  }
}

function kindOf(st: fs.Stats): string {
  if (st.isFIFO()) return "a FIFO";
  if (st.isSocket()) return "a socket";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  if (st.isDirectory()) return "a folder";
  return "not a regular file";
}

/**
 * Writes every format not in `disabled` for `report` into `outDir`: files in the folder atomically,
 * appended ones (outside it, where `env` names) last. `env` defaults to none: only the folder. A
 * destination outside the folder that cannot be written is a warning (`warn`), not an error: the
 * reports in the folder are the run's output.
 */
export function writeReports(
  outDir: string,
  report: Report,
  options: { env?: ReporterEnv; disabled?: readonly string[]; warn?: (line: string) => void } = {},
): void {
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
      const warning = appendOutside(target, content, `${r.name} report`);
      if (warning) options.warn?.(warning);
    }
  }
}

/** The reporters a command line turned off: those with an opt-out flag set to false (`--no-<flag>`). */
export function disabledReporters(args: Readonly<Record<string, unknown>>): string[] {
  return REPORTERS.filter((r) => r.optOut && args[r.optOut.flag] === false).map((r) => r.name);
}
