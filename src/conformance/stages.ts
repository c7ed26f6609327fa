/**
 * One function per stage: run our side through the same library code `generate` uses and compare
 * with the reference tensors. Each returns the metrics per compared tensor, and where useful image
 * metrics, per-step series (drift vs step) and the location of the first NaN / Inf.
 */
import * as path from "node:path";
import { HarnessError, ExitCode } from "../errors";
import { F32, f32, numel } from "../tensor/tensor";
import { TorchGenerator } from "../rng/torch-generator";
import { createScheduler, parseSchedulerConfig } from "../schedulers";
import { StableDiffusionPipeline, NumericError, GenerateParams, NO_HIDDEN_STATES } from "../pipeline/pipeline";
import { tensorToImages, writePng, RgbImage } from "../pipeline/image";
import { safeFileName } from "./report-file";
import { ReferenceSet, CaseTensors } from "./reference-set";
import { CaseDef } from "./cases";
import { tensorMetrics, imageMetrics, diffHeatmap } from "./metrics";
import { TensorMetrics, ImageMetrics, Series } from "./types";

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

// manifest meta is untyped JSON; each stage reads the keys its generator wrote
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Meta = Record<string, any>;

function rows(t: CaseTensors, name: string): Int32Array[] {
  const raw = t.raw(name);
  const [b, n] = raw.dims;
  const data = raw.data instanceof BigInt64Array ? Int32Array.from(raw.data, Number) : (raw.data as Int32Array);
  return Array.from({ length: b }, (_, i) => Int32Array.from(data.subarray(i * n, (i + 1) * n)));
}

function stepSlice(t: F32, k: number): Float32Array {
  const per = numel(t.dims.slice(1));
  return t.data.subarray(k * per, (k + 1) * per);
}

async function tokenizer(ctx: StageContext, c: CaseDef): Promise<StageOutcome> {
  const corpus = ctx.refs.json<{ cases: { text: string; ids: number[]; untruncated_ids?: number[] }[] }>(c.refId);
  let mismatches = 0;
  let first = "";
  for (const item of corpus.cases) {
    const ours = ctx.pipe.tokenizer.tokenize(item.text, item.ids.length);
    const same = ours.ids.length === item.ids.length && ours.ids.every((v, i) => v === item.ids[i]);
    if (!same) {
      mismatches++;
      if (!first) first = `first mismatch: ${JSON.stringify(item.text).slice(0, 60)}`;
    }
  }
  return { metrics: {}, extra: { mismatches, prompts: corpus.cases.length }, message: first || `${corpus.cases.length} prompts, all ids equal` };
}

async function textEncoder(ctx: StageContext, c: CaseDef): Promise<StageOutcome> {
  const t = ctx.refs.tensors(c.refId);
  const ids = rows(t, "input_ids");
  const last = await ctx.pipe.encodeIds(ids, 0);
  const ref = t.f32("last_hidden_state");
  const metrics: Record<string, TensorMetrics> = { last_hidden_state: tensorMetrics(last.data, ref.data, ref.dims) };
  if (t.has("penultimate_normed")) {
    // optimum's SD 1.x export has no hidden-state outputs: the last hidden state is still judged
    if (!(await ctx.pipe.hasHiddenStates())) return { metrics, uncovered: `penultimate_normed (clip skip) not compared: ${NO_HIDDEN_STATES}` };
    const pen = await ctx.pipe.encodeIds(ids, 1);
    const r = t.f32("penultimate_normed");
    metrics.penultimate_normed = tensorMetrics(pen.data, r.data, r.dims);
  }
  return { metrics };
}

