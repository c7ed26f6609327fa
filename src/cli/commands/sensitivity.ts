/** `sd-harness sensitivity`: what a reference set can and cannot see (perturbed copies of the model, judged by the conformance runner). */
import * as path from "node:path";
import yargs from "yargs";
import { HarnessError, ExitCode } from "../../errors";
import { CliIO } from "../io";
import { asTyped, intFlag, numFlag, threadsFlag, THREADS_HELP, runtimeFlag, RUNTIME_HELP } from "../parse";
import { DEFAULT_RUNTIME } from "../../runtime/index";
import * as fs from "node:fs";
import { DEFAULT_MODEL, DEFAULT_INPAINT_MODEL, DEFAULT_REFERENCES, VERSION } from "../defaults";
import { runSensitivity, DEFAULT_RELATIVES, DEFAULT_SCALES, SensitivityReport, LAYER_KINDS } from "../../conformance/sensitivity";
import { renderSensitivityText, renderSensitivityMarkdown, renderSensitivityHtml } from "../../conformance/report/sensitivity";
import { ReportFolder } from "../../conformance/report";
import { loadTolerances, profiles } from "../../conformance/judge";
import { writeFileAtomic } from "../../util/atomic";

function parser(argv: string[]) {
  return yargs(argv)
    .scriptName("sd-harness sensitivity")
    .usage(
      `$0 [--model DIR] [--references DIR] [--budget SECONDS] [options]\n\nPerturb single weights (and scale attention projections) of each layer kind in a temporary copy of the model, run the cases that part reaches, and report the smallest change the default run catches. The model folder is never written. Exit: 0 done, 2 usage or input error, 3 output cannot be written, 75 --out in use by another run.\n\nLayer kinds: ${LAYER_KINDS.map((k) => k.id).join(", ")}`,
    )
    .option("model", { type: "string", default: DEFAULT_MODEL, describe: "ONNX model folder (copied; never changed)" })
    .option("inpaint-model", {
      type: "string",
      describe:
        "9-channel inpainting model (copied; never changed): the inpainting cases run, and its U-Net is probed with the U-Net kinds (default: the bundled one with the bundled model; without one those cases are left out)",
    })
    .option("references", { type: "string", default: DEFAULT_REFERENCES, describe: "reference set folder made for this model" })
    .option("budget", {
      type: "number",
      default: 600,
      describe: "seconds; no new perturbation starts after that (the report lists what was not measured)",
    })
    .option("seed", { type: "number", default: 0, describe: "picks the weights (the same seed, the same weights)" })
    .option("only", { type: "string", array: true, describe: "layer-kind globs, e.g. 'unet.attn*' or 'vae_*'" })
    .option("tensors", { type: "string", array: true, describe: "module-path globs that limit the perturbed tensors, e.g. '*mid_block*'" })
    .option("cases", {
      type: "string",
      array: true,
      describe: "case-id globs that further limit the cases run (default: every case the perturbed part reaches)",
    })
    .option("profile", { type: "string", default: "fp32", describe: "tolerance profile the catches are judged by" })
    .option("tolerances", { type: "string", describe: "tolerance file (default: conformance/tolerances.json)" })
    .option("samples", { type: "number", default: 1, describe: "tensors per kind searched for their smallest caught size" })
    .option("sweep", {
      type: "boolean",
      default: true,
      describe: "also probe every other tensor of the target kinds at +1e-2 and x1.01 (--no-sweep: off)",
    })
    .option("relatives", { type: "string", describe: `single-weight sizes, comma-separated (default ${DEFAULT_RELATIVES.join(",")})` })
    .option("scales", { type: "string", describe: `attention-projection scales, comma-separated (default ${DEFAULT_SCALES.join(",")})` })
    .option("out", { type: "string", describe: "folder for sensitivity.json / .md / .html (default: reports/sensitivity-<timestamp>)" })
    .option("overwrite", { type: "boolean", default: false, describe: "replace the files in an existing --out folder" })
    .option("threads", { type: "number", default: 0, describe: THREADS_HELP })
    .option("runtime", { type: "string", default: DEFAULT_RUNTIME, describe: RUNTIME_HELP })
    .option("force-sd1", { type: "boolean", default: false, describe: "run a model that looks like SD 2.x as SD 1.x anyway" })
    .option("quiet", { type: "boolean", default: false, describe: "no per-probe lines" })
    .option("verbose", { type: "boolean", default: false })
    .strict()
    .fail((msg, err) => {
      throw new HarnessError(`sensitivity: ${msg ?? err?.message ?? "bad arguments"}`, ExitCode.usage);
    })
    .help()
    .version(VERSION)
    .exitProcess(false);
}

