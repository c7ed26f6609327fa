/**
 * Sensitivity: what a reference set can and cannot see. Mutation testing for numeric conformance:
 * copies of the model with one weight changed (or one attention projection scaled) are judged by
 * the conformance runner itself (runConformance with `only` case ids and a pipelineFactory), and
 * the smallest change the default run catches is reported per layer kind, with the stage that
 * caught it.
 *
 * How a run goes:
 * 1. The files the model-folder loader and the components read (modelFolderFiles: model_index.json,
 *    the configs, the tokenizer's files, each component's model.onnx and the external data it
 *    names) are copied once into a temporary folder, symlinks materialized; nothing else of the
 *    folder is read (a pytorch_model.bin, a FIFO, a symlink loop), and a FIFO or device where one
 *    of those files is expected is refused in one line. The user's files are only ever read. Every probe edits a weight of the copy in place (same byte length:
 *    src/onnx/initializer-edit.ts), runs, and writes the saved bytes back before the next probe.
 * 2. A control run of the unperturbed copy over every case a selected component affects: cases
 *    that do not pass unperturbed cannot show a fault and are left out (listed); their times size
 *    the case subset when the budget is short.
 * 3. Probes, in an order that answers the targets first when the budget runs out: (a) for each
 *    kind, one seeded weight at the target size (+1e-2) and, for attention projections, the target
 *    scale (x1.01); (b) a ladder per probe towards the smallest caught size (a caught size steps
 *    down, a missed one up; the effect of a perturbation grows with its size, so the ladder stops
 *    at the boundary); (c) the sweep: every other tensor of a target kind at the target sizes.
 *    Each probe runs the component's own stage first (teacher-forced cases, cheapest) and stops at
 *    the first failing chunk; only a probe those cases miss also runs the free-running and
 *    end-to-end cases the component reaches, so "not caught" means the whole affected part of
 *    the default run passed (or says which part the budget left out).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { HarnessError, ExitCode } from "../../errors";
import { StableDiffusionPipeline } from "../../pipeline/pipeline";
import { loadModelFolder, modelFolderFiles, ModelFolder } from "../../pipeline/model-folder";
import { initializers } from "../../onnx/initializers";
import { trackPendingDirectory, untrackPendingDirectory } from "../../util/atomic";
import { compileGlob } from "../../util/glob";
import { VERSION } from "../../util/package";
import { ORT_NODE_VERSION } from "../../runtime/ort-node";
import { describeInitializers, applyEdit, readWeights, WeightEdit } from "../../onnx/initializer-edit";
import { runConformance, runtimeVersion, PipelineFactory } from "../runner";
import { ReferenceSet } from "../cases/reference-set";
import { CaseDef, listCases } from "../cases/cases";
import { STAGE_DEFS, stageDef } from "../stages/index";
import { METRICS } from "../judge/metric-table";
import { ToleranceFile, loadTolerances, toleranceSha256, resolve } from "../judge/tolerances";
import { CaseResult, Check } from "../types";
import { LAYER_KINDS, LayerKind, mapInitializers, unmapped, MappedInitializer } from "./layer-kinds";
import type { ComponentKind } from "../../pipeline/components";
import type { Runtime, RuntimeDescription } from "../../runtime/types";
import { defaultRuntime } from "../../runtime/index";

export const DEFAULT_RELATIVES: readonly number[] = [1e-1, 1e-2, 1e-3, 1e-4];
export const DEFAULT_SCALES: readonly number[] = [1.1, 1.01, 1.001];
/** the issue's targets: +1 % of any single weight, x1.01 of any attention projection */
const TARGET_RELATIVE = 1e-2;
const TARGET_SCALE = 1.01;

export interface SensitivityOptions {
  readonly model: string;
  readonly references: string;
  readonly profile?: string;
  readonly tolerances?: ToleranceFile;
  /** stop starting new probes after this many seconds (the control run counts) */
  readonly budgetSeconds: number;
  readonly seed?: number;
  /** layer-kind globs (`unet.attn*`); default every kind */
  readonly only?: readonly string[];
  /** globs over module paths (or initializer names) that limit which tensors are perturbed, e.g. `*mid_block*` */
  readonly tensors?: readonly string[];
  /** case-id globs that further limit the cases run (default: every case the component affects) */
  readonly cases?: readonly string[];
  /** single-weight relative sizes, largest first */
  readonly relatives?: readonly number[];
  /** whole-tensor scales for attention projections, largest first */
  readonly scales?: readonly number[];
  /** seeded weights (tensors) per kind that get a full ladder */
  readonly samples?: number;
  /** also probe every other tensor of the target kinds at the target sizes */
  readonly sweep?: boolean;
  readonly threads?: number;
  /** the runtime that runs the perturbed copies (default: ort-node) */
  readonly runtime?: Runtime;
  readonly forceSd1?: boolean;
  /**
   * a 9-channel inpainting model (the CLI's --inpaint-model, as in conformance): copied too, its
   * U-Net's tensors are probed with the U-Net kinds (named `inpaint:<tensor>`), and the inpainting
   * cases run instead of being left out
   */
  readonly inpaintModel?: string;
  /** where the temporary copy goes (default the OS temporary folder) */
  readonly tmpRoot?: string;
  readonly argv?: readonly string[];
  readonly log?: (line: string) => void;
  readonly signal?: AbortSignal;
}

/** The check that decided (or came closest to deciding) a probe. */
export interface Decider {
  readonly caseId: string;
  /** unet (teacher-forced), unet_free, end_to_end, vae_decode, … */
  readonly stage: string;
  readonly tensor: string;
  readonly metric: string;
  readonly value: number;
  readonly limit: number;
  /** value / limit for upper bounds ((1 - value) / (1 - limit) for cosine); > 1 fails */
  readonly ratio: number;
}

