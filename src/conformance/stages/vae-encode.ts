/** vae_encode: the VAE encoder's latent distribution (mean and std) for the reference image. */
import { tensorMetrics } from "../judge/metrics";
import { COST, StageOutcome } from "./types";
import { NO_VAE_ENCODER, ownStage, sizeOf } from "./common";

export const vaeEncode = ownStage({
  kind: "vae_encode",
  cost: () => COST.vaeEncode,
  async run(ctx, c): Promise<StageOutcome> {
    const t = ctx.refs.tensors(c.refId);
    if (!ctx.pipe.folder.vaeEncoder) return { metrics: {}, skip: NO_VAE_ENCODER };
    const { mean, std } = await ctx.pipe.encodeImage(t.f32("image"));
    const rm = t.f32("mean");
    const rs = t.f32("std");
    return { metrics: { mean: tensorMetrics(mean.data, rm.data, rm.dims), std: tensorMetrics(std.data, rs.data, rs.dims) } };
  },
  async against(b, t) {
    if (!b.folder.vaeEncoder) return `--against: ${b.folder.dir} has no vae_encoder`;
    const { mean, std } = await b.encodeImage(t.f32("image"));
    return new Map([
      ["mean", mean],
      ["std", std],
    ]);
  },
  components: ["vae_encoder"],
  float64Floor: true,
  coverage: (meta) => ({ size: sizeOf(meta) }),
  displayRank: 5,
});
