/**
 * What several stages share: reading a case's meta with the type its generator wrote, token-id
 * rows, per-step slices, the generate loop with per-step latents, and image triplets.
 */
import * as path from "node:path";
import { F32, numel } from "../../tensor/tensor";
import { StableDiffusionPipeline, NumericError, GenerateParams } from "../../pipeline/pipeline";
import { tensorToImages, writePng, RgbImage } from "../../pipeline/image";
import { safeFileName } from "../report/report-file";
import { CaseTensors, ReferenceSet } from "../cases/reference-set";
import { tensorMetrics, imageMetrics, diffHeatmap } from "../judge/metrics";
import { TensorMetrics, ImageMetrics, Series } from "../types";
import { StageContext, StageDef } from "./types";

/**
 * A reference case's meta as the type its stage's generator (scripts/refgen) writes. The manifest
 * is sha256-verified but still JSON: the stage reads only the keys it declares.
 */
export function caseMeta<T>(refs: ReferenceSet, refId: string): T {
  return (refs.get(refId).meta ?? {}) as unknown as T;
}

/** The meta of an end-to-end run (scripts/refgen: end_to_end), read by end_to_end, unet_free and coverage. */
export interface RunMeta {
  readonly kind: "txt2img" | "img2img" | "inpaint";
  readonly prompt: string | readonly string[];
  readonly negative_prompt: string | readonly string[] | null;
  readonly scheduler: string;
  readonly scheduler_class?: string;
  readonly steps: number;
  readonly guidance_scale: number;
  readonly seed: number;
  readonly width: number;
  readonly height: number;
  readonly num_images_per_prompt: number;
  readonly strength: number | null;
  readonly clip_skip: number | null;
  readonly unet_calls?: number;
}

/** Token ids [B, N] as one Int32Array per row. */
export function rows(t: CaseTensors, name: string): Int32Array[] {
  const raw = t.raw(name);
  const [b, n] = raw.dims;
  const data = raw.data instanceof BigInt64Array ? Int32Array.from(raw.data, Number) : (raw.data as Int32Array);
  return Array.from({ length: b }, (_, i) => Int32Array.from(data.subarray(i * n, (i + 1) * n)));
}

/** Step k of a [steps, ...] tensor. */
export function stepSlice(t: F32, k: number): Float32Array {
  const per = numel(t.dims.slice(1));
  return t.data.subarray(k * per, (k + 1) * per);
}

function asImages(
  t: CaseTensors,
  meta: RunMeta,
): { init: RgbImage | null; mask: { width: number; height: number; data: Uint8Array } | null } {
  const init = t.has("init_image") ? { width: meta.width, height: meta.height, data: t.raw("init_image").data as Uint8Array } : null;
  const mask = t.has("mask_image") ? { width: meta.width, height: meta.height, data: t.raw("mask_image").data as Uint8Array } : null;
  return { init, mask };
}

export function paramsFromMeta(meta: RunMeta, t: CaseTensors): GenerateParams {
  const { init, mask } = asImages(t, meta);
  return {
    prompt: meta.prompt,
    negativePrompt: meta.negative_prompt,
    steps: meta.steps,
    guidanceScale: meta.guidance_scale,
    scheduler: meta.scheduler,
    seed: meta.seed,
    width: meta.width,
    height: meta.height,
    numImagesPerPrompt: meta.num_images_per_prompt,
    strength: meta.strength ?? undefined,
    clipSkip: meta.clip_skip ?? 0,
    initImage: init,
    mask,
  };
}

/** The model an end-to-end run needs: the inpainting one for inpaint runs (null when not given). */
export function pipeFor(ctx: StageContext, meta: RunMeta): StableDiffusionPipeline | null {
  return meta.kind === "inpaint" ? ctx.inpaintPipe : ctx.pipe;
}

export const NEEDS_INPAINT_MODEL = "needs an inpainting model (--inpaint-model)";
/** --against: model B is given without an inpainting model, so inpainting runs are not compared. */
export const ON_INPAINT = "B has no inpainting model (--against takes one folder), so its inpainting runs are not compared";

