/**
 * The conformance runner: one loop over (model variant × case), each case run through the library
 * code `generate` uses, judged against data tolerances, and written as report.json, summary.md,
 * junit.xml and report.html. Worst status wins; exit codes: 0 all pass, 1 a case failed.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { HarnessError, ExitCode } from "../errors";
import { StableDiffusionPipeline, PipelineOptions } from "../pipeline/pipeline";
import { writeFileAtomic } from "../util/atomic";
import { ReferenceSet } from "./reference-set";
import { CaseDef, listCases, filterCases, shardCases } from "./cases";
import { ToleranceFile, loadTolerances, resolve, evaluate } from "./tolerances";
import { runStage, StageContext } from "./stages";
import { CaseResult, ModelInfo, Report, Status, worstStatus, STATUS_RANK } from "./types";
import { renderMarkdown, renderJunit, renderHtml } from "./report";
import { VERSION } from "../cli/defaults";

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
  readonly log?: (line: string) => void;
  readonly signal?: AbortSignal;
}

/** The headline drift number of a result, for tables and baselines: the worst relL2 (or the stage's own measure). */
export function headline(r: CaseResult): { metric: string; value: number } {
  const extra = r.checks.find((c) => c.tensor === "case");
  if (extra) return { metric: extra.metric, value: extra.value };
  const ms = Object.values(r.metrics);
  if (r.stage === "rng") return { metric: "maxUlp", value: Math.max(0, ...ms.map((m) => m.maxUlp ?? 0)) };
  if (ms.length === 0) return { metric: "relL2", value: NaN };
  return { metric: "relL2", value: Math.max(...ms.map((m) => m.relL2)) };
}

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
  let report: Report;
  try {
    report = parseReportJson(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new HarnessError(`--baseline ${file}: cannot read a report (${(e as Error).message.split("\n")[0]})`, ExitCode.usage);
  }
  if (report?.format !== "sd-harness-report/1" || !Array.isArray(report.results)) {
    throw new HarnessError(`--baseline ${file}: not an sd-harness report.json`, ExitCode.usage);
  }
  return new Map(report.results.map((r) => [`${r.model}\u0000${r.id}`, r]));
}

export function summarize(results: readonly CaseResult[]): Report["summary"] {
  const counts: Record<Status, number> = { pass: 0, fail: 0, xfail: 0, xpass: 0, error: 0, skip: 0 };
  for (const r of results) counts[r.status]++;
  return { ...counts, total: results.length, verdict: worstStatus(results.map((r) => r.status)) };
}