async function rng(ctx: StageContext, c: CaseDef): Promise<StageOutcome> {
  const meta = ctx.refs.get(c.refId).meta as Meta;
  const t = ctx.refs.tensors(c.refId);
  const generic = /generic/.test(String(meta.normal_kernel ?? ""));
  const gen = new TorchGenerator(BigInt(meta.seed), generic ? { normalKernel: "generic" } : {});
  const metrics: Record<string, TensorMetrics> = {};
  (meta.shapes as number[][]).forEach((shape, k) => {
    const ours = gen.randn(shape);
    const ref = t.f32(`draw${k}`);
    metrics[`draw${k}`] = tensorMetrics(ours, ref.data, ref.dims, true);
  });
  return { metrics };
}

/**
 * The trace replayed two ways with the recorded model outputs: teacher-forced (each step from the
 * reference sample: the scheduler's own error, judged) and free-running (our own samples: how
 * 1-ulp differences accumulate, plotted). Stochastic schedulers draw from a generator seeded like
 * the trace, after the initial-noise draw the trace made.
 */
async function scheduler(ctx: StageContext, c: CaseDef): Promise<StageOutcome> {
  const meta = ctx.refs.get(c.refId).meta as Meta;
  const t = ctx.refs.tensors(c.refId);
  const config = parseSchedulerConfig({ ...(meta.config as Record<string, unknown>), _class_name: meta.class_name }, `${c.refId} config`);
  const make = () => createScheduler(meta.class_name, config, meta.steps, { eta: meta.step_kwargs?.eta ?? 0 });
  const shape = meta.shape as number[];
  const samples = t.f32("samples");
  const outputs = t.f32("model_outputs");
  const timestepsRef = t.f32("timesteps");
  // Our own schedule decides how many steps there are: a schedule of another length is a failure
  // with a named metric (scheduleLengthDiff), never an index out of range.
  const ourLength = make().timesteps.length;
  const lengthDiff = Math.abs(ourLength - timestepsRef.data.length);
  const n = Math.min(outputs.dims[0], ourLength);
  const per = numel(shape);
  const run = (teacher: boolean) => {
    const s = make();
    const gen = new TorchGenerator(BigInt(meta.seed));
    gen.randn(shape);
    const state = s.initialState();
    let sample: Float32Array = Float32Array.from(stepSlice(samples, 0));
    const out = new Float32Array(n * per);
    const series: number[] = [];
    for (let k = 0; k < n; k++) {
      const input = teacher ? Float32Array.from(stepSlice(samples, k)) : sample;
      sample = s.step(Float32Array.from(stepSlice(outputs, k)), k, input, state, gen, shape).prevSample;
      out.set(sample, k * per);
      series.push(tensorMetrics(sample, stepSlice(samples, k + 1), shape).relL2);
    }
    return { s, out, series };
  };
  const teacher = run(true);
  const free = run(false);
  const ref = samples.data.subarray(per, (n + 1) * per);
  const metrics: Record<string, TensorMetrics> = { prev_samples: tensorMetrics(teacher.out, ref, [n, ...shape], true) };
  if (lengthDiff === 0) metrics.timesteps = tensorMetrics(teacher.s.timesteps, timestepsRef.data, timestepsRef.dims, true);
  return {
    metrics,
    extra: { scheduleLengthDiff: lengthDiff },
    series: [{ name: "free-running prev_sample", metric: "relL2", values: free.series }],
    message: lengthDiff
      ? `our schedule has ${ourLength} timesteps, the reference ${timestepsRef.data.length}; the first ${n} steps compared`
      : `free-running final relL2 ${free.series[free.series.length - 1]?.toExponential(2)}`,
  };
}

