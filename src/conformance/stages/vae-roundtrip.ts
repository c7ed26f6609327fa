/** vae_roundtrip: encode the reference image, scale the mean by the VAE's scaling factor, decode it again. */
import { StableDiffusionPipeline } from "../../pipeline/pipeline";
import { f32, F32 } from "../../tensor/tensor";
import { tensorMetrics } from "../judge/metrics";
import { COST, StageOutcome } from "./types";
import { compareImages, NO_VAE_ENCODER, ownStage, sizeOf } from "./common";

/** The latents diffusers' img2img starts from: mean × scaling_factor, each product rounded to float32. */
async function encodeScaled(pipe: StableDiffusionPipeline, image: F32): Promise<F32> {
  const sf = Math.fround(pipe.folder.vaeConfig.scalingFactor);
  const { mean } = await pipe.encodeImage(image);
  return f32(
    mean.data.map((v) => Math.fround(v * sf)),
    mean.dims,
  );
}

export const vaeRoundtrip = ownStage({
  kind: "vae_roundtrip",
  cost: () => COST.vaeEncode + COST.vaeDecode,
  async run(ctx, c, model): Promise<StageOutcome> {
    const t = ctx.refs.tensors(c.refId);
    if (!ctx.pipe.folder.vaeEncoder) return { metrics: {}, skip: NO_VAE_ENCODER };
    const latents = await encodeScaled(ctx.pipe, t.f32("image"));
    const back = await ctx.pipe.decodeLatents(latents);
    const rl = t.f32("latents");
    const rr = t.f32("reconstruction");
    return {
      metrics: { latents: tensorMetrics(latents.data, rl.data, rl.dims), reconstruction: tensorMetrics(back.data, rr.data, rr.dims) },
      images: await compareImages(ctx, `${model}-${c.id}`, back, rr),
    };
  },
  async against(b, t) {
    if (!b.folder.vaeEncoder) return `--against: ${b.folder.dir} has no vae_encoder`;
    const latents = await encodeScaled(b, t.f32("image"));
    return new Map([
      ["latents", latents],
      ["reconstruction", await b.decodeLatents(latents)],
    ]);
  },
  components: ["vae_encoder", "vae_decoder"],
  float64Floor: true,
  coverage: (meta) => ({ size: sizeOf(meta) }),
  displayRank: 7,
});
