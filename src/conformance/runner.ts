/**
 * The conformance runner: one loop over (model variant × case) in three steps — run (the case's
 * stage from the stage registry, src/conformance/stages, through the library code `generate`
 * uses), judge (against data tolerances, expected failures and a --baseline), write (every format
 * in the reporter registry, src/conformance/report/reporters.ts). Worst status wins; exit codes:
 * 0 all pass, 1 a case failed.
 */
import { ORT_CLOCK } from "../pipeline/onnx-model";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { HarnessError, ExitCode, oneLine } from "../errors";
import { StableDiffusionPipeline, PipelineOptions } from "../pipeline/pipeline";
import { ReferenceSet } from "./cases/reference-set";
import { CaseDef, listCases, filterCases, shardCases, caseCost } from "./cases/cases";
import {
  ToleranceFile,
  Resolved,
  Limits,
  loadTolerances,
  resolve,
  evaluate,
  requireLimits,
  toleranceSha256,
  versionWarnings,
} from "./judge/tolerances";
import { readReportFile, safeFileName } from "./report/report-file";
import { ReportFolder } from "./report/out-dir";
import { runStage, defOfResult, stageDef, StageContext, StageOutcome } from "./stages/index";
import { computeCoverage } from "./cases/coverage";
import { checkFingerprint } from "./cases/fingerprint";
import { loadModelFolder } from "../pipeline/model-folder";
import { CaseResult, ModelInfo, Report, Status, TensorMetrics, isFailing, summarize } from "./types";
import { writeReports, ReporterEnv } from "./report/reporters";
import { headline } from "./judge/headline";
import { VERSION } from "../util/package";
import { ORT_NODE_VERSION } from "../runtime/ort-node";
import { runLocalize, checkLocalize, ModuleLimitFile } from "./localize/localize";
import type { ComponentKind } from "../pipeline/onnx-model";
import { NotCoveredError } from "../runtime/types";
import type { Runtime } from "../runtime/types";
import { defaultRuntime } from "../runtime/index";
import { runAgainst } from "./judge/against";
import { hasFloor, peakAmplification, withFloor, worstExcess } from "./judge/float64-floor";
import { describeMachine } from "../util/machine";

export interface ModelSpec {
  readonly label: string;
  readonly dir: string;
  readonly inpaintDir?: string | null;
}

export type PipelineFactory = (dir: string, options: PipelineOptions) => Promise<StableDiffusionPipeline>;

export interface RunOptions {
  readonly models: readonly ModelSpec[];
  readonly references: string;
  readonly profile: string;
  readonly only?: readonly string[];
  readonly skip?: readonly string[];
  readonly shard?: { readonly index: number; readonly count: number };
  /** report folder (created; must not exist unless overwrite) */
  readonly outDir: string | null;
  readonly overwrite?: boolean;
  readonly threads?: number;
  readonly tolerances?: ToleranceFile;
  readonly baseline?: string;
  readonly baselineFactor?: number;
  readonly argv?: readonly string[];
  readonly pipelineFactory?: PipelineFactory;
  /** the pipeline factory owns the pipelines it returns and releases them itself (sensitivity shares one across runs): the run releases none */
  readonly keepPipelines?: boolean;
  /** the runtime that runs every model's components (default: ort-node) */
  readonly runtime?: Runtime;
  readonly log?: (line: string) => void;
  /** warnings that must reach the user even with --quiet (a job summary that could not be written) */
  readonly warn?: (line: string) => void;
  readonly signal?: AbortSignal;
  /** run models that look like SD 2.x as SD 1.x anyway */
  readonly forceSd1?: boolean;
  /** port vs port: judge every model stage against this model's outputs instead of PyTorch's (--against) */
  readonly against?: ModelSpec;
  /** also compare per-module outputs with a module reference set (conformance --localize) */
  readonly localize?: { readonly moduleReferences: string; readonly limits?: ModuleLimitFile; readonly onlyFailed?: boolean };
  /**
   * The environment for report formats that write outside the report folder (the GitHub job
   * summary reads GITHUB_STEP_SUMMARY); none by default, so the library writes only into outDir.
   */
  readonly reportEnv?: ReporterEnv;
  /** report formats (reporter names) not to write */
  readonly disabledReporters?: readonly string[];
}