function sizeList(flag: string, v: unknown, min: number, max: number): number[] {
  const parts = String(v)
    .split(",")
    .map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => p === ""))
    throw new HarnessError(`${flag}: ${JSON.stringify(v)} is not a comma-separated list of numbers`, ExitCode.usage);
  return parts.map((p) => numFlag(flag, p, min, max));
}

function writeSensitivity(dir: string, report: SensitivityReport): void {
  writeFileAtomic(
    path.join(dir, "sensitivity.json"),
    JSON.stringify(report, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v), 1) + "\n",
  );
  writeFileAtomic(path.join(dir, "sensitivity.md"), renderSensitivityMarkdown(report));
  writeFileAtomic(path.join(dir, "sensitivity.html"), renderSensitivityHtml(report));
}

export async function sensitivityCommand(argv: string[], io: CliIO): Promise<number> {
  const args = await parser(argv).parseAsync();
  if (args.help || args.version) return ExitCode.ok;
  const budget = numFlag("--budget", asTyped(argv, "budget", args.budget), 1, 7 * 24 * 3600);
  const seed = intFlag("--seed", asTyped(argv, "seed", args.seed), 0, 0xffffffff);
  const samples = intFlag("--samples", asTyped(argv, "samples", args.samples), 1, 1000);
  const threads = threadsFlag(asTyped(argv, "threads", args.threads));
  const runtime = runtimeFlag(args.runtime, io.signal);
  const relatives = args.relatives !== undefined ? sizeList("--relatives", args.relatives, 1e-12, 9.99) : undefined;
  const scales = args.scales !== undefined ? sizeList("--scales", args.scales, 1e-3, 100) : undefined;
  if (scales?.includes(1)) throw new HarnessError("--scales: a scale of 1 changes nothing", ExitCode.usage);
  const tol = loadTolerances(args.tolerances);
  if (!profiles(tol).includes(String(args.profile))) {
    throw new HarnessError(
      `--profile: unknown profile ${JSON.stringify(args.profile)}; known: ${profiles(tol).join(", ")}`,
      ExitCode.usage,
    );
  }
  // as conformance takes it: --inpaint-model, else the bundled inpainting model beside the bundled model
  const bundled = path.resolve(String(args.model)) === path.resolve(DEFAULT_MODEL) && fs.existsSync(DEFAULT_INPAINT_MODEL);
  const inpaintModel = args["inpaint-model"] !== undefined ? String(args["inpaint-model"]) : bundled ? DEFAULT_INPAINT_MODEL : undefined;
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const outDir = args.out ? String(args.out) : path.join("reports", `sensitivity-${stamp}`);
  // checked and locked before the long run (a second run into it is refused, exit 75); the report
  // files are written at the end, and the folder is removed again if the run leaves it empty
  const folder = ReportFolder.check(outDir, {
    flag: "--out",
    overwrite: Boolean(args.overwrite),
    refuse: "non-empty",
    lock: { command: ["sensitivity", ...argv].join(" ") },
  });
  let report: SensitivityReport;
  try {
    report = await runSensitivity({
      model: String(args.model),
      inpaintModel,
      references: String(args.references),
      profile: String(args.profile),
      tolerances: tol,
      budgetSeconds: budget,
      seed,
      only: args.only ?? [],
      tensors: args.tensors ?? [],
      cases: args.cases ?? [],
      samples,
      sweep: Boolean(args.sweep),
      relatives,
      scales,
      threads,
      runtime,
      forceSd1: Boolean(args["force-sd1"]),
      argv: ["sensitivity", ...argv],
      log: args.quiet ? undefined : (line) => io.err(`${line}\n`),
      signal: io.signal,
    });
    folder.begin();
    writeSensitivity(outDir, report);
    folder.commit();
    folder.unlock();
  } catch (e) {
    folder.abandon();
    throw e;
  } finally {
    await runtime.close();
  }
  io.out(renderSensitivityText(report));
  io.out(`${path.join(outDir, "sensitivity.html")}\n`);
  return ExitCode.ok;
}
