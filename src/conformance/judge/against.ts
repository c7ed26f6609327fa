/**
 * `conformance --model A --against B`: two ONNX ports compared with each other, stage by stage,
 * without PyTorch's outputs (the way Polygraphy compares two runners) — for example an fp16
 * conversion against its fp32 original on a user's own weights, which needs no Python. The inputs
 * are still the reference set's (ids, latents, U-Net inputs, images); for each case B is run on
 * them first, its outputs take the place of the reference's output tensors, and A's stage is then
 * judged against them by the same stage code and limits as usual.
 *
 * Model stages only (text_encoder, unet teacher-forced and free-running, vae_decode, vae_encode,
 * vae_roundtrip, end_to_end): the tokenizer, rng and scheduler stages do not depend on the model
 * and are skipped with that reason. For the loops (free-running, end to end) B runs the same loop
 * from the same inputs and its every step, its decoded image and its pictures take the
 * reference's place; B has no inpainting model, so inpainting runs are skipped.
 */
import { StableDiffusionPipeline } from "../../pipeline/pipeline";
import { Tensor, TypedData } from "../../tensor/tensor";
import { CaseTensors, ReferenceSet } from "../cases/reference-set";
import { AgainstOutputs, CaseDef, runStage, stageDef, StageContext, StageOutcome } from "../stages/index";

/** The reference set with one case's tensors (`base`, read once) overlaid by B's outputs. */
function withOutputs(refs: ReferenceSet, base: CaseTensors, outputs: AgainstOutputs, label: string): ReferenceSet {
  const merged = new Map<string, Tensor<TypedData>>(base.names().map((n) => [n, base.raw(n)]));
  for (const [k, v] of outputs) merged.set(k, v);
  const tensors = new CaseTensors(base.id, `${base.file} (outputs of ${label})`, merged);
  // every other member (manifest, meta, JSON cases) is the set's own
  return Object.assign(Object.create(refs) as ReferenceSet, { tensors: (x: string) => (x === base.id ? tensors : refs.tensors(x)) });
}

/**
 * Run case `c` for model A (ctx) against model B's outputs on the same inputs: B's outputs under the
 * reference's tensor names, or the reason the stage is not compared port vs port.
 */
export async function runAgainst(
  ctx: StageContext,
  b: StableDiffusionPipeline,
  bLabel: string,
  c: CaseDef,
  label: string,
): Promise<StageOutcome> {
  const against = stageDef(c.kind).against;
  if (typeof against === "string")
    return { metrics: {}, skip: `--against compares model stages (text_encoder, unet, vae_*, end_to_end) only; ${against}` };
  const base = ctx.refs.tensors(c.refId);
  const outputs = await against(b, base, c, ctx.refs.get(c.refId).meta ?? {});
  if (typeof outputs === "string") return { metrics: {}, skip: outputs };
  return runStage({ ...ctx, refs: withOutputs(ctx.refs, base, outputs, bLabel) }, c, label);
}