export interface ProbeResult {
  readonly kind: string;
  readonly tensor: string;
  readonly module: string | null;
  readonly region: string | null;
  readonly mode: "single" | "scale";
  /** relative size (single) or scale factor */
  readonly size: number;
  /** element index (single) */
  readonly index: number | null;
  readonly before: number;
  readonly after: number;
  readonly appliedRelative: number;
  /** rounding to the tensor's precision left it unchanged: nothing to catch */
  readonly unrepresentable: boolean;
  readonly caught: boolean;
  /** stages with a failing case among the cases run */
  readonly caughtBy: readonly string[];
  /** the first failing check, or (not caught) the check closest to its limit */
  readonly decider: Decider | null;
  readonly casesRun: number;
  /** cases run whose every checked value equals the unperturbed copy's, bit for bit: the change did not reach them */
  readonly casesUnmoved: number;
  readonly casesAffected: number;
  /** false when part of the affected cases was not run (a miss is then a miss of those run only) */
  readonly complete: boolean;
  /** why not complete: the budget ran short, or a sweep probe (stage cases only) */
  readonly partial?: "budget" | "sweep";
  readonly phase: "target" | "ladder" | "sweep";
  readonly sample: number | null;
  readonly timeMs: number;
}

export interface LadderSummary {
  readonly tensor: string;
  readonly module: string | null;
  readonly region: string | null;
  readonly index: number | null;
  /** smallest size caught, or null */
  readonly smallestCaught: number | null;
  readonly caughtBy: readonly string[];
  /** largest size tried and missed, or null */
  readonly largestMissed: number | null;
  /** the ladder reached its boundary (or an end of the size list) */
  readonly settled: boolean;
}

export interface KindSummary {
  readonly id: string;
  readonly component: ComponentKind;
  readonly description: string;
  readonly attention: boolean;
  readonly target: boolean;
  readonly tensors: number;
  readonly single: readonly LadderSummary[];
  readonly scale: readonly LadderSummary[];
  /** target-size probes over tensors of this kind (sample and sweep) */
  readonly atTarget: { readonly single: TargetTally; readonly scale: TargetTally | null };
  /** kind not reached within the budget, or nothing to edit */
  readonly notMeasured?: string;
}

export interface TargetTally {
  readonly size: number;
  readonly tested: number;
  readonly caught: number;
  /** tensors of the kind not probed at the target size (budget or --no-sweep) */
  readonly untested: number;
  readonly missed: readonly {
    readonly tensor: string;
    readonly module: string | null;
    readonly region: string | null;
    readonly decider: Decider | null;
    readonly complete: boolean;
    readonly casesRun: number;
    readonly casesUnmoved: number;
  }[];
}

export interface SensitivityReport {
  readonly format: "sd-harness-sensitivity/1";
  readonly run: {
    readonly started: string;
    readonly finished: string;
    readonly durationMs: number;
    readonly argv: readonly string[];
    readonly budgetSeconds: number;
    readonly seed: number;
    readonly threads: number;
    readonly versions: Readonly<Record<string, string>>;
    readonly host: { readonly platform: string; readonly arch: string; readonly cpus: string; readonly cores: number };
    /** the runtime the perturbed copies ran on (absent in reports of older versions: ort-node) */
    readonly runtime?: RuntimeDescription;
  };
  readonly model: { readonly dir: string; readonly inpaintDir?: string };
  readonly references: { readonly dir: string; readonly model: string; readonly device: string };
  readonly profile: string;
  readonly tolerances: { readonly file: string; readonly sha256: string };
  readonly settings: {
    readonly relatives: readonly number[];
    readonly scales: readonly number[];
    readonly targetRelative: number;
    readonly targetScale: number;
    readonly samples: number;
    readonly sweep: boolean;
    readonly only: readonly string[];
    readonly tensors: readonly string[];
    readonly cases: readonly string[];
  };
  readonly control: {
    readonly cases: number;
    readonly timeMs: number;
    /** the unperturbed copy's worst headline relL2 per stage: the drift a perturbation must rise above */
    readonly worstRelL2: Readonly<Record<string, number>>;
    readonly excluded: readonly { readonly id: string; readonly status: string; readonly message?: string }[];
  };
  /** per component: the cases each probe may run (stage cases first, in the order they run) */
  readonly caseSets: Readonly<
    Record<string, { readonly stage: readonly string[]; readonly rest: readonly string[]; readonly restSkipped?: string }>
  >;
  readonly kinds: readonly KindSummary[];
  readonly probes: readonly ProbeResult[];
  readonly unmapped: readonly {
    readonly component: string;
    readonly name: string;
    readonly count: number;
    readonly readers: readonly string[];
  }[];
  /** what the run did not measure, one sentence each */
  readonly notMeasured: readonly string[];
  readonly complete: boolean;
}

/** A small seeded generator (splitmix32): the same seed picks the same weights on every machine. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
}

function stageOf(c: CaseDef): string {
  return c.kind === "unet_free" ? "unet_free" : c.stage;
}

/**
 * The cases a component's weights reach, as the stage registry says which components a case runs:
 * its own stages (cheap, strict) and the denoising loops (the rest), the loops in registry order.
 */