async function unetTeacherForced(ctx: StageContext, c: CaseDef): Promise<StageOutcome> {
  const t = ctx.refs.tensors(c.refId);
  const sample = t.f32("sample");
  // an inpainting U-Net's input: latents, mask and masked-image latents (9 channels for SD 1.x)
  const pipe = sample.dims[1] === 2 * ctx.pipe.folder.vaeConfig.latentChannels + 1 ? ctx.inpaintPipe : ctx.pipe;
  if (!pipe) return { metrics: {}, skip: "needs an inpainting model (--inpaint-model)" };
  if (sample.dims[1] !== pipe.folder.unetConfig.inChannels) return { metrics: {}, skip: `reference U-Net input has ${sample.dims[1]} channels` };
  const out = await pipe.runUnet(sample, t.f32("timestep").data[0], t.f32("encoder_hidden_states"));
  const ref = t.f32("out_sample");
  const m = tensorMetrics(out.data, ref.data, ref.dims);
  return { metrics: { out_sample: m }, nonFinite: m.nanCount + m.infCount > 0 ? { stage: "unet", step: (ctx.refs.get(c.refId).meta as Meta)?.call ?? null, what: "NaN/Inf in the noise prediction" } : undefined };
}

function asImages(t: CaseTensors, meta: Meta): { init: RgbImage | null; mask: { width: number; height: number; data: Uint8Array } | null } {
  const init = t.has("init_image") ? { width: meta.width, height: meta.height, data: t.raw("init_image").data as Uint8Array } : null;
  const mask = t.has("mask_image") ? { width: meta.width, height: meta.height, data: t.raw("mask_image").data as Uint8Array } : null;
  return { init, mask };
}

function paramsFromMeta(meta: Meta, t: CaseTensors): GenerateParams {
  const { init, mask } = asImages(t, meta);
  return {
    prompt: meta.prompt, negativePrompt: meta.negative_prompt, steps: meta.steps, guidanceScale: meta.guidance_scale,
    scheduler: meta.scheduler, seed: meta.seed, width: meta.width, height: meta.height,
    numImagesPerPrompt: meta.num_images_per_prompt, strength: meta.strength, clipSkip: meta.clip_skip ?? 0,
    initImage: init, mask,
  };
}

/** Run generate, collecting per-step latents; a NaN / Inf is reported with the stage and step. */
async function runLoop(pipe: StableDiffusionPipeline, params: GenerateParams) {
  const steps: Float32Array[] = [];
  try {
    const result = await pipe.generate({ ...params, onStep: (s) => { steps.push(s.latents.data.slice()); } });
    return { result, steps, nonFinite: undefined };
  } catch (e) {
    if (e instanceof NumericError) return { result: null, steps, nonFinite: { stage: e.stage, step: e.step, what: e.message } };
    throw e;
  }
}

function stepSeries(steps: Float32Array[], ref: F32): { series: Series[]; last: TensorMetrics | null } {
  const relL2: number[] = [];
  const maxAbs: number[] = [];
  let last: TensorMetrics | null = null;
  steps.forEach((s, k) => {
    if (k >= ref.dims[0]) return;
    last = tensorMetrics(s, stepSlice(ref, k), ref.dims.slice(1));
    relL2.push(last.relL2);
    maxAbs.push(last.maxAbs);
  });
  return { series: [{ name: "latents", metric: "relL2", values: relL2 }, { name: "latents", metric: "maxAbs", values: maxAbs }], last };
}

/** diffusers' VaeImageProcessor.postprocess(output_type="np"): (x / 2 + 0.5).clamp(0, 1), [B, 3, H, W] -> [B, H, W, 3]. */
function postprocessNp(x: F32): Float32Array {
  const [b, c, h, w] = x.dims;
  const out = new Float32Array(x.data.length);
  const plane = h * w;
  for (let n = 0; n < b; n++) {
    for (let k = 0; k < c; k++) {
      for (let i = 0; i < plane; i++) {
        const v = Math.fround(Math.fround(x.data[(n * c + k) * plane + i] / 2) + 0.5);
        out[(n * plane + i) * c + k] = Math.min(Math.max(v, 0), 1);
      }
    }
  }
  return out;
}

function concatSteps(steps: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(steps.reduce((n, s) => n + s.length, 0));
  let o = 0;
  for (const s of steps) {
    out.set(s, o);
    o += s.length;
  }
  return out;
}

function pipeFor(ctx: StageContext, meta: Meta): StableDiffusionPipeline | null {
  return meta.kind === "inpaint" ? ctx.inpaintPipe : ctx.pipe;
}

