/** text_encoder: CLIP's last hidden state for the set's prompt ids, and the penultimate layer (clip skip) where the export has it. */
import { NO_HIDDEN_STATES } from "../../pipeline/pipeline";
import { tensorMetrics } from "../judge/metrics";
import { TensorMetrics } from "../types";
import { AgainstOutputs, COST } from "./types";
import { ownStage, rows } from "./common";

export const textEncoder = ownStage({
  kind: "text_encoder",
  cost: () => 2 * COST.textEncoder,
  async run(ctx, c) {
    const t = ctx.refs.tensors(c.refId);
    const ids = rows(t, "input_ids");
    const last = await ctx.pipe.encodeIds(ids, 0);
    const ref = t.f32("last_hidden_state");
    const metrics: Record<string, TensorMetrics> = { last_hidden_state: tensorMetrics(last.data, ref.data, ref.dims) };
    if (t.has("penultimate_normed")) {
      // optimum's SD 1.x export has no hidden-state outputs: the last hidden state is still judged
      if (!(await ctx.pipe.hasHiddenStates()))
        return { metrics, uncovered: `penultimate_normed (clip skip) not compared: ${NO_HIDDEN_STATES}` };
      const pen = await ctx.pipe.encodeIds(ids, 1);
      const r = t.f32("penultimate_normed");
      metrics.penultimate_normed = tensorMetrics(pen.data, r.data, r.dims);
    }
    return { metrics };
  },
  async against(b, t) {
    const ids = rows(t, "input_ids");
    const out: AgainstOutputs = new Map();
    out.set("last_hidden_state", await b.encodeIds(ids, 0));
    if (t.has("penultimate_normed") && (await b.hasHiddenStates())) out.set("penultimate_normed", await b.encodeIds(ids, 1));
    return out;
  },
  components: ["text_encoder"],
  float64Floor: true,
  displayRank: 1,
});
