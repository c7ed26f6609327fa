/** `sd-harness report merge OUT IN...`: join sharded conformance reports into one. */
import * as fs from "node:fs";
import * as path from "node:path";
import { HarnessError, ExitCode } from "../../errors";
import { CliIO } from "../io";
import { Report } from "../../conformance/types";
import { summarize, writeReport, parseReportJson } from "../../conformance/runner";

const USAGE = "usage: sd-harness report merge --out DIR REPORT_DIR_OR_JSON...";

function readReport(p: string): { report: Report; dir: string } {
  const file = fs.existsSync(p) && fs.statSync(p).isDirectory() ? path.join(p, "report.json") : p;
  let report: Report;
  try {
    report = parseReportJson(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new HarnessError(`${file}: cannot read a report (${(e as Error).message.split("\n")[0]})`, ExitCode.usage);
  }
  if (report?.format !== "sd-harness-report/1") throw new HarnessError(`${file}: not an sd-harness report.json`, ExitCode.usage);
  return { report, dir: path.dirname(file) };
}

export function mergeReports(parts: readonly Report[]): Report {
  const [first] = parts;
  for (const p of parts) {
    if (p.profile !== first.profile) throw new HarnessError(`report merge: profiles differ (${first.profile} vs ${p.profile})`, ExitCode.usage);
    if (p.references.dir !== first.references.dir && p.references.command !== first.references.command) {
      throw new HarnessError("report merge: the shards ran against different reference sets", ExitCode.usage);
    }
  }
  const seen = new Set<string>();
  const results = [];
  for (const p of parts) {
    for (const r of p.results) {
      const key = `${r.model}\u0000${r.id}`;
      if (seen.has(key)) throw new HarnessError(`report merge: case ${r.id} (${r.model}) appears in two shards`, ExitCode.usage);
      seen.add(key);
      results.push(r);
    }
  }
  results.sort((a, b) => (a.model + a.id < b.model + b.id ? -1 : 1));
  const models = [...new Map(parts.flatMap((p) => p.models).map((m) => [m.label, m])).values()];
  const started = parts.map((p) => p.run.started).sort()[0];
  const finished = parts.map((p) => p.run.finished).sort().slice(-1)[0];
  return {
    ...first,
    run: { ...first.run, started, finished, durationMs: parts.reduce((s, p) => s + p.run.durationMs, 0), shard: undefined },
    models,
    results,
    summary: summarize(results),
  };
}

export async function reportCommand(argv: string[], io: CliIO): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== "merge") throw new HarnessError(`report: unknown subcommand ${JSON.stringify(sub ?? "")}; ${USAGE}`, ExitCode.usage);
  const outIdx = rest.indexOf("--out");
  if (outIdx < 0 || !rest[outIdx + 1]) throw new HarnessError(`report merge: --out is required; ${USAGE}`, ExitCode.usage);
  const out = rest[outIdx + 1];
  const inputs = rest.filter((_, i) => i !== outIdx && i !== outIdx + 1);
  if (inputs.length === 0) throw new HarnessError(`report merge: no input reports; ${USAGE}`, ExitCode.usage);
  const loaded = inputs.map(readReport);
  const merged = mergeReports(loaded.map((l) => l.report));
  if (fs.existsSync(path.join(out, "report.json"))) throw new HarnessError(`--out ${out}: already holds a report`, ExitCode.output);
  fs.mkdirSync(out, { recursive: true });
  // bring the image assets along so the merged HTML can inline them
  for (const l of loaded) {
    const assets = path.join(l.dir, "assets");
    if (fs.existsSync(assets)) fs.cpSync(assets, path.join(out, "assets"), { recursive: true });
  }
  writeReport(out, merged);
  const s = merged.summary;
  io.err(`merged ${loaded.length} reports: ${s.total} results, verdict ${s.verdict}\n`);
  io.out(`${path.join(out, "report.html")}\n`);
  return s.verdict === "fail" || s.verdict === "error" || s.verdict === "xpass" ? ExitCode.failed : ExitCode.ok;
}
