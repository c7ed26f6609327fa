/**
 * What a conformance stage is: one object (StageDef) that says how its cases are listed from a
 * reference set's manifest, how one is run and compared, what it costs, which tolerance key judges
 * it, which ONNX components it runs (for --localize-failed), whether --against can compare it,
 * what it adds to the coverage section, and where it sits in the report's tables and plots.
 * Every stage is one file beside this one; ./index.ts lists them.
 */
import type { StableDiffusionPipeline } from "../../pipeline/pipeline";
import type { ComponentKind } from "../../pipeline/components";
import type { Tensor, TypedData } from "../../tensor/tensor";
import type { CaseTensors, ReferenceCase, ReferenceSet } from "../cases/reference-set";
import type { ImageMetrics, Series, TensorMetrics } from "../types";

export type CaseKind =
  "tokenizer" | "text_encoder" | "rng" | "scheduler" | "unet" | "unet_free" | "vae_decode" | "vae_encode" | "vae_roundtrip" | "end_to_end";

export interface CaseDef {
  readonly id: string;
  readonly stage: string;
  readonly kind: CaseKind;
  /** the reference case it reads */
  readonly refId: string;
}

export interface StageContext {
  readonly pipe: StableDiffusionPipeline;
  /** a 9-channel inpainting model for the inpaint cases, when given */
  readonly inpaintPipe: StableDiffusionPipeline | null;
  readonly refs: ReferenceSet;
  /** where image triplets go (null: none written) and their path relative to the report */
  readonly assets: { readonly dir: string; readonly rel: string } | null;
}

export interface StageOutcome {
  readonly metrics: Record<string, TensorMetrics>;
  readonly images?: ImageMetrics[];
  readonly series?: Series[];
  readonly extra?: Record<string, number>;
  readonly message?: string;
  readonly nonFinite?: { stage: string; step: number | null; what: string };
  readonly skip?: string;
  /** part of the case that could not be compared, and why (the report's coverage lists it) */
  readonly uncovered?: string;
}

/** Model B's outputs for one case under the reference's tensor names (conformance --against). */
export type AgainstOutputs = Map<string, Tensor<TypedData>>;

/** What a judged case adds to the report's coverage section (src/conformance/cases/coverage.ts). */
export interface CoverageFacts {
  /** a diffusers scheduler class the case exercised */
  readonly scheduler?: string;
  /** an end-to-end task: txt2img, img2img, inpaint */
  readonly task?: string;
  /** an image size, WxH */
  readonly size?: string;
}

/**
 * Relative cost of one case in U-Net calls, the unit that dominates at real size. The other parts
 * are weighed by their time at SD 1.5 size, 512x512, on this project's 2-core machine (bench/RESULTS.md's
 * benchmark: U-Net step with CFG 12.06 s, VAE decode 16.18 s, VAE encode 7.49 s, text encoder
 * 0.157 s); traces, draws and the tokenizer are milliseconds.
 */
export const COST = { unetCall: 1, vaeDecode: 16.18 / 12.06, vaeEncode: 7.49 / 12.06, textEncoder: 0.157 / 12.06, small: 1e-4 } as const;

export interface StageDef {
  /** the case kind; also the stage key of its limits in conformance/tolerances.json */
  readonly kind: CaseKind;
  /** the stage its results are reported under, the case id's prefix (unet_free reports as unet) */
  readonly stage: string;
  /** the reference stage whose cases it is listed from */
  readonly source: string;
  /** false: its reference case is JSON (the tokenizer corpus), not a .safetensors file */
  readonly readsTensors: boolean;
  /** the case id for a reference case of `source` */
  caseId(ref: ReferenceCase): string;
  /** a stage listed from another stage's cases (unet_free from end_to_end) claims its ids by this */
  claims?(id: string): boolean;
  /** estimated cost of one case in U-Net calls (COST), from the reference case's meta */
  cost(meta: Readonly<Record<string, unknown>>): number;
  run(ctx: StageContext, c: CaseDef, model: string): Promise<StageOutcome>;
  /** --against: model B's outputs for the case (or why not comparable); a string: why the stage is never compared port vs port */
  readonly against:
    | ((
        b: StableDiffusionPipeline,
        t: CaseTensors,
        c: CaseDef,
        meta: Readonly<Record<string, unknown>>,
      ) => Promise<AgainstOutputs | string>)
    | string;
  /**
   * the ONNX components a case runs: what --localize-failed localizes when it fails, the component
   * files the precision advice reads, the stages a sensitivity fault in a component reaches. The
   * one stage → component map; nothing else lists it.
   */
  readonly components: readonly ComponentKind[];
  /** the components one case runs, where its reference case's meta says fewer (a txt2img run never encodes) */
  componentsOf?(meta: Readonly<Record<string, unknown>>): readonly ComponentKind[];
  /** its cases run the denoising loop: a component's drift reaches them through many steps */
  readonly loop?: boolean;
  /** whether its cases can carry the float64 floor (model stages: src/conformance/judge/float64-floor.ts) */
  readonly float64Floor: boolean;
  /** the tensor metric its cases are summed up by (../judge/headline.ts) when not relL2; an optional one, absent counting as 0 */
  readonly headlineMetric?: "maxUlp";
  /** what a judged case adds to the coverage section */
  coverage?(meta: Readonly<Record<string, unknown>>): CoverageFacts;
  /** position of its stage in the report's tables (pipeline order) */
  readonly displayRank: number;
  /** report.html draws drift-vs-step plots for stages with a plot rank, lowest first */
  readonly plotRank?: number;
}
