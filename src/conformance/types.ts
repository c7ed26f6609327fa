/**
 * The conformance report's data model: what report.json holds and every writer (Markdown, HTML,
 * JUnit) reads. Cases have stable ids `stage:case`; the worst status of a run wins.
 * It depends on no feature module: the coverage and --localize sections are declared here, and
 * cases/coverage.ts and localize/localize.ts compute them.
 */
import type { RuntimeDescription } from "../runtime/types";
import type { ComponentKind } from "../pipeline/components";

export type Status = "pass" | "fail" | "xfail" | "xpass" | "error" | "skip";

/** Drift of one compared tensor (ours vs the PyTorch reference). */
export interface TensorMetrics {
  readonly count: number;
  readonly maxAbs: number;
  readonly meanAbs: number;
  readonly rmse: number;
  /** ||ours - ref|| / ||ref|| */
  readonly relL2: number;
  readonly cosine: number;
  /** 20 log10(max|ref| / RMSE) (Apple's coremltools convention); Infinity when identical */
  readonly psnr: number;
  readonly p99Abs: number;
  readonly nanCount: number;
  readonly infCount: number;
  /** multi-index of the largest |ours - ref| */
  readonly worstIndex: readonly number[];
  readonly worstOurs: number;
  readonly worstRef: number;
  /** largest difference in float32 ULPs of the reference value (scheduler / rng stages) */
  readonly maxUlp?: number;
  /**
   * Excess-error ratio: relL2 (ours vs the float32 reference) ÷ the float32 reference's own relL2
   * against a float64 PyTorch run of the same stage — drift in units of PyTorch's own float32
   * error. Only where the reference set stores that floor (src/conformance/judge/float64-floor.ts).
   */
  readonly excess?: number;
  /** the float32 reference's own relL2 against float64 (one sample of PyTorch's float32 error) */
  readonly float64RelL2?: number;
  /**
   * the floor `excess` divides by (before the 2^-24 minimum): the largest relL2 against float64 over
   * the reference and the set's other correct float32 computations (judge/float64-floor.ts floorEnvelope)
   */
  readonly floorRelL2?: number;
  /** how many correct float32 computations that envelope spans (1: the reference alone, an older set) */
  readonly floorSamples?: number;
}

export interface ImageMetrics {
  readonly width: number;
  readonly height: number;
  /** PSNR of the uint8 pictures, 20 log10(255 / RMSE) */
  readonly psnrU8: number;
  readonly maxAbsU8: number;
  /** pixelmatch's count of visibly different pixels (threshold 0.1) */
  readonly mismatchedPixels: number;
  /** PNG files written beside the report (relative paths), for the HTML triplets */
  readonly refPng?: string;
  readonly oursPng?: string;
  readonly diffPng?: string;
}

/** One limit checked: `metric` of `tensor` against `limit` (max: value <= limit; min: value >= limit). */
export interface Check {
  readonly tensor: string;
  readonly metric: string;
  readonly value: number;
  readonly limit: number;
  readonly kind: "max" | "min";
  readonly ok: boolean;
}

/** A per-step series (drift vs step) for plots. */
export interface Series {
  readonly name: string;
  readonly metric: string;
  readonly values: readonly number[];
}

export interface CaseResult {
  readonly id: string;
  readonly stage: string;
  /** the model variant's label (one result per case per --model) */
  readonly model: string;
  readonly status: Status;
  readonly message?: string;
  readonly metrics: Readonly<Record<string, TensorMetrics>>;
  readonly images?: readonly ImageMetrics[];
  readonly checks: readonly Check[];
  readonly series?: readonly Series[];
  /** where a NaN / Inf first appeared: stage and step */
  readonly nonFinite?: { readonly stage: string; readonly step: number | null; readonly what: string };
  /** the tolerance applied and why it is what it is */
  readonly tolerance: { readonly profile: string; readonly source: string; readonly reason?: string };
  readonly timeMs: number;
  /** baseline comparison (--baseline): the growth factor of the headline metric */
  readonly regression?: {
    readonly metric: string;
    readonly before: number;
    readonly after: number;
    readonly factor: number;
    readonly flagged: boolean;
  };
  /** model stages: whether the reference set had a float64 floor for this case ("yes", or "no (why)") */
  readonly float64Floor?: string;
  /**
   * loops (end-to-end, free-running U-Net): how much the loop amplifies a one-ulp change of its
   * initial latents, the peak over steps of two float64 runs' relL2 ÷ their initial relL2
   */
  readonly amplification?: number;
  /** part of the case that could not be compared, and why */
  readonly uncovered?: string;
}

