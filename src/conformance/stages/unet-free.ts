/**
 * unet_free (reported under unet as `unet:<run>-free`): an end-to-end run's denoising loop from
 * the reference initial latents and prompt embeddings, so only the U-Net + scheduler loop is ours:
 * how error accumulates over steps. It has limits of its own (tolerances.json: unet_free).
 */
import { TorchGenerator } from "../../rng/torch-generator";
import { StableDiffusionPipeline } from "../../pipeline/pipeline";
import { f32 } from "../../tensor/tensor";
import { CaseTensors } from "../cases/reference-set";
import { tensorMetrics } from "../judge/metrics";
import { TensorMetrics } from "../types";
import { COST, StageDef } from "./types";
import {
  caseMeta,
  concatSteps,
  NEEDS_INPAINT_MODEL,
  ON_INPAINT,
  paramsFromMeta,
  pipeFor,
  positive,
  runLoop,
  RunMeta,
  stepSeries,
} from "./common";

const SUFFIX = "-free";

/**
 * The loop from the reference's initial latents and prompt embeddings. The generator is advanced
 * past the draws the reference run made before the loop, so the stochastic schedulers' per-step
 * noise lines up: img2img (and inpainting below full strength) first samples the one init image's
 * latents ([1, C, h, w], repeated to the batch), then draws the batch's noise; txt2img and
 * full-strength inpainting only the noise. (The inpainting pipeline then samples the masked
 * image's latents itself.)
 */
async function freeLoop(pipe: StableDiffusionPipeline, meta: RunMeta, t: CaseTensors) {
  const init = t.f32("latents_init");
  const gen = new TorchGenerator(BigInt(meta.seed));
  const fromImage = meta.kind === "img2img" || (meta.kind === "inpaint" && typeof meta.strength === "number" && meta.strength < 1);
  if (fromImage) gen.randn([1, ...init.dims.slice(1)]);
  gen.randn(init.dims);
  return runLoop(pipe, { ...paramsFromMeta(meta, t), latents: init, promptEmbeds: t.f32("prompt_embeds"), generator: gen });
}

export const unetFree: StageDef = {
  kind: "unet_free",
  stage: "unet",
  source: "end_to_end",
  readsTensors: true,
  caseId: (ref) => `unet:${ref.id.slice("end_to_end:".length)}${SUFFIX}`,
  claims: (id) => id.endsWith(SUFFIX),
  cost: (meta) => positive(meta, "unet_calls", 1) * COST.unetCall,
  async run(ctx, c) {
    const meta = caseMeta<RunMeta>(ctx.refs, c.refId);
    const pipe = pipeFor(ctx, meta);
    if (!pipe) return { metrics: {}, skip: NEEDS_INPAINT_MODEL };
    const t = ctx.refs.tensors(c.refId);
    const { steps, nonFinite } = await freeLoop(pipe, meta, t);
    const ref = t.f32("latents_steps");
    const { series, last } = stepSeries(steps, ref);
    const metrics: Record<string, TensorMetrics> = last ? { final_latents: last } : {};
    if (steps.length === ref.dims[0]) metrics.latents_steps = tensorMetrics(concatSteps(steps), ref.data, ref.dims);
    return { metrics, series, nonFinite };
  },
  async against(b, t, _c, m) {
    const meta = m as unknown as RunMeta;
    if (meta.kind === "inpaint") return `--against: ${ON_INPAINT}`;
    const { steps, nonFinite } = await freeLoop(b, meta, t);
    const ref = t.f32("latents_steps");
    if (nonFinite || steps.length !== ref.dims[0])
      return `--against: ${b.folder.dir}'s loop ${nonFinite ? `is not finite (${nonFinite.what})` : `made ${steps.length} steps, the reference ${ref.dims[0]}`}`;
    return new Map([["latents_steps", f32(concatSteps(steps), ref.dims)]]);
  },
  components: ["unet"],
  loop: true,
  float64Floor: true,
  displayRank: 4,
  plotRank: 1,
};