export { headline } from "./judge/headline";
export { summarize } from "./types";

function sha256File(file: string): string {
  const h = crypto.createHash("sha256");
  const fd = fs.openSync(file, "r");
  try {
    const buf = Buffer.alloc(1 << 20);
    let n: number;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest("hex");
}

function modelHashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of ["text_encoder", "unet", "vae_encoder", "vae_decoder"]) {
    for (const f of ["model.onnx", "model.onnx_data"]) {
      const p = path.join(dir, part, f);
      if (fs.existsSync(p)) out[`${part}/${f}`] = sha256File(p);
    }
  }
  return out;
}

/** report.json stores non-finite numbers (PSNR of identical tensors) as strings; this revives them. */
export function parseReportJson(text: string): Report {
  return JSON.parse(text, (_k, v) => (v === "Infinity" ? Infinity : v === "-Infinity" ? -Infinity : v === "NaN" ? NaN : v));
}

function loadBaseline(file: string): Map<string, CaseResult> {
  // every field headline() and the writers read is checked, so a baseline without results or metrics is one line
  const { report } = readReportFile(file, "--baseline");
  return new Map(report.results.map((r) => [`${r.model}\u0000${r.id}`, r]));
}

export async function runConformance(opts: RunOptions): Promise<Report> {
  const started = new Date();
  const clock0 = { ...ORT_CLOCK };
  const refs = ReferenceSet.open(opts.references);
  const tol = opts.tolerances ?? loadTolerances();
  resolve(tol, opts.profile, "tokenizer", "", ""); // validates the profile name up front
  const selected: CaseDef[] = filterCases(listCases(refs), opts.only ?? [], opts.skip ?? []);
  let cases = selected;
  if (opts.shard) cases = shardCases(cases, opts.shard, (c) => caseCost(refs, c));
  if (cases.length === 0) throw new HarnessError(noCasesMessage(listCases(refs).length, selected.length, opts), ExitCode.usage);
  // no limit must never mean pass: every selected case must have limits before anything runs
  // a stage's limits are keyed by its kind (unet_free has its own)
  for (const c of cases) {
    for (const spec of opts.models)
      requireLimits(tol, opts.profile, c.kind, c.id, resolve(tol, opts.profile, c.kind, c.id, spec.label, hasFloor(refs, c)));
  }
  checkModelsMatchReferences(opts, refs);
  const caseSha = (id: string) => refs.manifest.cases.find((x) => x.id === id)?.sha256 ?? null;
  const localizeLimits = opts.localize
    ? checkLocalize(opts.localize.moduleReferences, opts.profile, opts.localize.limits, caseSha, opts.log)
    : undefined;
  const baseline = opts.baseline ? loadBaseline(opts.baseline) : null;
  const factor = opts.baselineFactor ?? 2;
  // checked now, created when the first model has loaded; removed again if the run fails or is interrupted
  // and locked at once: a second run into the same folder is refused (exit 75) until this one ends
  const folder = opts.outDir
    ? ReportFolder.check(opts.outDir, {
        flag: "--out",
        overwrite: !!opts.overwrite,
        refuse: "non-empty",
        lock: { command: (opts.argv ?? ["conformance"]).join(" ") },
      })
    : null;
  try {
    const factory: PipelineFactory = opts.pipelineFactory ?? ((dir, o) => StableDiffusionPipeline.load(dir, o));
    const b = opts.against
      ? await factory(opts.against.dir, { threads: opts.threads ?? 0, forceSd1: opts.forceSd1, runtime: runtimeOf(opts) })
      : null;
    let report: Report;
    try {
      report = await runCases(opts, refs, tol, cases, baseline, factor, folder, { started, ort: clock0 }, b);
    } finally {
      if (!opts.keepPipelines) await b?.release();
    }
    if (opts.localize) {
      const localize = await runLocalize({
        models: opts.models,
        moduleReferences: opts.localize.moduleReferences,
        limits: localizeLimits,
        profile: opts.profile,
        threads: opts.threads,
        runtime: runtimeOf(opts),
        log: opts.log,
        signal: opts.signal,
        against: opts.against,
        components: opts.localize.onlyFailed ? failedComponents(report.results) : undefined,
      });
      // a port without the modules operation: what --localize did not look at is a coverage gap
      const byWhy = new Map<string, string[]>();
      for (const n of localize.notCovered ?? []) byWhy.set(n.why, [...(byWhy.get(n.why) ?? []), n.component]);
      const gaps = [...byWhy].map(([why, comps]) => ({
        what: `--localize ${[...new Set(comps)].join(", ")}`,
        why: `not covered by this port (${why})`,
      }));
      report = {
        ...report,
        localize,
        ...(gaps.length && report.coverage ? { coverage: { ...report.coverage, gaps: [...report.coverage.gaps, ...gaps] } } : {}),
      };
    }
    if (folder) {
      folder.commit();
      writeReport(folder.dir, report, { env: opts.reportEnv, disabled: opts.disabledReporters, warn: opts.warn });
      folder.unlock();
    }
    return report;
  } catch (e) {
    folder?.abandon();
    throw e;
  }
}