export interface ModelInfo {
  readonly label: string;
  readonly dir: string;
  /** sha256 of each ONNX file, keyed by path relative to the folder */
  readonly hashes: Readonly<Record<string, string>>;
  /** config values corrected as diffusers' pipeline corrects them, one sentence each */
  readonly corrections?: readonly string[];
  /** the runtime that ran its components (absent in reports of older versions: onnxruntime-node's CPU provider) */
  readonly runtime?: RuntimeDescription;
}

export interface Report {
  readonly format: "sd-harness-report/1";
  readonly run: {
    readonly started: string;
    readonly finished: string;
    readonly durationMs: number;
    readonly argv: readonly string[];
    /** isa and os: the kernel-relevant CPU features and the OS (src/util/machine.ts; absent in older reports) */
    readonly host: {
      readonly platform: string;
      readonly arch: string;
      readonly cpus: string;
      readonly cores: number;
      readonly isa?: readonly string[];
      readonly os?: string;
    };
    readonly threads: number;
    readonly versions: Readonly<Record<string, string>>;
    readonly shard?: { readonly index: number; readonly count: number };
    /** wall time inside onnxruntime during the run: session creation, inference calls (the rest is the harness's own) */
    readonly ort?: { readonly createMs: number; readonly runMs: number; readonly runs: number };
  };
  readonly profile: string;
  readonly models: readonly ModelInfo[];
  /** --against: the model whose outputs the model stages were judged against, instead of PyTorch's */
  readonly against?: ModelInfo;
  readonly references: {
    readonly dir: string;
    readonly model: string;
    readonly device: string;
    readonly deviceName: string;
    readonly versions: Readonly<Record<string, string>>;
    readonly command: string;
    /** sha256 of the set's manifest.json: shards are merged only when it matches */
    readonly sha256?: string;
    /** the manifest's own fingerprint object, copied through when it has one */
    readonly fingerprint?: unknown;
    /** the machine that made the set (manifest "machine": CPU model, ISA, OS, threads), where it says */
    readonly machine?: { readonly model: string; readonly isa?: readonly string[]; readonly os?: string; readonly threads?: number };
  };
  /** the tolerance file used (sha256 of its bytes), so merged shards are known to share it */
  readonly tolerances?: { readonly file: string; readonly sha256: string };
  readonly results: readonly CaseResult[];
  readonly summary: Readonly<Record<Status, number>> & { readonly total: number; readonly verdict: Status };
  readonly baseline?: { readonly file: string; readonly factor: number; readonly regressions: number };
  /** what the run exercised and what it did not, with reasons (absent in reports of older versions) */
  readonly coverage?: Coverage;
  /** conformance --localize: per-module drift inside each component (src/conformance/localize/localize.ts) */
  readonly localize?: LocalizeReport;
  /**
   * what the reader must know before trusting the verdict, one sentence each: the runtime differs
   * from the version the limits were measured with (absent in reports of older versions)
   */
  readonly warnings?: readonly string[];
}

// ---- coverage (computed by cases/coverage.ts) ----------------------------------------------------

export interface CoverageGap {
  readonly what: string;
  readonly why: string;
}

export interface Coverage {
  /** per stage: cases in the reference set, selected for this run, and run to a verdict (not skipped) */
  readonly stages: Readonly<Record<string, { readonly inSet: number; readonly selected: number; readonly judged: number }>>;
  /** scheduler classes judged: by a scheduler trace or an end-to-end run */
  readonly schedulers: readonly string[];
  /** end-to-end runs judged per task */
  readonly tasks: Readonly<Record<string, number>>;
  /** image sizes (WxH) judged by the VAE and end-to-end stages */
  readonly sizes: readonly string[];
  /** per model label: the U-Net's input element type, and the tolerance profile judged against */
  readonly precisions: Readonly<Record<string, string>>;
  readonly profile: string;
  readonly gaps: readonly CoverageGap[];
}

// ---- --localize (computed by localize/localize.ts) -------------------------------------------------

