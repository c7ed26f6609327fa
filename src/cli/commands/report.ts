/** `sd-harness report merge OUT IN...`: join sharded conformance reports into one. */
import * as fs from "node:fs";
import * as path from "node:path";
import { HarnessError, ExitCode } from "../../errors";
import { writeFileAtomic } from "../../util/atomic";
import { CliIO } from "../io";
import { writeReport } from "../../conformance/runner";
import { readReportFile, readAssetConfined } from "../../conformance/report-file";
import { mergeReports } from "../../conformance/merge";
import { ReportFolder } from "../../conformance/out-dir";

const USAGE = "usage: sd-harness report merge --out DIR [--overwrite] REPORT_DIR_OR_JSON...";

export async function reportCommand(argv: string[], io: CliIO): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== "merge") throw new HarnessError(`report: unknown subcommand ${JSON.stringify(sub ?? "")}; ${USAGE}`, ExitCode.usage);
  const outIdx = rest.indexOf("--out");
  if (outIdx < 0 || !rest[outIdx + 1]) throw new HarnessError(`report merge: --out is required; ${USAGE}`, ExitCode.usage);
  const out = rest[outIdx + 1];
  const overwrite = rest.includes("--overwrite");
  const inputs = rest.filter((a, i) => i !== outIdx && i !== outIdx + 1 && a !== "--overwrite");
  if (inputs.length === 0) throw new HarnessError(`report merge: no input reports; ${USAGE}`, ExitCode.usage);
  const unknown = inputs.find((a) => a.startsWith("--"));
  if (unknown) throw new HarnessError(`report merge: unknown option ${JSON.stringify(unknown)}; ${USAGE}`, ExitCode.usage);
  const loaded = inputs.map((p) => readReportFile(p));
  const merged = mergeReports(loaded.map((l) => ({ report: l.report, file: l.file })));
  const folder = ReportFolder.check(out, { flag: "--out", overwrite, refuse: "report-files" });
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
  try {
    for (const [rel, buf] of assets) {
      const [, label, ...name] = rel.split("/");
      const dir = folder.stage(`assets/${label}`);
      fs.mkdirSync(path.join(dir, ...name.slice(0, -1)), { recursive: true });
      writeFileAtomic(path.join(dir, ...name), buf);
    }
    folder.commit();
    writeReport(out, merged);
  } catch (e) {
    folder.abandon();
    throw e;
  }
  const s = merged.summary;
  io.err(`merged ${loaded.length} reports: ${s.total} results, verdict ${s.verdict}\n`);
  io.out(`${path.join(out, "report.html")}\n`);
  return s.verdict === "fail" || s.verdict === "error" || s.verdict === "xpass" ? ExitCode.failed : ExitCode.ok;
}