async function unetFree(ctx: StageContext, c: CaseDef): Promise<StageOutcome> {
  const meta = ctx.refs.get(c.refId).meta as Meta;
  const pipe = pipeFor(ctx, meta);
  if (!pipe) return { metrics: {}, skip: "needs an inpainting model (--inpaint-model)" };
  const t = ctx.refs.tensors(c.refId);
  const init = t.f32("latents_init");
  // Reference initial latents and prompt embeddings: only the U-Net + scheduler loop is ours.
  // The generator is advanced past the draws the reference run made before the loop, so the
  // stochastic schedulers' per-step noise lines up.
  const gen = new TorchGenerator(BigInt(meta.seed));
  if (meta.kind === "txt2img" || meta.kind === "inpaint") gen.randn(init.dims);
  else { gen.randn(init.dims); gen.randn(init.dims); }
  const params = { ...paramsFromMeta(meta, t), latents: init, promptEmbeds: t.f32("prompt_embeds"), generator: gen };
  const { steps, nonFinite } = await runLoop(pipe, params);
  const ref = t.f32("latents_steps");
  const { series, last } = stepSeries(steps, ref);
  const metrics: Record<string, TensorMetrics> = last ? { final_latents: last } : {};
  if (steps.length === ref.dims[0]) metrics.latents_steps = tensorMetrics(concatSteps(steps), ref.data, ref.dims);
  return { metrics, series, nonFinite };
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
  return { ...m, refPng: `${ctx.assets.rel}/${files.refPng}`, oursPng: `${ctx.assets.rel}/${files.oursPng}`, diffPng: `${ctx.assets.rel}/${files.diffPng}` };
}

async function compareImages(ctx: StageContext, key: string, ours: F32 | RgbImage[], ref: F32 | RgbImage[]): Promise<ImageMetrics[]> {
  const a = Array.isArray(ours) ? ours : tensorToImages(ours);
  const b = Array.isArray(ref) ? ref : tensorToImages(ref);
  const out: ImageMetrics[] = [];
  for (let i = 0; i < b.length; i++) {
    const m = imageMetrics(a[i].data, b[i].data, b[i].width, b[i].height);
    out.push(await writeTriplet(ctx, `${key}-${i}`, a[i], b[i], m));
  }
  return out;
}