function casesFor(component: ComponentKind, all: readonly CaseDef[], refs: ReferenceSet): { stage: CaseDef[]; rest: CaseDef[] } {
  const reaches = (c: CaseDef): boolean => {
    const d = stageDef(c.kind);
    return (d.componentsOf?.(refs.get(c.refId).meta ?? {}) ?? d.components).includes(component);
  };
  return {
    stage: all.filter((c) => !stageDef(c.kind).loop && reaches(c)),
    rest: STAGE_DEFS.filter((d) => d.loop).flatMap((d) => all.filter((c) => c.kind === d.kind && reaches(c))),
  };
}

/** Round-robin over runs (`unet:<run>-stepNN` grouped by run), so any prefix covers every run first. */
function interleave(cases: readonly CaseDef[]): CaseDef[] {
  const groups = new Map<string, CaseDef[]>();
  for (const c of cases) {
    const key = c.id.replace(/-step\d+$/, "");
    let g = groups.get(key);
    if (!g) groups.set(key, (g = []));
    g.push(c);
  }
  const out: CaseDef[] = [];
  const lists = [...groups.values()];
  for (let k = 0; out.length < cases.length; k++) for (const g of lists) if (k < g.length) out.push(g[k]);
  return out;
}

function ratioOf(c: Check): number {
  if (c.kind === "max") return c.limit > 0 ? c.value / c.limit : c.value > 0 ? Infinity : 0;
  if (c.metric === "cosine") return 1 - c.limit > 0 ? (1 - c.value) / (1 - c.limit) : 0;
  // psnr / psnrU8: decibels below the bound, as an error-size ratio
  return Math.pow(10, (c.limit - c.value) / 20);
}

function deciderOf(r: CaseResult, stage: string, c: Check): Decider {
  return { caseId: r.id, stage, tensor: c.tensor, metric: c.metric, value: c.value, limit: c.limit, ratio: ratioOf(c) };
}

const CAUGHT = new Set(["fail", "error", "xpass"]);
/** counts and uint8 picture metrics move in whole steps: a 1-level pixel flip says nothing about how close a miss came */
const DISCRETE = new Set(METRICS.filter((m) => m.discrete).map((m) => m.name));

function fmt(x: number): string {
  return Number(x.toPrecision(6)).toString();
}

export function describeSize(mode: "single" | "scale", size: number): string {
  return mode === "single" ? `+${fmt(size)}` : `x${fmt(size)}`;
}

/** A ladder over sizes (largest first): caught steps to a smaller size, missed to a larger one. */
class Ladder {
  readonly results = new Map<number, ProbeResult>();
  /** the largest index (smallest size) caught, -1 when none */
  private caughtMax = -1;
  /** the smallest index (largest size) missed, sizes.length when none */
  private missedMin: number;
  private next: number | null;

  constructor(
    readonly target: MappedInitializer,
    readonly mode: "single" | "scale",
    readonly sizes: readonly number[],
    readonly index: number | null,
    readonly sample: number,
    start: number,
  ) {
    this.missedMin = sizes.length;
    this.next = sizes.length ? start : null;
  }

  /** the index of the next size to probe, or null when the boundary is found */
  get pending(): number | null {
    return this.next;
  }

  record(i: number, r: ProbeResult): void {
    this.results.set(i, r);
    // a larger change than one caught is caught too, a smaller one than one missed is missed too
    if (r.caught) this.caughtMax = Math.max(this.caughtMax, i);
    else this.missedMin = Math.min(this.missedMin, i);
    const cand = r.caught ? i + 1 : i - 1;
    this.next = cand > this.caughtMax && cand < this.missedMin ? cand : null;
  }

  summary(): LadderSummary {
    const caught = [...this.results.entries()].filter(([, r]) => r.caught).sort((a, b) => b[0] - a[0]);
    const missed = [...this.results.entries()].filter(([, r]) => !r.caught).sort((a, b) => a[0] - b[0]);
    return {
      tensor: this.target.name,
      module: this.target.module,
      region: this.target.region,
      index: this.index,
      smallestCaught: caught.length ? this.sizes[caught[0][0]] : null,
      caughtBy: caught.length ? caught[0][1].caughtBy : [],
      largestMissed: missed.length ? this.sizes[missed[0][0]] : null,
      settled: this.next === null,
    };
  }
}

function validateSizes(relatives: readonly number[], scales: readonly number[]): void {
  for (const r of relatives)
    if (!Number.isFinite(r) || r <= 0 || r >= 10)
      throw new HarnessError(`relative size ${r} must be a number above 0 and below 10`, ExitCode.usage);
  for (const s of scales)
    if (!Number.isFinite(s) || s <= 0 || s === 1 || s > 100)
      throw new HarnessError(`scale ${s} must be a positive number other than 1, at most 100`, ExitCode.usage);
}

/** Ladders start at the target size when it is listed, else at the largest. */
function startAt(sizes: readonly number[], target: number): number {
  return Math.max(0, sizes.indexOf(target));
}

