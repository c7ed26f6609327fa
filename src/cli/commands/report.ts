/** `sd-harness report merge --out DIR IN...`: join sharded conformance reports into one. */
import * as fs from "node:fs";
import * as path from "node:path";
import { HarnessError, ExitCode } from "../../errors";
import { writeFileAtomic } from "../../util/atomic";
import { CliIO } from "../io";
import yargs from "yargs";
import { VERSION } from "../defaults";
// JSON and the writers only: `report merge` must not load a runtime (no runner, no pipeline)
import {
  REPORTERS,
  disabledReporters,
  writeReports,
  readReportFile,
  readAssetConfined,
  mergeReports,
  ReportFolder,
} from "../../conformance/report";
import { isFailing } from "../../conformance/types";

const USAGE = "usage: sd-harness report merge --out DIR [--overwrite] REPORT_DIR_OR_JSON...";

function mergeParser(argv: string[]) {
  const y = yargs(argv)
    .scriptName("sd-harness report merge")
    .usage(
      "$0 --out DIR [--overwrite] REPORT_DIR_OR_JSON...\n\nJoin the report.json of conformance shards (--shard i/n) into one report folder. Exit: 0 all pass, 1 a case failed, 2 usage or input error, 3 output cannot be written, 75 --out in use by another run.",
    )
    .option("out", { type: "string", describe: "report folder for the merged report (required)" })
    .option("overwrite", { type: "boolean", default: false, describe: "replace the reports in an existing --out folder" });
  // report formats that can be turned off (the GitHub job summary), from the reporter registry
  for (const r of REPORTERS) if (r.optOut) y.option(r.optOut.flag, { type: "boolean", default: true, describe: r.optOut.describe });
  return (
    y
      .parserConfiguration({ "parse-positional-numbers": false })
      // the inputs are positionals: only options are checked
      .strictOptions()
      .fail((msg, err) => {
        throw new HarnessError(`report merge: ${msg ?? err?.message ?? "bad arguments"}; ${USAGE}`, ExitCode.usage);
      })
      .help()
      .version(VERSION)
      .exitProcess(false)
  );
}

export async function reportCommand(argv: string[], io: CliIO): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== "merge") throw new HarnessError(`report: unknown subcommand ${JSON.stringify(sub ?? "")}; ${USAGE}`, ExitCode.usage);
  const args = await mergeParser(rest).parseAsync();
  if (args.help || args.version) return ExitCode.ok;
  // a repeated --out takes its last value, as in conformance
  const out = Array.isArray(args.out) ? args.out[args.out.length - 1] : args.out;
  if (!out) throw new HarnessError(`report merge: --out is required; ${USAGE}`, ExitCode.usage);
  const overwrite = Boolean(args.overwrite);
  const inputs = args._.map(String);
  if (inputs.length === 0) throw new HarnessError(`report merge: no input reports; ${USAGE}`, ExitCode.usage);
  const loaded = inputs.map((p) => readReportFile(p));
  const merged = mergeReports(loaded.map((l) => ({ report: l.report, file: l.file })));
  // Only the pictures the results name are brought along, each read through the confined reader
  // (a plain relative path under the shard's assets/, its real path inside the shard folder, a
  // regular file): a shard report can never make the merged page embed a file from elsewhere.
  const assets: [string, Buffer][] = [];
  for (const l of loaded) {
    for (const [i, r] of l.report.results.entries()) {
      for (const [j, im] of (r.images ?? []).entries()) {
        for (const key of ["refPng", "oursPng", "diffPng"] as const) {
          const rel = im[key];
          if (rel === undefined) continue;
          const buf = readAssetConfined(l.dir, rel, `${l.file}: results[${i}].images[${j}].${key}`);
          if (buf) assets.push([rel, buf]);
        }
      }
    }
  }
  // locked from here to the last file: a second merge (or a conformance run) into it is refused
  const folder = ReportFolder.check(out, {
    flag: "--out",
    overwrite,
    refuse: "report-files",
    lock: { command: ["report", ...argv].join(" ") },
  });
  try {
    for (const [rel, buf] of assets) {
      const [, label, ...name] = rel.split("/");
      const dir = folder.stage(`assets/${label}`);
      fs.mkdirSync(path.join(dir, ...name.slice(0, -1)), { recursive: true });
      writeFileAtomic(path.join(dir, ...name), buf);
    }
    folder.commit();
    writeReports(out, merged, { env: process.env, disabled: disabledReporters(args), warn: (line) => io.err(`warning: ${line}\n`) });
    folder.unlock();
  } catch (e) {
    folder.abandon();
    throw e;
  }
  const s = merged.summary;
  io.err(`merged ${loaded.length} reports: ${s.total} results, verdict ${s.verdict}\n`);
  io.out(`${path.join(out, "report.html")}\n`);
  return isFailing(merged.summary.verdict) ? ExitCode.failed : ExitCode.ok;
}