/** The runtime the run's components go through: the caller's, else the default (ort-node). */
function runtimeOf(opts: RunOptions): Runtime {
  return opts.runtime ?? defaultRuntime();
}

/** The runtime's package beside onnxruntime-node's in run.versions, when it is another one. */
export function runtimeVersion(runtime: Runtime): Record<string, string> {
  const d = runtime.describe();
  return d.package === "onnxruntime-node" ? {} : { [d.package]: d.version };
}

/** Why no case is left: an empty shard, or --only / --skip that matched nothing (with a hint on globs). */
function noCasesMessage(total: number, selected: number, opts: RunOptions): string {
  const only = opts.only ?? [];
  const skip = opts.skip ?? [];
  if (selected > 0 && opts.shard) {
    return `shard ${opts.shard.index}/${opts.shard.count} has no cases (${selected} cases in all${only.length || skip.length ? " after --only / --skip" : ""}); use at most ${selected} shards`;
  }
  const filters = [
    ...only.map((g) => `--only ${JSON.stringify(oneLine(g, 60))}`),
    ...skip.map((g) => `--skip ${JSON.stringify(oneLine(g, 60))}`),
  ].join(" ");
  return `no cases match ${filters || "the reference set"} (${total} cases in the set; globs match whole ids such as 'unet:*' or '*-free'; --list shows them)`;
}

/** Every --model (and --inpaint-model) must be the model the reference set was made from. */
function checkModelsMatchReferences(opts: RunOptions, refs: ReferenceSet): void {
  const manifest = refs.manifest as unknown as Record<string, unknown>;
  const warnings = new Set<string>();
  for (const spec of opts.models) {
    const w = checkFingerprint(manifest, "fingerprint", loadModelFolder(spec.dir, { forceSd1: opts.forceSd1 }), opts.references, "--model");
    if (w) warnings.add(w);
    // a set made without an inpainting model has no inpaint cases, so nothing to check then
    if (spec.inpaintDir && manifest.inpaint_fingerprint !== undefined) {
      checkFingerprint(
        manifest,
        "inpaint_fingerprint",
        loadModelFolder(spec.inpaintDir, { forceSd1: opts.forceSd1 }),
        opts.references,
        "--inpaint-model",
      );
    }
  }
  for (const w of warnings) opts.log?.(`warning: ${w}`);
}