/** The rules of a module limits file (conformance/module-limits.json), as a report records them. */
export interface ModuleLimitRules {
  readonly profiles: Readonly<Record<string, { readonly relL2: number; readonly reason: string }>>;
  readonly overrides?: readonly { readonly module: string; readonly profile: string; readonly relL2: number; readonly reason: string }[];
}

export interface ModuleDrift {
  readonly module: string;
  readonly class: string;
  /** position in network order (outputs in the order they come to exist) */
  readonly position: number;
  readonly relL2: number;
  readonly maxAbs: number;
  readonly cosine: number;
  readonly nonFinite: number;
  /** values compared (a sampled tensor compares the stored positions only) */
  readonly count: number;
  /** the module output's size / values compared (1: the whole tensor) */
  readonly stride: number;
  readonly limit: number;
  readonly over: boolean;
  /** the module (or `input:<name>`) whose output it read; null when unknown */
  readonly input: string | null;
  readonly inputRelL2: number | null;
  /** relL2 / max(inputRelL2, FLOOR); null when the input's drift is unknown */
  readonly introduced: number | null;
  /** how its tensor was found: by scope or parameter name in the export, or (a port's `modules`) by module name alone */
  readonly how: "scope" | "parameter" | "module";
}

export interface Unmapped {
  readonly module: string;
  readonly why: string;
}

export interface CallLocalization {
  readonly model: string;
  readonly component: ComponentKind;
  readonly call: string;
  readonly total: number;
  readonly modules: readonly ModuleDrift[];
  readonly unmapped: readonly Unmapped[];
  /** how module tensors were found: scope names, parameter names only, or not at all */
  readonly naming: "scope" | "parameter";
  readonly first: ModuleDrift | null;
  /** the modules introducing the most drift, largest first */
  readonly growth: readonly ModuleDrift[];
  readonly timeMs: number;
  readonly error?: string;
}

export interface LocalizeReport {
  readonly references: {
    readonly dir: string;
    readonly model: string;
    readonly sha256: string;
    readonly command: string;
    readonly versions: Readonly<Record<string, string>>;
  };
  readonly profile: string;
  readonly limits: {
    readonly file: string;
    readonly profiles: ModuleLimitRules["profiles"];
    readonly overrides: NonNullable<ModuleLimitRules["overrides"]>;
  };
  readonly floor: number;
  /** --against: the model whose module outputs were the reference, instead of PyTorch's */
  readonly against?: { readonly label: string; readonly dir: string };
  readonly calls: readonly CallLocalization[];
  /** components the runtime localizes nothing in (a port without the `modules` operation), with why */
  readonly notCovered?: readonly { readonly model: string; readonly component: ComponentKind; readonly why: string }[];
  readonly timeMs: number;
}

/** Worst status wins: error > fail > xpass > xfail > pass > skip. */
export const STATUS_RANK: Readonly<Record<Status, number>> = { skip: 0, pass: 1, xfail: 2, xpass: 3, fail: 4, error: 5 };

export function worstStatus(statuses: Iterable<Status>): Status {
  let worst: Status = "pass";
  let any = false;
  for (const s of statuses) {
    if (!any || STATUS_RANK[s] > STATUS_RANK[worst]) worst = s;
    any = true;
  }
  return any ? worst : "skip";
}

/**
 * The one definition of failing: a status that makes a run exit 1 and that the reports list as a
 * failing case — a failed check, a stale expected failure (xpass), or a case that could not run.
 */
export function isFailing(s: Status): boolean {
  return s === "fail" || s === "xpass" || s === "error";
}

export function countStatuses(cases: readonly { readonly status: Status }[]): Record<Status, number> {
  const counts: Record<Status, number> = { pass: 0, fail: 0, xfail: 0, xpass: 0, error: 0, skip: 0 };
  for (const c of cases) counts[c.status]++;
  return counts;
}

/** A run's summary: counts per status and the worst status as the verdict. */
export function summarize(results: readonly CaseResult[]): Report["summary"] {
  return { ...countStatuses(results), total: results.length, verdict: worstStatus(results.map((r) => r.status)) };
}

/** The share of a run's wall time spent outside onnxruntime (null when the run did not record it). */
export function harnessOverhead(run: Report["run"]): number | null {
  if (!run.ort || !(run.durationMs > 0)) return null;
  return Math.max(0, run.durationMs - run.ort.createMs - run.ort.runMs) / run.durationMs;
}