export async function runSensitivity(opts: SensitivityOptions): Promise<SensitivityReport> {
  const started = new Date();
  const t0 = Date.now();
  const deadline = t0 + opts.budgetSeconds * 1000;
  const log = opts.log ?? (() => {});
  const profile = opts.profile ?? "fp32";
  const tol = opts.tolerances ?? loadTolerances();
  resolve(tol, profile, "unet", "", ""); // an unknown profile is one line, before anything is copied
  const relatives = [...(opts.relatives ?? DEFAULT_RELATIVES)].sort((a, b) => b - a);
  const scales = [...(opts.scales ?? DEFAULT_SCALES)].sort((a, b) => Math.abs(Math.log(b)) - Math.abs(Math.log(a)));
  validateSizes(relatives, scales);
  const samples = opts.samples ?? 1;
  if (!Number.isInteger(samples) || samples < 1)
    throw new HarnessError(`samples ${samples} must be a whole number of at least 1`, ExitCode.usage);
  const sweep = opts.sweep ?? true;
  const seed = opts.seed ?? 0;
  const only = opts.only ?? [];
  const globs = only.map(compileGlob);
  const kinds = LAYER_KINDS.filter((k) => globs.length === 0 || globs.some((g) => g.test(k.id)));
  if (kinds.length === 0)
    throw new HarnessError(
      `no layer kind matches ${only.map((g) => JSON.stringify(g)).join(" ")}; kinds: ${LAYER_KINDS.map((k) => k.id).join(", ")}`,
      ExitCode.usage,
    );
  const refs = ReferenceSet.open(opts.references);
  const original = loadModelFolder(opts.model, { forceSd1: opts.forceSd1 });
  const caseGlobs = (opts.cases ?? []).map(compileGlob);
  const allCases = listCases(refs).filter((c) => caseGlobs.length === 0 || caseGlobs.some((g) => g.test(c.id)));
  // in the order the layer-kind table lists them: the U-Net first, where the budget goes
  const components = [...new Set(kinds.map((k) => k.component))].filter((c) => c !== "vae_encoder" || original.vaeEncoder);
  const inpaint = opts.inpaintModel ? loadModelFolder(opts.inpaintModel, { forceSd1: opts.forceSd1 }) : null;
  if (inpaint && !inpaint.isInpaint) {
    throw new HarnessError(
      `--inpaint-model: ${opts.inpaintModel} has a ${inpaint.unetConfig.inChannels}-channel U-Net; an inpainting model takes ${2 * inpaint.vaeConfig.latentChannels + 1}`,
      ExitCode.usage,
    );
  }

  const tmp = fs.mkdtempSync(path.join(opts.tmpRoot ?? os.tmpdir(), "sd-harness-sensitivity-"));
  trackPendingDirectory(tmp, "tree");
  try {
    const copy = path.join(tmp, "model");
    copyModelFolder(original, copy);
    const folder = loadModelFolder(copy, { forceSd1: opts.forceSd1 });
    const inpaintCopy = inpaint ? path.join(tmp, "inpaint") : null;
    if (inpaint) copyModelFolder(inpaint, inpaintCopy!);
    const inpaintFolder = inpaintCopy ? loadModelFolder(inpaintCopy, { forceSd1: opts.forceSd1 }) : null;
    return await measure({
      opts,
      started,
      t0,
      deadline,
      log,
      profile,
      tol,
      relatives,
      scales,
      samples,
      sweep,
      seed,
      only,
      kinds,
      refs,
      allCases,
      components,
      copy,
      folder,
      inpaintCopy,
      inpaintFolder,
    });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
    untrackPendingDirectory(tmp);
  }
}

/** Why the control run's non-passing cases are left out, each distinct reason counted on its own. */
function leftOut(excluded: readonly { readonly status: string; readonly message?: string }[]): string {
  if (excluded.length === 0) return "no case left out";
  const reasons = new Map<string, number>();
  for (const e of excluded) {
    const why = e.status === "skip" ? `skipped: ${e.message ?? "no reason given"}` : `not passing unperturbed (${e.status})`;
    reasons.set(why, (reasons.get(why) ?? 0) + 1);
  }
  const parts = [...reasons].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([why, n]) => `${n} ${why}`);
  return `${excluded.length} case${excluded.length === 1 ? "" : "s"} left out: ${parts.join("; ")}`;
}

/** A regular file's size, or one line saying why `file` cannot be copied as `what`. */
function regularFile(file: string, what: string): number {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    throw new HarnessError(`${file}: cannot be read (${code === "ELOOP" ? "a symlink loop" : code}); it is ${what}`, ExitCode.usage);
  }
  if (!st.isFile())
    throw new HarnessError(
      `${file}: not a regular file (${st.isFIFO() ? "a FIFO" : st.isDirectory() ? "a folder" : "a device or socket"}); it is ${what}`,
      ExitCode.usage,
    );
  return st.size;
}

/**
 * Copies what the loader and the components read of `folder` into `dst` (a new folder): the files
 * modelFolderFiles lists and the external data each model.onnx names (a plain file name beside it,
 * as the initializer reader requires). Symlinks are materialized; nothing else is visited, so no
 * symlink is followed anywhere else in the folder.
 */
function copyModelFolder(folder: ModelFolder, dst: string): void {
  const files = modelFolderFiles(folder);
  for (const f of [...files]) {
    if (!f.rel.endsWith("model.onnx")) continue;
    const file = path.join(folder.dir, f.rel);
    regularFile(file, f.what);
    const locations = new Set<string>();
    for (const init of initializers(fs.readFileSync(file), file)) if (init.external) locations.add(init.external.location);
    for (const loc of locations) {
      if (path.isAbsolute(loc) || path.basename(loc) !== loc || loc === "." || loc === "..") {
        throw new HarnessError(`${file}: external data ${JSON.stringify(loc)} is not a file beside the model`, ExitCode.usage);
      }
      files.push({ rel: path.join(path.dirname(f.rel), loc), what: `${f.what}'s external weights` });
    }
  }
  for (const f of files) {
    const from = path.join(folder.dir, f.rel);
    regularFile(from, f.what);
    const to = path.join(dst, f.rel);
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.copyFileSync(from, to, fs.constants.COPYFILE_FICLONE | fs.constants.COPYFILE_EXCL);
  }
}