export async function runConformance(opts: RunOptions): Promise<Report> {
  const log = opts.log ?? (() => {});
  const started = new Date();
  const refs = ReferenceSet.open(opts.references);
  const tol = opts.tolerances ?? loadTolerances();
  resolve(tol, opts.profile, "tokenizer", "", ""); // validates the profile name up front
  let cases: CaseDef[] = filterCases(listCases(refs), opts.only ?? [], opts.skip ?? []);
  if (opts.shard) cases = shardCases(cases, opts.shard);
  if (cases.length === 0) throw new HarnessError(`no cases match --only ${JSON.stringify(opts.only ?? [])} / --skip ${JSON.stringify(opts.skip ?? [])}`, ExitCode.usage);
  const baseline = opts.baseline ? loadBaseline(opts.baseline) : null;
  const factor = opts.baselineFactor ?? 2;
  if (opts.outDir) {
    if (fs.existsSync(opts.outDir) && fs.readdirSync(opts.outDir).length > 0 && !opts.overwrite) {
      throw new HarnessError(`--out ${opts.outDir}: exists and is not empty (pass --overwrite to replace its reports)`, ExitCode.output);
    }
    try {
      fs.mkdirSync(path.join(opts.outDir, "assets"), { recursive: true });
    } catch (e) {
      throw new HarnessError(`--out ${opts.outDir}: cannot create (${(e as NodeJS.ErrnoException).code})`, ExitCode.output);
    }
  }
  const factory: PipelineFactory = opts.pipelineFactory ?? ((dir, o) => StableDiffusionPipeline.load(dir, o));
  const results: CaseResult[] = [];
  const models: ModelInfo[] = [];
  for (const spec of opts.models) {
    const pipe = await factory(spec.dir, { threads: opts.threads ?? 0 });
    const inpaintPipe = spec.inpaintDir ? await factory(spec.inpaintDir, { threads: opts.threads ?? 0 }) : null;
    models.push({ label: spec.label, dir: spec.dir, hashes: modelHashes(spec.dir) });
    const assetsRel = `assets/${spec.label.replace(/[^A-Za-z0-9._-]+/g, "_")}`;
    if (opts.outDir) fs.mkdirSync(path.join(opts.outDir, assetsRel), { recursive: true });
    const ctx: StageContext = { pipe, inpaintPipe, refs, assets: opts.outDir ? { dir: path.join(opts.outDir, assetsRel), rel: assetsRel } : null };
    try {
      for (const c of cases) {
        if (opts.signal?.aborted) throw new HarnessError("interrupted", ExitCode.interrupted);
        const t0 = process.hrtime.bigint();
        const stageKey = c.kind === "unet_free" ? "unet_free" : c.stage;
        const tolerance = resolve(tol, opts.profile, stageKey, c.id, spec.label);
        let result: CaseResult;
        try {
          const out = await runStage(ctx, c, spec.label);
          const timeMs = Number(process.hrtime.bigint() - t0) / 1e6;
          const checks = out.skip ? [] : evaluate(tolerance.limits, out.metrics, out.images ?? [], out.extra ?? {});
          let status: Status = out.skip ? "skip" : checks.every((k) => k.ok) && !out.nonFinite ? "pass" : "fail";
          let message = out.skip ?? out.message;
          if (out.nonFinite) message = `NaN/Inf first at ${out.nonFinite.stage}${out.nonFinite.step === null ? "" : ` step ${out.nonFinite.step}`}: ${out.nonFinite.what}`;
          if (tolerance.expectedFailure && status !== "skip") {
            status = status === "fail" ? "xfail" : "xpass";
            message = `expected failure: ${tolerance.expectedFailure}${message ? `; ${message}` : ""}`;
          }
          result = {
            id: c.id, stage: c.stage, model: spec.label, status, message, metrics: out.metrics, images: out.images,
            checks, series: out.series, nonFinite: out.nonFinite,
            tolerance: { profile: opts.profile, source: tolerance.source, reason: tolerance.reason }, timeMs,
          };
        } catch (e) {
          if (e instanceof HarnessError && e.exitCode === ExitCode.interrupted) throw e;
          const timeMs = Number(process.hrtime.bigint() - t0) / 1e6;
          result = {
            id: c.id, stage: c.stage, model: spec.label, status: "error", message: (e as Error).message.split("\n")[0],
            metrics: {}, checks: [], tolerance: { profile: opts.profile, source: tolerance.source, reason: tolerance.reason }, timeMs,
          };
        }
        if (baseline && result.status !== "error" && result.status !== "skip") {
          const before = baseline.get(`${spec.label}\u0000${c.id}`);
          if (before) {
            const a = headline(before);
            const b = headline(result);
            // drift at the float32 rounding floor (1e-7) is noise, not a regression
            const grown = b.value / Math.max(a.value, 1e-7);
            const flagged = Number.isFinite(b.value) && grown > factor && b.value > 1e-7;
            result = {
              ...result,
              regression: { metric: b.metric, before: a.value, after: b.value, factor: grown, flagged },
              ...(flagged && result.status === "pass" ? { status: "fail" as Status, message: `drift grew ${grown.toFixed(1)}x over the baseline (${a.value.toExponential(2)} -> ${b.value.toExponential(2)})` } : {}),
            };
          }
        }
        results.push(result);
        const h = headline(result);
        log(`${result.status.toUpperCase().padEnd(5)} ${spec.label.padEnd(8)} ${c.id}${Number.isFinite(h.value) ? `  ${h.metric} ${h.value.toExponential(2)}` : ""}${result.status !== "pass" && result.message ? `  (${result.message})` : ""}`);
      }
    } finally {
      await pipe.release();
      await inpaintPipe?.release();
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
      host: { platform: os.platform(), arch: os.arch(), cpus: os.cpus()[0]?.model ?? "unknown", cores: os.cpus().length },
      threads: opts.threads ?? 0,
      versions: { "sd-harness": VERSION, node: process.versions.node, "onnxruntime-node": require("onnxruntime-node/package.json").version },
      shard: opts.shard,
    },
    profile: opts.profile,
    models,
    references: { dir: opts.references, model: m.model, device: m.device, deviceName: m.device_name, versions: m.versions, command: m.command },
    results,
    summary: summarize(results),
    baseline: baseline ? { file: opts.baseline!, factor, regressions: results.filter((r) => r.regression?.flagged).length } : undefined,
  };
  if (opts.outDir) writeReport(opts.outDir, report);
  return report;
}

/** report.json, summary.md, junit.xml, report.html — each written atomically. */
export function writeReport(outDir: string, report: Report): void {
  writeFileAtomic(path.join(outDir, "report.json"), JSON.stringify(report, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v), 1) + "\n");
  writeFileAtomic(path.join(outDir, "summary.md"), renderMarkdown(report));
  writeFileAtomic(path.join(outDir, "junit.xml"), renderJunit(report));
  const readAsset = (rel: string) => {
    const p = path.join(outDir, rel);
    return fs.existsSync(p) ? fs.readFileSync(p) : null;
  };
  writeFileAtomic(path.join(outDir, "report.html"), renderHtml(report, readAsset));
}

export function exitCodeFor(report: Report): number {
  return STATUS_RANK[report.summary.verdict] >= STATUS_RANK.xpass ? ExitCode.failed : ExitCode.ok;
}
