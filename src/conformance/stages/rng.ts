/** rng: torch.randn from our CPU generator against torch's, draw by draw, in float32 ULPs. */
import { TorchGenerator } from "../../rng/torch-generator";
import { tensorMetrics } from "../judge/metrics";
import { TensorMetrics } from "../types";
import { COST } from "./types";
import { caseMeta, MODEL_FREE, ownStage } from "./common";

/** scripts/refgen's rng case: the seed (a decimal string: up to 2^64 - 1), shapes drawn in order, torch's normal kernel. */
interface RngMeta {
  readonly seed: string | number;
  readonly shapes: readonly (readonly number[])[];
  readonly normal_kernel?: string;
}

export const rng = ownStage({
  kind: "rng",
  cost: () => COST.small,
  async run(ctx, c) {
    const meta = caseMeta<RngMeta>(ctx.refs, c.refId);
    const t = ctx.refs.tensors(c.refId);
    const generic = /generic/.test(String(meta.normal_kernel ?? ""));
    const gen = new TorchGenerator(BigInt(meta.seed), generic ? { normalKernel: "generic" } : {});
    const metrics: Record<string, TensorMetrics> = {};
    meta.shapes.forEach((shape, k) => {
      const ours = gen.randn(shape);
      const ref = t.f32(`draw${k}`);
      metrics[`draw${k}`] = tensorMetrics(ours, ref.data, ref.dims, true);
    });
    return { metrics };
  },
  against: MODEL_FREE,
  components: [],
  float64Floor: false,
  headlineMetric: "maxUlp",
  displayRank: 2,
});
