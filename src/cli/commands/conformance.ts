/** `sd-harness conformance`: every stage of one or more ONNX ports against a PyTorch reference set. */
import * as fs from "node:fs";
import * as path from "node:path";
import yargs from "yargs";
import { HarnessError, ExitCode, oneLine } from "../../errors";
import { CliIO } from "../io";
import { asTyped, numFlag, threadsFlag, THREADS_HELP, runtimeFromFlags, RUNTIME_HELP, PORT_HELP, PORT_TIMEOUT_HELP } from "../parse";
import { DEFAULT_RUNTIME, runtimeText } from "../../runtime/index";
import { DEFAULT_MODEL, DEFAULT_INPAINT_MODEL, DEFAULT_REFERENCES, VERSION } from "../defaults";
import { runConformance, exitCodeFor, ModelSpec } from "../../conformance/runner";
import { adviceFor } from "../../conformance/advice";
import { listCases, filterCases, parseShard, shardCases, caseCost, ReferenceSet } from "../../conformance/cases";
import { harnessOverhead } from "../../conformance/types";
import { loadTolerances, profiles, withCommandLineLimits } from "../../conformance/judge";
import { ModuleReferences, loadModuleLimits } from "../../conformance/localize";
import { REPORTERS, disabledReporters } from "../../conformance/report";
import type { Report } from "../../conformance/types";

function parser(argv: string[]) {
  const y = yargs(argv)
    .scriptName("sd-harness conformance")
    .usage(
      "$0 [--model DIR[=LABEL] ...] [--references DIR] [options]\n\nRun every stage against PyTorch reference tensors and report the drift. Exit: 0 all pass, 1 a case failed, 2 usage or input error, 3 output cannot be written, 5 --localize could not run at all, 75 --out in use by another run.",
    )
    .option("model", {
      type: "string",
      array: true,
      describe: "ONNX model folder; repeat for a side-by-side table (DIR=LABEL names a variant)",
      default: [DEFAULT_MODEL],
    })
    .option("against", {
      type: "string",
      describe:
        "DIR[=LABEL]: judge each --model's model stages against this ONNX model's outputs on the reference set's inputs (port vs port, no PyTorch outputs)",
    })
    .option("inpaint-model", {
      type: "string",
      describe: "9-channel inpainting model for the inpaint cases (default: the bundled one with the bundled model)",
    })
    .option("references", { type: "string", default: DEFAULT_REFERENCES, describe: "reference set folder (scripts/make_references.py)" })
    .option("profile", {
      type: "string",
      default: "fp32",
      describe: "tolerance profile: fp32, fp16, int8, bf16 (conformance/tolerances.json)",
    })
    .option("tolerances", { type: "string", describe: "tolerance file (default: conformance/tolerances.json)" })
    .option("atol", {
      type: "string",
      array: true,
      describe: "CASE_GLOB=VALUE: maxAbs limit for the cases matching the glob, over the tolerance file's (recorded in the report)",
    })
    .option("max-rel-l2", {
      type: "string",
      array: true,
      describe: "CASE_GLOB=VALUE: relL2 limit for the cases matching the glob, over the tolerance file's (recorded in the report)",
    })
    .option("only", { type: "string", array: true, describe: "run only case ids matching these globs, e.g. 'unet:*'" })
    .option("skip", { type: "string", array: true, describe: "skip case ids matching these globs" })
    .option("shard", { type: "string", describe: "run shard i of n (i/n); join with `sd-harness report merge`" })
    .option("baseline", { type: "string", describe: "earlier report.json: flag cases whose drift grew" })
    .option("baseline-factor", {
      type: "number",
      default: 2,
      describe: "growth factor of the headline metric (relL2; rng: maxUlp) that counts as a regression",
    })
    .option("out", { type: "string", describe: "report folder (default: reports/<timestamp> under the current directory)" })
    .option("overwrite", { type: "boolean", default: false, describe: "replace the reports in an existing --out folder" })
    .option("force-sd1", { type: "boolean", default: false, describe: "run models that look like SD 2.x as SD 1.x anyway" })
    .option("threads", { type: "number", default: 0, describe: THREADS_HELP })
    .option("runtime", { type: "string", default: DEFAULT_RUNTIME, describe: RUNTIME_HELP })
    .option("port", { type: "string", describe: PORT_HELP })
    .option("port-timeout", { type: "string", describe: PORT_TIMEOUT_HELP })
    .option("localize", {
      type: "boolean",
      default: false,
      describe:
        "also compare every module's output inside each component with PyTorch's and name the first module over its limit (conformance/module-limits.json)",
    })
    .option("localize-failed", {
      type: "boolean",
      default: false,
      describe: "--localize only the components of a model whose stages failed",
    })
    .option("module-references", {
      type: "string",
      describe: "module reference set for --localize (scripts/make_module_references.py; default: modules/ beside --references)",
    })
    .option("module-limits", { type: "string", describe: "per-module limits for --localize (default: conformance/module-limits.json)" })
    .option("list", { type: "boolean", default: false, describe: "list the case ids (after --only / --skip / --shard) and exit" })
    .option("json", {
      type: "boolean",
      default: false,
      describe: "with --list: a JSON array of {id, stage, cost}, cost in estimated U-Net calls",
    })
    .option("quiet", { type: "boolean", default: false, describe: "no per-case lines" })
    .option("verbose", { type: "boolean", default: false });
  // report formats that can be turned off (the GitHub job summary), from the reporter registry
  for (const r of REPORTERS) if (r.optOut) y.option(r.optOut.flag, { type: "boolean", default: true, describe: r.optOut.describe });
  return y
    .strict()
    .fail((msg, err) => {
      throw new HarnessError(`conformance: ${msg ?? err?.message ?? "bad arguments"}`, ExitCode.usage);
    })
    .help()
    .version(VERSION)
    .exitProcess(false);
}