async function endToEnd(ctx: StageContext, c: CaseDef, model: string): Promise<StageOutcome> {
  const meta = ctx.refs.get(c.refId).meta as Meta;
  const pipe = pipeFor(ctx, meta);
  if (!pipe) return { metrics: {}, skip: "needs an inpainting model (--inpaint-model)" };
  if (meta.clip_skip && !(await pipe.hasHiddenStates())) return { metrics: {}, skip: `clip skip ${meta.clip_skip}: ${NO_HIDDEN_STATES}` };
  const t = ctx.refs.tensors(c.refId);
  const { result, steps, nonFinite } = await runLoop(pipe, paramsFromMeta(meta, t));
  const ref = t.f32("latents_steps");
  const { series, last } = stepSeries(steps, ref);
  const metrics: Record<string, TensorMetrics> = {};
  let images: ImageMetrics[] = [];
  let message: string | undefined;
  let timestepMismatches = 0;
  if (result && t.has("timesteps")) {
    // The schedule first: a wrong timestep makes every later tensor differ, and the U-Net is not to blame.
    const rt = t.f32("timesteps").data;
    const ours = result.timesteps;
    const n = Math.max(rt.length, ours.length);
    let first = -1;
    for (let k = 0; k < n; k++) {
      if (k >= rt.length || k >= ours.length || Math.fround(ours[k]) !== rt[k]) {
        timestepMismatches++;
        if (first < 0) first = k;
      }
    }
    if (first >= 0) {
      const show = (a: ArrayLike<number>) => `[${Array.from(a).slice(0, 6).map((v) => Number(v.toFixed(3))).join(", ")}${a.length > 6 ? ", …" : ""}]`;
      message = `timesteps differ from the reference's from step ${first}: ours ${show(ours)} (${ours.length}), reference ${show(rt)} (${rt.length}); check the scheduler config (steps_offset, timestep_spacing)`;
    }
  }
  if (result) {
    const pe = t.f32("prompt_embeds");
    metrics.prompt_embeds = tensorMetrics(result.promptEmbeds.data, pe.data, pe.dims);
    const li = t.f32("latents_init");
    metrics.latents_init = tensorMetrics(result.initialLatents.data, li.data, li.dims);
    if (last) metrics.final_latents = last;
    // every step, not only the last: a fault that cancels out by the end still shows
    if (steps.length === ref.dims[0]) metrics.latents_steps = tensorMetrics(concatSteps(steps), ref.data, ref.dims);
    if (t.has("image_float")) {
      const fi = t.f32("image_float");
      metrics.image_float = tensorMetrics(postprocessNp(result.decoded), fi.data, fi.dims);
    }
    const u8 = t.raw("image_uint8");
    const [b, h, w] = u8.dims;
    const refImgs: RgbImage[] = Array.from({ length: b }, (_, i) => ({ width: w, height: h, data: (u8.data as Uint8Array).subarray(i * h * w * 3, (i + 1) * h * w * 3) }));
    images = await compareImages(ctx, `${model}-${c.id}`, result.images, refImgs);
  }
  return { metrics, images, series, nonFinite, message, extra: result && t.has("timesteps") ? { timestepMismatches } : undefined };
}

async function vae(ctx: StageContext, c: CaseDef, model: string): Promise<StageOutcome> {
  const t = ctx.refs.tensors(c.refId);
  const pipe = ctx.pipe;
  const sf = Math.fround(pipe.folder.vaeConfig.scalingFactor);
  if (c.kind === "vae_decode") {
    const ours = await pipe.decodeLatents(t.f32("latents"));
    const ref = t.f32("image");
    return { metrics: { image: tensorMetrics(ours.data, ref.data, ref.dims) }, images: await compareImages(ctx, `${model}-${c.id}`, ours, ref) };
  }
  if (!pipe.folder.vaeEncoder) return { metrics: {}, skip: "the model folder has no vae_encoder" };
  const { mean, std } = await pipe.encodeImage(t.f32("image"));
  if (c.kind === "vae_encode") {
    const rm = t.f32("mean");
    const rs = t.f32("std");
    return { metrics: { mean: tensorMetrics(mean.data, rm.data, rm.dims), std: tensorMetrics(std.data, rs.data, rs.dims) } };
  }
  const latents = f32(mean.data.map((v) => Math.fround(v * sf)), mean.dims);
  const back = await pipe.decodeLatents(latents);
  const rl = t.f32("latents");
  const rr = t.f32("reconstruction");
  return {
    metrics: { latents: tensorMetrics(latents.data, rl.data, rl.dims), reconstruction: tensorMetrics(back.data, rr.data, rr.dims) },
    images: await compareImages(ctx, `${model}-${c.id}`, back, rr),
  };
}

export async function runStage(ctx: StageContext, c: CaseDef, model: string): Promise<StageOutcome> {
  switch (c.kind) {
    case "tokenizer": return tokenizer(ctx, c);
    case "text_encoder": return textEncoder(ctx, c);
    case "rng": return rng(ctx, c);
    case "scheduler": return scheduler(ctx, c);
    case "unet": return unetTeacherForced(ctx, c);
    case "unet_free": return unetFree(ctx, c);
    case "vae_decode":
    case "vae_encode":
    case "vae_roundtrip": return vae(ctx, c, model);
    case "end_to_end": return endToEnd(ctx, c, model);
  }
  throw new HarnessError(`unknown case kind ${(c as CaseDef).kind}`, ExitCode.internal);
}