async function runCases(
  opts: RunOptions,
  refs: ReferenceSet,
  tol: ToleranceFile,
  cases: readonly CaseDef[],
  baseline: Map<string, CaseResult> | null,
  factor: number,
  folder: ReportFolder | null,
  start: { started: Date; ort: typeof ORT_CLOCK },
  against: StableDiffusionPipeline | null = null,
): Promise<Report> {
  const { started, ort: clock0 } = start;
  const log = opts.log ?? (() => {});
  const factory: PipelineFactory = opts.pipelineFactory ?? ((dir, o) => StableDiffusionPipeline.load(dir, o));
  const results: CaseResult[] = [];
  const models: ModelInfo[] = [];
  const precisions: Record<string, string> = {};
  for (const spec of opts.models) {
    const corrections: string[] = [];
    const options = {
      threads: opts.threads ?? 0,
      forceSd1: opts.forceSd1,
      runtime: runtimeOf(opts),
      warn: (w: string) => corrections.push(w),
    };
    const pipe = await factory(spec.dir, options);
    const inpaintPipe = spec.inpaintDir ? await factory(spec.inpaintDir, options) : null;
    for (const w of new Set(corrections)) log(`warning: ${w}`);
    precisions[spec.label] = (await pipe.component("unet")).inputType("sample");
    models.push({
      label: spec.label,
      dir: spec.dir,
      hashes: modelHashes(spec.dir),
      ...(corrections.length ? { corrections: [...new Set(corrections)] } : {}),
      runtime: runtimeOf(opts).describe(),
    });
    const assetsRel = `assets/${safeFileName(spec.label)}`;
    // assets are staged under a hidden name and only moved to assetsRel when the run completes
    const ctx: StageContext = { pipe, inpaintPipe, refs, assets: folder ? { dir: folder.stage(assetsRel), rel: assetsRel } : null };
    try {
      for (const c of cases) {
        // let the event loop turn between cases: stages that await nothing asynchronous (schedulers,
        // rng) otherwise ran to the end with a SIGINT / SIGTERM handler waiting unheard
        await new Promise<void>((r) => setImmediate(r));
        if (opts.signal?.aborted) throw new HarnessError("interrupted", ExitCode.interrupted);
        const t0 = process.hrtime.bigint();
        const tolerance = resolve(tol, opts.profile, c.kind, c.id, spec.label, hasFloor(refs, c));
        let result: CaseResult;
        // a runtime that runs only some components (a port) says which stages it leaves uncovered
        const notCovered = runtimeOf(opts).notCovered?.(stageDef(c.kind).components) ?? null;
        try {
          if (notCovered) throw new NotCoveredError(notCovered);
          const ran = await runCase(ctx, c, spec.label, refs, against ? { pipe: against, label: opts.against!.label } : null);
          // tensors of a floored case that have no floor of their own (end_to_end's prompt_embeds)
          // keep the profile's stand-in limits
          const unfloored = hasFloor(refs, c) ? tol.without_floor?.[opts.profile]?.[c.kind] : undefined;
          result = judgeCase(c, spec.label, ran, tolerance, opts.profile, Number(process.hrtime.bigint() - t0) / 1e6, unfloored);
        } catch (e) {
          if (e instanceof HarnessError && e.exitCode === ExitCode.interrupted) throw e;
          const timeMs = Number(process.hrtime.bigint() - t0) / 1e6;
          result = {
            id: c.id,
            stage: c.stage,
            model: spec.label,
            status: e instanceof NotCoveredError ? "skip" : "error",
            message: (e as Error).message.split("\n")[0],
            metrics: {},
            checks: [],
            tolerance: { profile: opts.profile, source: tolerance.source, reason: tolerance.reason },
            timeMs,
          };
        }
        if (baseline && result.status !== "error" && result.status !== "skip") {
          const before = baseline.get(`${spec.label}\u0000${c.id}`);
          if (before) result = judgeBaseline(result, before, factor);
        }
        results.push(result);
        const h = headline(result);
        const ex = worstExcess(result.metrics);
        const amp = result.amplification !== undefined ? `, loop amplifies x${result.amplification.toPrecision(3)}` : "";
        const exText = ex
          ? `  excess ${ex.value.toPrecision(3)}x float32 floor${amp}`
          : result.float64Floor && result.float64Floor !== "yes"
            ? "  (float64 floor: no)"
            : "";
        log(
          `${result.status.toUpperCase().padEnd(5)} ${oneLine(spec.label, 60).padEnd(8)} ${c.id}${Number.isFinite(h.value) ? `  ${h.metric} ${h.value.toExponential(2)}` : ""}${exText}${result.status !== "pass" && result.message ? `  (${oneLine(result.message, 300)})` : ""}`,
        );
      }
    } finally {
      if (!opts.keepPipelines) {
        await pipe.release();
        await inpaintPipe?.release();
      }
    }
  }
  const finished = new Date();
  const m = refs.manifest;
  const report: Report = {
    format: "sd-harness-report/1",
    run: {
      started: started.toISOString(),
      finished: finished.toISOString(),
      durationMs: finished.getTime() - started.getTime(),
      argv: opts.argv ?? [],
      host: {
        platform: os.platform(),
        arch: os.arch(),
        cpus: os.cpus()[0]?.model ?? "unknown",
        cores: os.cpus().length,
        isa: describeMachine().isa,
        os: describeMachine().os,
      },
      threads: opts.threads ?? 0,
      versions: {
        "sd-harness": VERSION,
        node: process.versions.node,
        "onnxruntime-node": ORT_NODE_VERSION,
        ...runtimeVersion(runtimeOf(opts)),
      },
      shard: opts.shard,
      ort: { createMs: ORT_CLOCK.createMs - clock0.createMs, runMs: ORT_CLOCK.runMs - clock0.runMs, runs: ORT_CLOCK.runs - clock0.runs },
    },
    profile: opts.profile,
    models,
    ...(opts.against
      ? {
          against: {
            label: opts.against.label,
            dir: opts.against.dir,
            hashes: modelHashes(opts.against.dir),
            runtime: runtimeOf(opts).describe(),
          },
        }
      : {}),
    references: {
      dir: opts.references,
      model: m.model,
      device: m.device,
      deviceName: m.device_name,
      versions: m.versions,
      command: m.command,
      sha256: refs.sha256,
      ...(refs.fingerprint !== undefined ? { fingerprint: refs.fingerprint } : {}),
      ...(referenceMachine(m) ? { machine: referenceMachine(m) } : {}),
    },
    tolerances: { file: tol.file ?? "(in memory)", sha256: toleranceSha256(tol) },
    results,
    summary: summarize(results),
    coverage: computeCoverage(refs, listCases(refs), cases, results, precisions, opts.profile),
    baseline: baseline ? { file: opts.baseline!, factor, regressions: results.filter((r) => r.regression?.flagged).length } : undefined,
  };
  const versionDrift = versionWarnings(tol, report.run.versions);
  return versionDrift.length > 0 ? { ...report, warnings: versionDrift } : report;
}

