/** vae_decode: the VAE decoder on the reference latents, the image compared as a tensor and as pictures. */
import { tensorMetrics } from "../judge/metrics";
import { COST } from "./types";
import { compareImages, ownStage, sizeOf } from "./common";

export const vaeDecode = ownStage({
  kind: "vae_decode",
  cost: () => COST.vaeDecode,
  async run(ctx, c, model) {
    const t = ctx.refs.tensors(c.refId);
    const ours = await ctx.pipe.decodeLatents(t.f32("latents"));
    const ref = t.f32("image");
    return {
      metrics: { image: tensorMetrics(ours.data, ref.data, ref.dims) },
      images: await compareImages(ctx, `${model}-${c.id}`, ours, ref),
    };
  },
  against: async (b, t) => new Map([["image", await b.decodeLatents(t.f32("latents"))]]),
  components: ["vae_decoder"],
  float64Floor: true,
  coverage: (meta) => ({ size: sizeOf(meta) }),
  displayRank: 6,
});