function modelSpecs(values: string[], inpaint: string | undefined): ModelSpec[] {
  const labels = new Set<string>();
  return values.map((v, i) => {
    const eq = v.lastIndexOf("=");
    const dir = eq > 0 ? v.slice(0, eq) : v;
    let label = eq > 0 ? v.slice(eq + 1) : path.basename(path.resolve(dir));
    if (labels.has(label)) label = `${label}#${i + 1}`;
    labels.add(label);
    const bundled = path.resolve(dir) === path.resolve(DEFAULT_MODEL);
    // the npm package leaves the bundled inpainting model out (size); a checkout has it
    const bundledInpaint = bundled && fs.existsSync(DEFAULT_INPAINT_MODEL) ? DEFAULT_INPAINT_MODEL : null;
    return { label, dir, inpaintDir: inpaint ?? bundledInpaint };
  });
}

export async function conformanceCommand(argv: string[], io: CliIO): Promise<number> {
  const args = await parser(argv).parseAsync();
  if (args.help || args.version) return ExitCode.ok;
  // a repeated single-value flag takes its last value, as in generate; yargs made it an array
  // (`--profile fp32 --profile fp16` was "unknown profile [...]", `--out a --out b` the folder "a,b")
  const single = args as unknown as Record<string, unknown>;
  for (const k of ["references", "profile", "tolerances", "shard", "baseline", "baseline-factor", "out", "threads", "inpaint-model"]) {
    const v = single[k];
    if (Array.isArray(v)) single[k] = v[v.length - 1];
  }
  const tol = withCommandLineLimits(loadTolerances(args.tolerances), {
    atol: (args.atol as string[] | undefined) ?? [],
    "max-rel-l2": (args["max-rel-l2"] as string[] | undefined) ?? [],
  });
  if (!profiles(tol).includes(String(args.profile))) {
    throw new HarnessError(
      `--profile: unknown profile ${JSON.stringify(args.profile)}; known: ${profiles(tol).join(", ")}`,
      ExitCode.usage,
    );
  }
  const refsDir = String(args.references);
  if (args.list) {
    // the same selection a run would make: --only / --skip, then --shard by estimated cost
    const refs = ReferenceSet.open(refsDir);
    const all = listCases(refs);
    let cases = filterCases(all, args.only ?? [], args.skip ?? []);
    const listShard = args.shard ? parseShard(String(args.shard)) : undefined;
    if (listShard) cases = shardCases(cases, listShard, (c) => caseCost(refs, c));
    if (cases.length === 0) {
      const what = listShard ? `shard ${listShard.index}/${listShard.count} has no cases` : "no cases match";
      throw new HarnessError(
        `--list: ${what} (${all.length} cases in ${refsDir}; globs match whole ids such as 'unet:*' or '*-free')`,
        ExitCode.usage,
      );
    }
    if (args.json) {
      io.out(`${JSON.stringify(cases.map((c) => ({ id: c.id, stage: c.stage, cost: Number(caseCost(refs, c).toFixed(4)) })))}\n`);
      return ExitCode.ok;
    }
    for (const c of cases) io.out(`${c.id}\n`);
    return ExitCode.ok;
  }
  const shard = args.shard ? parseShard(String(args.shard)) : undefined;
  const threads = threadsFlag(asTyped(argv, "threads", args.threads));
  const factor = numFlag("--baseline-factor", asTyped(argv, "baseline-factor", args["baseline-factor"]), 1, 1e12);
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const outDir = args.out ? String(args.out) : path.join("reports", `${stamp}${shard ? `-shard${shard.index}of${shard.count}` : ""}`);
  const runtime = runtimeFromFlags(
    argv,
    { runtime: args.runtime, port: args.port, portTimeout: asTyped(argv, "port-timeout", args["port-timeout"]) },
    io.signal,
    args.verbose ? (line) => io.err(`${line}\n`) : undefined,
  );
  const report = await runConformance({
    models: modelSpecs((args.model as string[]) ?? [DEFAULT_MODEL], args["inpaint-model"]),
    forceSd1: Boolean(args["force-sd1"]),
    against: args.against ? modelSpecs([String(args.against)], undefined).map((s) => ({ ...s, inpaintDir: null }))[0] : undefined,
    localize:
      args.localize || args["localize-failed"] || args["module-references"]
        ? {
            moduleReferences: args["module-references"] ? String(args["module-references"]) : ModuleReferences.besides(refsDir),
            limits: args["module-limits"] ? loadModuleLimits(String(args["module-limits"])) : undefined,
            onlyFailed: Boolean(args["localize-failed"]) && !args.localize,
          }
        : undefined,
    references: refsDir,
    profile: String(args.profile),
    only: args.only ?? [],
    skip: args.skip ?? [],
    shard,
    outDir,
    overwrite: Boolean(args.overwrite),
    threads,
    tolerances: tol,
    baseline: args.baseline,
    baselineFactor: factor,
    argv: ["conformance", ...argv],
    log: args.quiet ? undefined : (line) => io.err(`${line}\n`),
    warn: (line) => io.err(`warning: ${oneLine(line, 500)}\n`),
    reportEnv: process.env,
    disabledReporters: disabledReporters(args),
    signal: io.signal,
    runtime,
  }).finally(() => runtime.close());
  const s = report.summary;
  for (const w of report.warnings ?? []) io.err(`warning: ${oneLine(w, 500)}\n`);
  const notLocalized = localizeNotRun(report);
  for (const line of notLocalized.lines) io.err(`warning: ${line}\n`);
  for (const g of report.coverage?.gaps ?? []) io.err(`not covered: ${oneLine(g.what, 100)}: ${oneLine(g.why, 300)}\n`);
  for (const line of adviceFor(report)) io.err(`advice: ${oneLine(line, 500)}\n`);
  const overhead = harnessOverhead(report.run);
  const ortPart =
    overhead === null ? "" : `; ${(100 * overhead).toFixed(1)} % outside ${runtime.name === "port" ? "the port" : "onnxruntime"}`;
  io.err(
    `\n${s.verdict.toUpperCase()}: ${s.pass} pass, ${s.fail} fail, ${s.xfail} xfail, ${s.xpass} xpass, ${s.error} error, ${s.skip} skip (${(report.run.durationMs / 1000).toFixed(1)} s${ortPart}) on ${report.models[0]?.runtime ? runtimeText(report.models[0].runtime) : runtime.name}\n`,
  );
  io.out(`${path.join(outDir, "report.html")}\n`);
  const code = exitCodeFor(report);
  // --localize asked for by name and nothing could be localized: not a pass (a failed case's 1 stays 1)
  if (code === ExitCode.ok && args.localize && notLocalized.none) {
    io.err(`sd-harness: --localize could not run for any module call (see the warnings above); exit ${ExitCode.localizeNotRun}\n`);
    return ExitCode.localizeNotRun;
  }
  return code;
}

/**
 * Localization that could not run, for the terminal: one warning line per model and component
 * (its calls share the reason), and whether nothing at all was localized.
 */
export function localizeNotRun(report: Report): { lines: string[]; none: boolean } {
  const loc = report.localize;
  if (!loc) return { lines: [], none: false };
  const groups = new Map<string, { model: string; component: string; calls: number; error: string }>();
  for (const c of loc.calls) {
    if (!c.error) continue;
    const key = `${c.model}\u0000${c.component}\u0000${c.error}`;
    const g = groups.get(key) ?? { model: c.model, component: c.component, calls: 0, error: c.error };
    g.calls++;
    groups.set(key, g);
  }
  const lines = [...groups.values()].map(
    (g) =>
      `--localize: ${oneLine(g.model, 60)} ${g.component}: ${g.calls} module call${g.calls === 1 ? "" : "s"} not run: ${oneLine(g.error, 300)}`,
  );
  // no calls at all: a runtime that localizes nothing (a port without `modules`), a coverage gap
  return { lines, none: loc.calls.length > 0 && loc.calls.every((c) => c.error) };
}
