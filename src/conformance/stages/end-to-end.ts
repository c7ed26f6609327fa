/**
 * end_to_end: a whole generate run (txt2img, img2img, inpaint) from the prompt: the schedule, the
 * prompt embeddings, the initial latents, the latents of every step, the decoded image as floats
 * and as uint8 pictures.
 */
import { F32, f32 } from "../../tensor/tensor";
import { NO_HIDDEN_STATES } from "../../pipeline/pipeline";
import { RgbImage } from "../../pipeline/image";
import { tensorMetrics } from "../judge/metrics";
import { ImageMetrics, TensorMetrics } from "../types";
import { AgainstOutputs, COST } from "./types";
import {
  caseMeta,
  compareImages,
  concatSteps,
  NEEDS_INPAINT_MODEL,
  ON_INPAINT,
  ownStage,
  paramsFromMeta,
  pipeFor,
  positive,
  runLoop,
  RunMeta,
  sizeOf,
  stepSeries,
} from "./common";

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

/** How many timesteps differ from the reference's, and a message naming the first. */
function compareTimesteps(ours: ArrayLike<number>, rt: ArrayLike<number>): { mismatches: number; message?: string } {
  const n = Math.max(rt.length, ours.length);
  let mismatches = 0;
  let first = -1;
  for (let k = 0; k < n; k++) {
    if (k >= rt.length || k >= ours.length || Math.fround(ours[k]) !== rt[k]) {
      mismatches++;
      if (first < 0) first = k;
    }
  }
  if (first < 0) return { mismatches };
  const show = (a: ArrayLike<number>) =>
    `[${Array.from(a)
      .slice(0, 6)
      .map((v) => Number(v.toFixed(3)))
      .join(", ")}${a.length > 6 ? ", …" : ""}]`;
  return {
    mismatches,
    message: `timesteps differ from the reference's from step ${first}: ours ${show(ours)} (${ours.length}), reference ${show(rt)} (${rt.length}); check the scheduler config (steps_offset, timestep_spacing)`,
  };
}

export const endToEnd = ownStage({
  kind: "end_to_end",
  cost(meta) {
    const encodes = meta.kind === "img2img" ? 1 : meta.kind === "inpaint" ? 2 : 0;
    return positive(meta, "unet_calls", 1) * COST.unetCall + 2 * COST.textEncoder + COST.vaeDecode + encodes * COST.vaeEncode;
  },
  async run(ctx, c, model) {
    const meta = caseMeta<RunMeta>(ctx.refs, c.refId);
    const pipe = pipeFor(ctx, meta);
    if (!pipe) return { metrics: {}, skip: NEEDS_INPAINT_MODEL };
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
      ({ mismatches: timestepMismatches, message } = compareTimesteps(result.timesteps, t.f32("timesteps").data));
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
      const refImgs: RgbImage[] = Array.from({ length: b }, (_, i) => ({
        width: w,
        height: h,
        data: (u8.data as Uint8Array).subarray(i * h * w * 3, (i + 1) * h * w * 3),
      }));
      images = await compareImages(ctx, `${model}-${c.id}`, result.images, refImgs);
    }
    return { metrics, images, series, nonFinite, message, extra: result && t.has("timesteps") ? { timestepMismatches } : undefined };
  },
  async against(b, t, _c, m) {
    // B's whole run from the same prompt, seed and images: its schedule, embeddings, initial latents,
    // every step, decoded image and pictures stand in for the reference's
    const meta = m as unknown as RunMeta;
    if (meta.kind === "inpaint") return `--against: ${ON_INPAINT}`;
    if (meta.clip_skip && !(await b.hasHiddenStates()))
      return `--against: ${b.folder.dir}: clip skip ${meta.clip_skip}: ${NO_HIDDEN_STATES}`;
    const { result, steps, nonFinite } = await runLoop(b, paramsFromMeta(meta, t));
    const ref = t.f32("latents_steps");
    if (!result || nonFinite || steps.length !== ref.dims[0]) {
      return `--against: ${b.folder.dir}'s run ${nonFinite ? `is not finite (${nonFinite.what})` : `made ${steps.length} steps, the reference ${ref.dims[0]}`}`;
    }
    const out: AgainstOutputs = new Map();
    out.set("prompt_embeds", result.promptEmbeds);
    out.set("latents_init", result.initialLatents);
    out.set("latents_steps", f32(concatSteps(steps), ref.dims));
    if (t.has("timesteps")) out.set("timesteps", f32(Float32Array.from(result.timesteps, Math.fround), [result.timesteps.length]));
    if (t.has("image_float")) out.set("image_float", f32(postprocessNp(result.decoded), t.f32("image_float").dims));
    const u8 = t.raw("image_uint8");
    const pixels = new Uint8Array(u8.data.length);
    result.images.forEach((im, i) => pixels.set(im.data, i * im.data.length));
    out.set("image_uint8", { dtype: "uint8", dims: u8.dims, data: pixels });
    return out;
  },
  components: ["text_encoder", "unet", "vae_decoder", "vae_encoder"],
  componentsOf: (meta) =>
    meta.kind === "img2img" || meta.kind === "inpaint"
      ? ["text_encoder", "unet", "vae_decoder", "vae_encoder"]
      : ["text_encoder", "unet", "vae_decoder"],
  loop: true,
  float64Floor: true,
  coverage: (meta) => ({
    scheduler: typeof meta.scheduler_class === "string" ? meta.scheduler_class : undefined,
    task: typeof meta.kind === "string" ? meta.kind : undefined,
    size: sizeOf(meta),
  }),
  displayRank: 9,
  plotRank: 0,
});
