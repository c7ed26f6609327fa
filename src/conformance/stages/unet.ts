/** unet (teacher-forced): one U-Net call fed the reference's exact inputs, its noise prediction compared: the model's own error. */
import { tensorMetrics } from "../judge/metrics";
import { COST, StageOutcome } from "./types";
import { caseMeta, NEEDS_INPAINT_MODEL, ownStage } from "./common";

/** scripts/refgen's U-Net call: which call of its run it was. */
interface CallMeta {
  readonly call?: number;
}

export const unet = ownStage({
  kind: "unet",
  cost: () => COST.unetCall,
  async run(ctx, c): Promise<StageOutcome> {
    const t = ctx.refs.tensors(c.refId);
    const sample = t.f32("sample");
    // an inpainting U-Net's input: latents, mask and masked-image latents (9 channels for SD 1.x)
    const pipe = sample.dims[1] === 2 * ctx.pipe.folder.vaeConfig.latentChannels + 1 ? ctx.inpaintPipe : ctx.pipe;
    if (!pipe) return { metrics: {}, skip: NEEDS_INPAINT_MODEL };
    if (sample.dims[1] !== pipe.folder.unetConfig.inChannels)
      return { metrics: {}, skip: `reference U-Net input has ${sample.dims[1]} channels` };
    const out = await pipe.runUnet(sample, t.f32("timestep").data[0], t.f32("encoder_hidden_states"));
    const ref = t.f32("out_sample");
    const m = tensorMetrics(out.data, ref.data, ref.dims);
    const step = caseMeta<CallMeta>(ctx.refs, c.refId)?.call ?? null;
    return {
      metrics: { out_sample: m },
      nonFinite: m.nanCount + m.infCount > 0 ? { stage: "unet", step, what: "NaN/Inf in the noise prediction" } : undefined,
    };
  },
  async against(b, t) {
    const sample = t.f32("sample");
    if (sample.dims[1] !== b.folder.unetConfig.inChannels)
      return `--against: ${b.folder.dir} takes ${b.folder.unetConfig.inChannels} channels, this case ${sample.dims[1]}`;
    return new Map([["out_sample", await b.runUnet(sample, t.f32("timestep").data[0], t.f32("encoder_hidden_states"))]]);
  },
  components: ["unet"],
  float64Floor: true,
  displayRank: 4,
  plotRank: 1,
});
