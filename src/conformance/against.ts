/**
 * `conformance --model A --against B`: two ONNX ports compared with each other, stage by stage,
 * without PyTorch's outputs (the way Polygraphy compares two runners) — for example an fp16
 * conversion against its fp32 original on a user's own weights, which needs no Python. The inputs
 * are still the reference set's (ids, latents, U-Net inputs, images); for each case B is run on
 * them first, its outputs take the place of the reference's output tensors, and A's stage is then
 * judged against them by the same stage code and limits as usual.
 *
 * Model stages only (text_encoder, unet teacher-forced, vae_decode, vae_encode, vae_roundtrip):
 * the tokenizer, rng and scheduler stages do not depend on the model, and the end-to-end and
 * free-running cases would need B's whole loop recorded; those are skipped with that reason.
 */
import { StableDiffusionPipeline } from "../pipeline/pipeline";
import { f32, F32, Tensor, TypedData } from "../tensor/tensor";
import { CaseTensors, ReferenceSet } from "./reference-set";
import { CaseDef } from "./cases";
import { runStage, StageContext, StageOutcome } from "./stages";

type Outputs = Map<string, Tensor<TypedData>>;

const t32 = (t: F32): Tensor<TypedData> => t;

/** B's outputs for one case, under the reference's tensor names; null: not comparable port-vs-port (with why). */
async function outputsOf(b: StableDiffusionPipeline, refs: ReferenceSet, c: CaseDef): Promise<Outputs | string> {
  const t = refs.tensors(c.refId);
  const out: Outputs = new Map();
  switch (c.kind) {
    case "text_encoder": {
      const raw = t.raw("input_ids");
      const [n, len] = raw.dims;
      const data = raw.data instanceof BigInt64Array ? Int32Array.from(raw.data, Number) : (raw.data as Int32Array);
      const ids = Array.from({ length: n }, (_, i) => Int32Array.from(data.subarray(i * len, (i + 1) * len)));
      out.set("last_hidden_state", t32(await b.encodeIds(ids, 0)));
      if (t.has("penultimate_normed") && (await b.hasHiddenStates())) out.set("penultimate_normed", t32(await b.encodeIds(ids, 1)));
      return out;
    }
    case "unet": {
      const sample = t.f32("sample");
      if (sample.dims[1] !== b.folder.unetConfig.inChannels) return `--against: ${b.folder.dir} takes ${b.folder.unetConfig.inChannels} channels, this case ${sample.dims[1]}`;
      out.set("out_sample", t32(await b.runUnet(sample, t.f32("timestep").data[0], t.f32("encoder_hidden_states"))));
      return out;
    }
    case "vae_decode":
      out.set("image", t32(await b.decodeLatents(t.f32("latents"))));
      return out;
    case "vae_encode":
    case "vae_roundtrip": {
      if (!b.folder.vaeEncoder) return `--against: ${b.folder.dir} has no vae_encoder`;
      const { mean, std } = await b.encodeImage(t.f32("image"));
      if (c.kind === "vae_encode") {
        out.set("mean", t32(mean));
        out.set("std", t32(std));
        return out;
      }
      const sf = Math.fround(b.folder.vaeConfig.scalingFactor);
      const latents = f32(mean.data.map((v) => Math.fround(v * sf)), mean.dims);
      out.set("latents", t32(latents));
      out.set("reconstruction", t32(await b.decodeLatents(latents)));
      return out;
    }
    default:
      return `--against compares model stages (text_encoder, unet, vae_*) only; ${c.kind === "unet_free" || c.kind === "end_to_end" ? "a loop would need B's every step recorded" : "this stage does not depend on the model"}`;
  }
}

/** The reference set with one case's output tensors replaced by B's. */
function withOutputs(refs: ReferenceSet, id: string, outputs: Outputs, label: string): ReferenceSet {
  const base = refs.tensors(id);
  const merged = new Map<string, Tensor<TypedData>>(base.names().map((n) => [n, base.raw(n)]));
  for (const [k, v] of outputs) merged.set(k, v);
  const tensors = new CaseTensors(id, `${base.file} (outputs of ${label})`, merged);
  // every other member (manifest, meta, JSON cases) is the set's own
  return Object.assign(Object.create(refs) as ReferenceSet, { tensors: (x: string) => (x === id ? tensors : refs.tensors(x)) });
}

/** Run case `c` for model A (ctx) against model B's outputs on the same inputs. */
export async function runAgainst(ctx: StageContext, b: StableDiffusionPipeline, bLabel: string, c: CaseDef, label: string): Promise<StageOutcome> {
  const outputs = await outputsOf(b, ctx.refs, c);
  if (typeof outputs === "string") return { metrics: {}, skip: outputs };
  return runStage({ ...ctx, refs: withOutputs(ctx.refs, c.refId, outputs, bLabel) }, c, label);
}