/** Run generate, collecting per-step latents; a NaN / Inf is reported with the stage and step. */
export async function runLoop(pipe: StableDiffusionPipeline, params: GenerateParams) {
  const steps: Float32Array[] = [];
  try {
    const result = await pipe.generate({
      ...params,
      onStep: (s) => {
        steps.push(s.latents.data.slice());
      },
    });
    return { result, steps, nonFinite: undefined };
  } catch (e) {
    if (e instanceof NumericError) return { result: null, steps, nonFinite: { stage: e.stage, step: e.step, what: e.message } };
    throw e;
  }
}

export function stepSeries(steps: Float32Array[], ref: F32): { series: Series[]; last: TensorMetrics | null } {
  const relL2: number[] = [];
  const maxAbs: number[] = [];
  let last: TensorMetrics | null = null;
  steps.forEach((s, k) => {
    if (k >= ref.dims[0]) return;
    last = tensorMetrics(s, stepSlice(ref, k), ref.dims.slice(1));
    relL2.push(last.relL2);
    maxAbs.push(last.maxAbs);
  });
  return {
    series: [
      { name: "latents", metric: "relL2", values: relL2 },
      { name: "latents", metric: "maxAbs", values: maxAbs },
    ],
    last,
  };
}

export function concatSteps(steps: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(steps.reduce((n, s) => n + s.length, 0));
  let o = 0;
  for (const s of steps) {
    out.set(s, o);
    o += s.length;
  }
  return out;
}

async function writeTriplet(ctx: StageContext, key: string, ours: RgbImage, ref: RgbImage, m: ImageMetrics): Promise<ImageMetrics> {
  if (!ctx.assets) return m;
  // asset names come only from sanitised ids and labels (no separators, no "..", no leading dot)
  const base = safeFileName(key);
  const heat = diffHeatmap(ours.data, ref.data, ref.width, ref.height);
  const files = { refPng: `${base}-ref.png`, oursPng: `${base}-ours.png`, diffPng: `${base}-diff.png` };
  writePng(path.join(ctx.assets.dir, files.refPng), ref);
  writePng(path.join(ctx.assets.dir, files.oursPng), ours);
  writePng(path.join(ctx.assets.dir, files.diffPng), { width: ref.width, height: ref.height, data: heat });
  return {
    ...m,
    refPng: `${ctx.assets.rel}/${files.refPng}`,
    oursPng: `${ctx.assets.rel}/${files.oursPng}`,
    diffPng: `${ctx.assets.rel}/${files.diffPng}`,
  };
}

/** Image metrics per picture, with the reference / ours / diff triplet written beside the report. */
export async function compareImages(
  ctx: StageContext,
  key: string,
  ours: F32 | RgbImage[],
  ref: F32 | RgbImage[],
): Promise<ImageMetrics[]> {
  const a = Array.isArray(ours) ? ours : tensorToImages(ours);
  const b = Array.isArray(ref) ? ref : tensorToImages(ref);
  const out: ImageMetrics[] = [];
  for (let i = 0; i < b.length; i++) {
    const m = imageMetrics(a[i].data, b[i].data, b[i].width, b[i].height);
    out.push(await writeTriplet(ctx, `${key}-${i}`, a[i], b[i], m));
  }
  return out;
}

/**
 * A stage listed from its own reference cases: reported under its kind, one case per reference
 * case of that stage with the same id, read from a .safetensors file unless it says otherwise.
 */
export function ownStage(
  def: Omit<StageDef, "stage" | "source" | "readsTensors" | "caseId"> & { readonly readsTensors?: boolean },
): StageDef {
  return { stage: def.kind, source: def.kind, readsTensors: true, caseId: (ref) => ref.id, ...def };
}

/** A meta number, or `fallback` when absent or not positive (older sets). */
export function positive(meta: Readonly<Record<string, unknown>>, key: string, fallback: number): number {
  const v = meta[key];
  return typeof v === "number" && v > 0 ? v : fallback;
}

/** WxH of a case with numeric width and height in its meta. */
export function sizeOf(meta: Readonly<Record<string, unknown>>): string | undefined {
  return typeof meta.width === "number" && typeof meta.height === "number" ? `${meta.width}x${meta.height}` : undefined;
}

/** Why a stage that does not run the model has no port-vs-port comparison. */
export const MODEL_FREE = "this stage does not depend on the model";

export const NO_VAE_ENCODER = "the model folder has no vae_encoder";