/** The manifest's "machine" (scripts/refgen/spread.py cpu_description), where it has a usable one. */
function referenceMachine(manifest: unknown): { model: string; isa?: string[]; os?: string; threads?: number } | undefined {
  const m = (manifest as { machine?: unknown }).machine as Record<string, unknown> | undefined;
  if (!m || typeof m !== "object" || typeof m.model !== "string") return undefined;
  const isa = Array.isArray(m.isa) && m.isa.every((x) => typeof x === "string") ? (m.isa as string[]) : undefined;
  return {
    model: m.model,
    ...(isa ? { isa } : {}),
    ...(typeof m.os === "string" ? { os: m.os } : {}),
    ...(typeof m.threads === "number" ? { threads: m.threads } : {}),
  };
}

/**
 * run: one case through its stage (or, with --against, through its stage against model B's
 * outputs), with the float64 floor added to the metrics where the set records one.
 */
async function runCase(
  ctx: StageContext,
  c: CaseDef,
  label: string,
  refs: ReferenceSet,
  against: { pipe: StableDiffusionPipeline; label: string } | null,
): Promise<Ran> {
  const raw = against ? await runAgainst(ctx, against.pipe, against.label, c, label) : await runStage(ctx, c, label);
  const floored = raw.skip ? null : withFloor(refs, c, raw.metrics);
  if (!floored) return { outcome: raw };
  if (against) return againstFloor(raw, floored, against.label);
  const amp = floored.amplification;
  // the loop's own sensitivity beside our per-step drift: two float64 runs one float32 ulp apart
  const series =
    amp && raw.series ? [...raw.series, { name: "float64 runs one ulp apart", metric: "relL2", values: [...amp.stepsRelL2] }] : raw.series;
  return {
    outcome: { ...raw, metrics: floored.metrics, ...(series ? { series } : {}) },
    float64Floor: floored.float64Floor,
    ...(amp ? { amplification: peakAmplification(amp) } : {}),
    ...(floored.unfixable ? { unfixable: floored.unfixable } : {}),
  };
}