interface Ctx {
  readonly opts: SensitivityOptions;
  readonly started: Date;
  readonly t0: number;
  readonly deadline: number;
  readonly log: (line: string) => void;
  readonly profile: string;
  readonly tol: ToleranceFile;
  readonly relatives: readonly number[];
  readonly scales: readonly number[];
  readonly samples: number;
  readonly sweep: boolean;
  readonly seed: number;
  readonly only: readonly string[];
  readonly kinds: readonly LayerKind[];
  readonly refs: ReferenceSet;
  readonly allCases: readonly CaseDef[];
  readonly components: readonly ComponentKind[];
  readonly copy: string;
  readonly folder: ModelFolder;
  readonly inpaintCopy: string | null;
  readonly inpaintFolder: ModelFolder | null;
}

function kindComponent(id: string): ComponentKind {
  return LAYER_KINDS.find((k) => k.id === id)!.component;
}

function componentFile(folder: ModelFolder, c: ComponentKind): string | null {
  return { unet: folder.unet, text_encoder: folder.textEncoder, vae_decoder: folder.vaeDecoder, vae_encoder: folder.vaeEncoder }[c];
}

async function measure(x: Ctx): Promise<SensitivityReport> {
  const { opts, log, refs } = x;
  const threads = opts.threads ?? 0;
  const notMeasured: string[] = [];
  const stageOfId = new Map(x.allCases.map((c) => [c.id, stageOf(c)]));

  // One pipeline per probe, shared by its runConformance calls (keepPipelines: the runner leaves
  // releasing them to this factory, when the probe is done). Stage cases run on a lazy pipeline
  // (lowMemory: only the part a case uses is loaded, so a VAE probe never loads the U-Net); the
  // end-to-end cases on an eager one (lowMemory would reload the U-Net for every generate()).
  // (one per model folder: the runner asks for the inpainting model's too)
  let live: { pipes: Map<string, StableDiffusionPipeline>; lazy: boolean } | null = null;
  let loadMs = 0;
  let lazyNext = false;
  const factory: PipelineFactory = async (dir, options) => {
    live ??= { pipes: new Map(), lazy: lazyNext };
    let pipe = live.pipes.get(dir);
    if (!pipe) {
      const l0 = Date.now();
      pipe = await StableDiffusionPipeline.load(dir, { ...options, lowMemory: lazyNext });
      loadMs = Date.now() - l0;
      live.pipes.set(dir, pipe);
    }
    return pipe;
  };
  const dropPipeline = async () => {
    const l = live;
    live = null;
    for (const pipe of l?.pipes.values() ?? []) await pipe.release();
  };
  const run = async (ids: readonly string[], lazy: boolean) => {
    if (opts.signal?.aborted) throw new HarnessError("interrupted", ExitCode.interrupted);
    if (live && live.lazy !== lazy) await dropPipeline();
    lazyNext = lazy;
    return runConformance({
      models: [{ label: "perturbed", dir: x.copy, inpaintDir: x.inpaintCopy }],
      references: opts.references,
      profile: x.profile,
      only: ids,
      outDir: null,
      threads,
      tolerances: x.tol,
      pipelineFactory: factory,
      keepPipelines: true,
      runtime: opts.runtime,
      signal: opts.signal,
      forceSd1: opts.forceSd1,
    });
  };

  // ---- weights of each component, mapped to kinds
  const mapped = new Map<ComponentKind, MappedInitializer[]>();
  const unmappedList: SensitivityReport["unmapped"][number][] = [];
  for (const c of x.components) {
    const file = componentFile(x.folder, c);
    if (!file) continue;
    const m = mapInitializers(c, describeInitializers(file));
    // the inpainting U-Net's tensors join the U-Net kinds under `inpaint:` names
    if (c === "unet" && x.inpaintFolder) {
      const own = mapInitializers(c, describeInitializers(x.inpaintFolder.unet));
      m.push(...own.map((t) => ({ ...t, name: `inpaint:${t.name}`, ...(t.module ? { module: `inpaint:${t.module}` } : {}) })));
    }
    mapped.set(c, m);
    for (const u of unmapped(m))
      unmappedList.push({ component: c, name: u.name, count: u.count, readers: u.info.consumers.map((k) => `${k.opType} ${k.node}`) });
  }

  // ---- control run: every affected case, unperturbed
  const sets = new Map<ComponentKind, { stage: CaseDef[]; rest: CaseDef[] }>();
  for (const c of x.components) sets.set(c, casesFor(c, x.allCases, refs));
  const stageIds = [...new Set([...sets.values()].flatMap((s) => s.stage.map((c) => c.id)))];
  const restIds = [...new Set([...sets.values()].flatMap((s) => s.rest.map((c) => c.id)))].filter((id) => !stageIds.includes(id));
  if (stageIds.length + restIds.length === 0)
    throw new HarnessError(
      `no case of ${opts.references} reaches ${x.components.join(", ")}${opts.cases?.length ? " after --cases" : ""}`,
      ExitCode.usage,
    );
  log(`control: ${stageIds.length + restIds.length} cases on the unperturbed copy`);
  const ct0 = Date.now();
  // as the probes run them: stage cases on a lazy pipeline, the rest on an eager one
  const control = { results: [] as CaseResult[] };
  if (stageIds.length) control.results.push(...(await run(stageIds, true)).results);
  if (restIds.length) control.results.push(...(await run(restIds, false)).results);
  await dropPipeline();
  const controlMs = Date.now() - ct0;
  const passing = new Set(control.results.filter((r) => r.status === "pass").map((r) => r.id));
  const excluded = control.results
    .filter((r) => r.status !== "pass")
    .map((r) => ({ id: r.id, status: r.status, ...(r.message ? { message: r.message } : {}) }));
  const timeOf = new Map(control.results.map((r) => [r.id, r.timeMs]));
  // a check whose value the perturbation did not move (a uint8 picture's maxAbsU8 of 1) is no "closest"
  const controlValue = new Map(
    control.results.flatMap((r) => r.checks.map((c) => [`${r.id}\u0000${c.tensor}\u0000${c.metric}`, c.value] as const)),
  );
  const worstRelL2: Record<string, number> = {};
  for (const r of control.results) {
    if (r.status !== "pass") continue;
    const s = stageOfId.get(r.id) ?? r.stage;
    for (const m of Object.values(r.metrics)) worstRelL2[s] = Math.max(worstRelL2[s] ?? 0, m.relL2);
  }
  for (const [c, s] of sets)
    sets.set(c, { stage: interleave(s.stage.filter((k) => passing.has(k.id))), rest: s.rest.filter((k) => passing.has(k.id)) });

  // ---- the case subset that fits the budget: a round-robin prefix of the stage cases
  const targetKinds = x.kinds.filter((k) => sets.get(k.component)?.stage.length || sets.get(k.component)?.rest.length);
  const firstRound = targetKinds.reduce((n, k) => n + 1 + (k.attention && x.scales.length ? 1 : 0), 0);
  // a probe pays one pipeline load and up to three runner calls (each re-reads the set and hashes the model)
  const callMs = Math.max(0, controlMs - loadMs - control.results.reduce((n, r) => n + r.timeMs, 0));
  const probeOverhead = loadMs + 2 * callMs;
  const left = Math.max(0, x.deadline - Date.now());
  const perProbe = firstRound ? left / (firstRound * 3) : left;
  const caseSets: Record<string, { stage: string[]; rest: string[]; restSkipped?: string }> = {};
  for (const [c, s] of sets) {
    let stage = s.stage;
    let cost = probeOverhead + stage.reduce((n, k) => n + (timeOf.get(k.id) ?? 0), 0);
    while (stage.length > 1 && cost > perProbe) {
      stage = stage.slice(0, Math.max(1, Math.floor(stage.length / 2)));
      cost = probeOverhead + stage.reduce((n, k) => n + (timeOf.get(k.id) ?? 0), 0);
    }
    if (stage.length < s.stage.length)
      notMeasured.push(
        `${c}: probes ran ${stage.length} of its ${s.stage.length} stage cases to fit the budget (a round-robin across runs; see caseSets)`,
      );
    sets.set(c, { stage, rest: s.rest });
    caseSets[c] = { stage: stage.map((k) => k.id), rest: s.rest.map((k) => k.id) };
  }
  const costOf = (ids: readonly CaseDef[]) => callMs + ids.reduce((n, k) => n + (timeOf.get(k.id) ?? 0), 0);
  log(
    `control: ${(controlMs / 1000).toFixed(1)} s (pipeline load ${(loadMs / 1000).toFixed(1)} s, runner overhead ${(callMs / 1000).toFixed(1)} s); ${leftOut(excluded)}`,
  );

  // ---- one probe
  const probes: ProbeResult[] = [];
  const probe = async (
    t: MappedInitializer,
    kind: LayerKind,
    edit: WeightEdit,
    size: number,
    phase: ProbeResult["phase"],
    sample: number | null,
  ): Promise<ProbeResult> => {
    const p0 = Date.now();
    const set = sets.get(kind.component)!;
    const affected = set.stage.length + set.rest.length;
    const applied = applyEdit(t.info.bytes!, edit);
    const base = {
      kind: kind.id,
      tensor: t.name,
      module: t.module,
      region: t.region,
      mode: edit.kind,
      size,
      index: edit.kind === "single" ? edit.index : null,
      before: applied.before,
      after: applied.after,
      appliedRelative: applied.appliedRelative,
      casesAffected: affected,
      phase,
      sample,
    };
    let result: ProbeResult;
    try {
      if (!applied.changed) {
        result = {
          ...base,
          unrepresentable: true,
          caught: false,
          caughtBy: [],
          decider: null,
          casesRun: 0,
          casesUnmoved: 0,
          complete: true,
          timeMs: Date.now() - p0,
        };
      } else {
        const head = set.stage.slice(0, Math.max(1, new Set(set.stage.map((k) => k.id.replace(/-step\d+$/, ""))).size));
        const chunks: CaseDef[][] = [head, set.stage.slice(head.length), set.rest].filter((ch) => ch.length > 0);
        let casesRun = 0;
        let casesUnmoved = 0;
        const caughtBy: string[] = [];
        let decider: Decider | null = null;
        let closest: Decider | null = null;
        let partial: ProbeResult["partial"];
        for (let k = 0; k < chunks.length; k++) {
          const ch = chunks[k];
          // Sweep probes run the stage cases only: the free-running and end-to-end cases cost
          // several times more and the ladders measure whether they ever catch what those miss
          if (ch === set.rest && phase === "sweep") {
            partial = "sweep";
            break;
          }
          if (k > 0 && Date.now() + costOf(ch) > x.deadline) {
            partial = "budget";
            break;
          }
          const rep = await run(
            ch.map((c) => c.id),
            ch !== set.rest,
          );
          casesRun += rep.results.length;
          for (const r of rep.results) {
            if (r.checks.length > 0 && r.checks.every((c) => controlValue.get(`${r.id}\u0000${c.tensor}\u0000${c.metric}`) === c.value))
              casesUnmoved++;
            const stage = stageOfId.get(r.id) ?? r.stage;
            if (CAUGHT.has(r.status)) {
              if (!caughtBy.includes(stage)) caughtBy.push(stage);
              const bad = r.checks.find((c) => !c.ok);
              if (!decider)
                decider = bad
                  ? deciderOf(r, stage, bad)
                  : { caseId: r.id, stage, tensor: "case", metric: r.status, value: NaN, limit: NaN, ratio: Infinity };
            }
            for (const c of r.checks) {
              if (DISCRETE.has(c.metric) || controlValue.get(`${r.id}\u0000${c.tensor}\u0000${c.metric}`) === c.value) continue;
              const d = deciderOf(r, stage, c);
              if (!closest || d.ratio > closest.ratio) closest = d;
            }
          }
          if (caughtBy.length) break;
        }
        const complete = caughtBy.length > 0 || partial === undefined;
        result = {
          ...base,
          unrepresentable: false,
          caught: caughtBy.length > 0,
          caughtBy,
          decider: decider ?? closest,
          casesRun,
          casesUnmoved,
          complete,
          ...(complete ? {} : { partial }),
          timeMs: Date.now() - p0,
        };
      }
    } finally {
      await dropPipeline();
      applied.undo();
    }
    probes.push(result);
    const d = result.decider;
    log(
      `${result.caught ? "CAUGHT" : result.unrepresentable ? "SAME  " : "missed"} ${kind.id.padEnd(24)} ${describeSize(edit.kind, size).padEnd(7)} ${t.module ?? t.name}${result.index !== null ? `[${result.index}]` : ""}${d ? `  ${d.stage} ${d.caseId.split(":")[1]} ${d.tensor} ${d.metric} ${d.value.toExponential(2)} (limit ${d.limit.toExponential(1)})` : ""}${result.complete ? "" : ` (partial: ${result.partial})`}  [${result.casesRun} cases${result.casesUnmoved ? `, ${result.casesUnmoved} unmoved` : ""}, ${(result.timeMs / 1000).toFixed(1)} s]`,
    );
    return result;
  };

  // ---- plan: ladders (samples per kind, single and scale), then the sweep
  const random = rng(x.seed);
  const tensorGlobs = (opts.tensors ?? []).map(compileGlob);
  const pickIndex = (t: MappedInitializer): number => {
    const n = t.info.bytes!.count;
    let i = Math.floor(random() * n);
    // a zero weight has no relative perturbation; redraw a few times
    for (let k = 0; k < 16 && readWeights(t.info.bytes!, i, 1)[0] === 0; k++) i = Math.floor(random() * n);
    return i;
  };
  const byKind = new Map<string, MappedInitializer[]>();
  const ladders = new Map<string, { single: Ladder[]; scale: Ladder[] }>();
  const order = new Map<string, MappedInitializer[]>();
  for (const k of x.kinds) {
    const tensors = (mapped.get(k.component) ?? []).filter(
      (m) =>
        m.kind === k.id &&
        m.info.bytes &&
        m.count > 0 &&
        (tensorGlobs.length === 0 || tensorGlobs.some((g) => g.test(m.module ?? "") || g.test(m.name))),
    );
    byKind.set(k.id, tensors);
    // a seeded shuffle: samples are distinct tensors; the sweep takes the rest in this order
    const shuffled = [...tensors];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
    }
    order.set(k.id, shuffled);
    const picked = shuffled.slice(0, x.samples);
    const reachable = (sets.get(k.component)?.stage.length ?? 0) + (sets.get(k.component)?.rest.length ?? 0) > 0;
    ladders.set(k.id, {
      single: reachable
        ? picked.map((t, s) => new Ladder(t, "single", x.relatives, pickIndex(t), s, startAt(x.relatives, TARGET_RELATIVE)))
        : [],
      scale:
        reachable && k.attention ? picked.map((t, s) => new Ladder(t, "scale", x.scales, null, s, startAt(x.scales, TARGET_SCALE))) : [],
    });
  }
  const sweepIndex = new Map<string, number>();
  const sweepResults = new Map<string, ProbeResult[]>();

  let stopped = false;
  const overBudget = () => {
    if (!stopped && Date.now() >= x.deadline) {
      stopped = true;
      log(`budget of ${opts.budgetSeconds} s spent: no new probes`);
    }
    return stopped;
  };
  const step = async (k: LayerKind, l: Ladder, phase: ProbeResult["phase"]) => {
    const i = l.pending;
    if (i === null || overBudget()) return false;
    const size = l.sizes[i];
    const edit: WeightEdit = l.mode === "single" ? { kind: "single", index: l.index!, relative: size } : { kind: "scale", factor: size };
    l.record(i, await probe(l.target, k, edit, size, phase, l.sample));
    return true;
  };
  // (a) every kind at the target sizes, (b) the ladders, round-robin so a short budget still covers every kind
  for (const k of x.kinds) {
    const ls = ladders.get(k.id)!;
    for (const l of [...ls.single, ...ls.scale]) if (l.sample === 0) await step(k, l, "target");
  }
  for (let progress = true; progress && !overBudget();) {
    progress = false;
    for (const k of x.kinds) {
      const ls = ladders.get(k.id)!;
      for (const l of [...ls.single, ...ls.scale]) if (await step(k, l, l.results.size === 0 ? "target" : "ladder")) progress = true;
    }
  }
  // (c) the sweep: every other tensor of the target kinds at the target sizes
  if (x.sweep) {
    for (let progress = true; progress && !overBudget();) {
      progress = false;
      for (const k of x.kinds) {
        if (!k.target || overBudget()) continue;
        const ls = ladders.get(k.id)!;
        if (ls.single.length === 0) continue;
        const rest = order.get(k.id)!.slice(x.samples);
        const at = sweepIndex.get(k.id) ?? 0;
        if (at >= rest.length) continue;
        sweepIndex.set(k.id, at + 1);
        const t = rest[at];
        const list = sweepResults.get(k.id) ?? [];
        if (x.relatives.includes(TARGET_RELATIVE))
          list.push(await probe(t, k, { kind: "single", index: pickIndex(t), relative: TARGET_RELATIVE }, TARGET_RELATIVE, "sweep", null));
        if (k.attention && x.scales.includes(TARGET_SCALE) && !overBudget())
          list.push(await probe(t, k, { kind: "scale", factor: TARGET_SCALE }, TARGET_SCALE, "sweep", null));
        sweepResults.set(k.id, list);
        progress = true;
      }
    }
  }

  // ---- summaries
  const kindsOut: KindSummary[] = x.kinds.map((k) => {
    const ls = ladders.get(k.id)!;
    const tensors = byKind.get(k.id)!.length;
    const tally = (mode: "single" | "scale", size: number): TargetTally => {
      const rs = probes.filter((p) => p.kind === k.id && p.mode === mode && p.size === size && !p.unrepresentable);
      const tested = new Set(rs.map((p) => p.tensor));
      const missed = rs.filter((p) => !p.caught);
      return {
        size,
        tested: tested.size,
        caught: rs.filter((p) => p.caught).length,
        untested: tensors - tested.size,
        missed: missed.map((p) => ({
          tensor: p.tensor,
          module: p.module,
          region: p.region,
          decider: p.decider,
          complete: p.complete,
          casesRun: p.casesRun,
          casesUnmoved: p.casesUnmoved,
        })),
      };
    };
    const reachable = ls.single.length > 0;
    const all = [...ls.single, ...ls.scale].filter((l) => l.sizes.length > 0);
    const why =
      tensors === 0
        ? `no tensor of this kind in the model${opts.tensors?.length ? " matches --tensors" : ""}`
        : !reachable
          ? "no passing case reaches this component"
          : all.length > 0 && all.every((l) => l.results.size === 0)
            ? `not reached within the ${opts.budgetSeconds} s budget`
            : undefined;
    if (why && tensors > 0) notMeasured.push(`${k.id}: ${why}`);
    return {
      id: k.id,
      component: k.component,
      description: k.description,
      attention: k.attention,
      target: k.target,
      tensors,
      single: ls.single.filter((l) => l.results.size > 0).map((l) => l.summary()),
      scale: ls.scale.filter((l) => l.results.size > 0).map((l) => l.summary()),
      atTarget: { single: tally("single", TARGET_RELATIVE), scale: k.attention ? tally("scale", TARGET_SCALE) : null },
      ...(why ? { notMeasured: why } : {}),
    };
  });
  for (const k of kindsOut) {
    for (const l of [...k.single, ...k.scale])
      if (!l.settled) notMeasured.push(`${k.id}: the ladder on ${l.module ?? l.tensor} stopped before its boundary (budget)`);
    if (x.sweep && k.target && k.single.length && k.atTarget.single.untested > 0)
      notMeasured.push(`${k.id}: ${k.atTarget.single.untested} of ${k.tensors} tensors not probed at +${TARGET_RELATIVE} (budget)`);
  }
  const short = probes.filter((p) => p.partial === "budget").length;
  if (short) notMeasured.push(`${short} missed probes ran only part of the affected cases (budget): their misses hold for the cases run`);
  const sweepMisses = probes.filter((p) => p.partial === "sweep").length;
  if (sweepMisses) {
    const laddered = probes.filter(
      (p) =>
        p.phase !== "sweep" &&
        p.complete &&
        !p.unrepresentable &&
        p.casesRun > 0 &&
        (!p.caught || !p.caughtBy.some((s) => sets.get(kindComponent(p.kind))?.stage.some((c) => stageOf(c) === s))),
    );
    const restOnly = laddered.filter((p) => p.caught).length;
    notMeasured.push(
      `${sweepMisses} sweep probes missed by the stage cases did not run the free-running / end-to-end cases; in the ladders those cases caught ${restOnly} of the ${laddered.length} changes the stage cases missed`,
    );
  }
  const finished = new Date();
  return {
    format: "sd-harness-sensitivity/1",
    run: {
      started: x.started.toISOString(),
      finished: finished.toISOString(),
      durationMs: finished.getTime() - x.started.getTime(),
      argv: opts.argv ?? [],
      budgetSeconds: opts.budgetSeconds,
      seed: x.seed,
      threads,
      versions: {
        "sd-harness": VERSION,
        node: process.versions.node,
        "onnxruntime-node": ORT_NODE_VERSION,
        ...runtimeVersion(opts.runtime ?? defaultRuntime()),
      },
      host: { platform: os.platform(), arch: os.arch(), cpus: os.cpus()[0]?.model ?? "unknown", cores: os.cpus().length },
      runtime: (opts.runtime ?? defaultRuntime()).describe(),
    },
    model: { dir: opts.model, ...(opts.inpaintModel ? { inpaintDir: opts.inpaintModel } : {}) },
    references: { dir: opts.references, model: refs.manifest.model, device: refs.manifest.device },
    profile: x.profile,
    tolerances: { file: x.tol.file ?? "(in memory)", sha256: toleranceSha256(x.tol) },
    settings: {
      relatives: x.relatives,
      scales: x.scales,
      targetRelative: TARGET_RELATIVE,
      targetScale: TARGET_SCALE,
      samples: x.samples,
      sweep: x.sweep,
      only: x.only,
      tensors: opts.tensors ?? [],
      cases: opts.cases ?? [],
    },
    control: { cases: control.results.length, timeMs: controlMs, worstRelL2, excluded },
    caseSets,
    kinds: kindsOut,
    probes,
    unmapped: unmappedList,
    notMeasured,
    complete: notMeasured.length === 0,
  };
}