/**
 * --against on a set with a float64 floor: judged in the same units as a run against PyTorch. B's
 * outputs are one more float32 computation, as the float32 reference is; two correct ones lie
 * within two envelopes of each other either way (triangle inequality), which the profile's limit
 * (fp32: 8) already allows for, so the divisor is the envelope, not twice it: doubling it let the
 * VAE decoder fault through the round trip pass against B while it fails against PyTorch. The
 * loop's amplification speaks of the reference loop, not B's: left out.
 */
function againstFloor(raw: StageOutcome, floored: ReturnType<typeof withFloor>, label: string): Ran {
  const metrics: Record<string, TensorMetrics> = { ...floored.metrics };
  const float64Floor = floored.float64Floor?.startsWith("yes")
    ? `yes: ${label}'s outputs judged in units of the set's float32 envelope, as PyTorch's are`
    : floored.float64Floor;
  return {
    outcome: { ...raw, metrics },
    ...(float64Floor !== undefined ? { float64Floor } : {}),
    ...(floored.unfixable ? { unfixable: floored.unfixable } : {}),
  };
}

interface Ran {
  readonly outcome: StageOutcome;
  readonly float64Floor?: string;
  /** loops: the peak of relL2 after a step ÷ the initial one, two float64 runs one float32 ulp apart */
  readonly amplification?: number;
  /** tensors float32 cannot fix (judge/float64-floor.ts UNFIXABLE_REL_L2), with their spread */
  readonly unfixable?: readonly string[];
}

/** judge: a case's outcome against its limits and expected failure, as a result. */
function judgeCase(
  c: CaseDef,
  label: string,
  ran: Ran,
  tolerance: Resolved,
  profile: string,
  timeMs: number,
  unfloored?: Limits,
): CaseResult {
  const unfixable = ran.unfixable ? `not judged, float32 cannot fix: ${ran.unfixable.join("; ")}` : undefined;
  // a tensor the set records no floor for (neither excess nor an envelope) is judged by the stand-in limits
  const withoutFloor = unfloored
    ? Object.fromEntries(Object.entries(ran.outcome.metrics).filter(([, m]) => m.excess === undefined && m.floorRelL2 === undefined))
    : {};
  const checks0 = ran.outcome.skip
    ? []
    : [
        ...evaluate(tolerance.limits, ran.outcome.metrics, ran.outcome.images ?? [], ran.outcome.extra ?? {}),
        ...(unfloored ? evaluate(unfloored, withoutFloor) : []),
      ];
  // a loop whose every compared tensor is beyond float32's reach is judged by its teacher-forced U-Net calls
  const out =
    unfixable && checks0.length === 0 && !ran.outcome.skip
      ? { ...ran.outcome, skip: `${unfixable}; its teacher-forced U-Net calls judge the model` }
      : ran.outcome;
  const checks = out.skip ? [] : checks0;
  // limits that name no metric this case produced judge nothing: that is an error, never a pass
  const unjudged = !out.skip && !out.nonFinite && checks.length === 0; // a NaN / Inf is itself a verdict
  let status: Status = out.skip ? "skip" : unjudged ? "error" : checks.every((k) => k.ok) && !out.nonFinite ? "pass" : "fail";
  let message = unjudged
    ? `no check applied: the limits of ${tolerance.source} (${Object.keys(tolerance.limits).join(", ")}) in profile ${profile} name no metric this ${c.kind} case produced`
    : (out.skip ?? (unfixable ? [out.message, unfixable].filter(Boolean).join("; ") : out.message));
  if (out.nonFinite)
    message = `NaN/Inf first at ${out.nonFinite.stage}${out.nonFinite.step === null ? "" : ` step ${out.nonFinite.step}`}: ${out.nonFinite.what}`;
  if (tolerance.expectedFailure && status !== "skip" && status !== "error") {
    status = status === "fail" ? "xfail" : "xpass";
    message = `expected failure: ${tolerance.expectedFailure}${message ? `; ${message}` : ""}`;
  }
  return {
    id: c.id,
    stage: c.stage,
    model: label,
    status,
    message,
    metrics: out.metrics,
    images: out.images,
    checks,
    series: out.series,
    nonFinite: out.nonFinite,
    ...(out.uncovered ? { uncovered: out.uncovered } : {}),
    tolerance: { profile, source: tolerance.source, reason: tolerance.reason },
    timeMs,
    ...(ran.float64Floor ? { float64Floor: ran.float64Floor } : {}),
    ...(ran.amplification !== undefined ? { amplification: ran.amplification } : {}),
  };
}

/** judge against --baseline: the headline metric's growth; a passing case whose drift grew past `factor` fails. */
function judgeBaseline(result: CaseResult, before: CaseResult, factor: number): CaseResult {
  const a = headline(before);
  const b = headline(result);
  // drift at the float32 rounding floor (1e-7) is noise, not a regression
  const grown = b.value / Math.max(a.value, 1e-7);
  const flagged = Number.isFinite(b.value) && grown > factor && b.value > 1e-7;
  return {
    ...result,
    regression: { metric: b.metric, before: a.value, after: b.value, factor: grown, flagged },
    ...(flagged && result.status === "pass"
      ? {
          status: "fail" as Status,
          message: `drift grew ${grown.toFixed(1)}x over the baseline (${a.value.toExponential(2)} -> ${b.value.toExponential(2)})`,
        }
      : {}),
  };
}

/**
 * --localize-failed: per model, the components that ran in a stage with a failed case (a failed
 * check or a stale expected failure; an error measured nothing to localize).
 */
function failedComponents(results: readonly CaseResult[]): (label: string) => ReadonlySet<ComponentKind> {
  const by = new Map<string, Set<ComponentKind>>();
  for (const r of results) {
    if (!isFailing(r.status) || r.status === "error") continue;
    const set = by.get(r.model) ?? by.set(r.model, new Set()).get(r.model)!;
    for (const c of defOfResult(r)?.components ?? []) set.add(c);
  }
  return (label) => by.get(label) ?? new Set();
}

/** Every format of the reporter registry, each written atomically (report/reporters.ts). */
export function writeReport(
  outDir: string,
  report: Report,
  options: { env?: ReporterEnv; disabled?: readonly string[]; warn?: (line: string) => void } = {},
): void {
  writeReports(outDir, report, options);
}

export function exitCodeFor(report: Report): number {
  return isFailing(report.summary.verdict) ? ExitCode.failed : ExitCode.ok;
}
