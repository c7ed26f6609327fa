/**
 * Detection power, model-level: every model stage of the suite must catch a small change in a copy
 * of the model folder — one value of one weight × 1.01 in a copy of an ONNX file, or two entries
 * of the tokenizer's vocabulary swapped. The unbroken model runs the same cases (one of every
 * stage) and passes all of them; each broken copy fails the cases its change reaches, by a margin
 * (value / limit of the deciding check) > 1, and passes the others. Code-level faults are in
 * faults-code.test.ts, the schedulers in faults-schedulers.test.ts; the margins printed here are
 * recorded in conformance/README.md ("What the suite catches").
 *
 * No model-level fault can reach the rng stage (it reads nothing from the model folder) or the
 * scheduler stage (it replays the reference's own scheduler config); a changed scheduler config in
 * the model folder is covered in faults-schedulers.test.ts.
 */
import * as path from "node:path";
import { runConformance, ModelSpec } from "../src/conformance/runner";
import { Report } from "../src/conformance/types";
import { TINY, TINY_INPAINT, REFS } from "./helpers/fixtures";
import { copyPart, editJson, scaleValue } from "./helpers/onnx-edit";
import { EVERY_STAGE, describeModel, expectCaughtByMargin, expectedStatuses, statusesOf } from "./helpers/fault-matrix";
import { tempDir } from "./helpers/tmp";

const GOOD = "good";

const tmp = tempDir("sd-faults-model-");

/** A copy of `part` of `src` with one value of `name` × `factor` (a non-zero value, checked). */
function oneWeight(src: string, name: string, part: string, tensor: string, index: number, factor: number): string {
  const dir = copyPart(src, path.join(tmp(), name), part);
  const { before, after } = scaleValue(path.join(dir, part, "model.onnx"), tensor, index, factor);
  expect(before).not.toBe(0);
  expect(after / before).toBeCloseTo(factor, 6);
  return dir;
}

interface Fault {
  readonly label: string;
  /** the broken folder (and an inpainting folder, when the fault is meant to reach the inpaint cases) */
  readonly make: () => Omit<ModelSpec, "label">;
  readonly fails: readonly string[];
}

const FAULTS: readonly Fault[] = [
  {
    label: "tokenizer vocab.json: ids of astronaut</w> and horse</w> swapped",
    make: () => {
      const dir = copyPart(TINY, path.join(tmp(), "vocab-swap"), "tokenizer");
      editJson(path.join(dir, "tokenizer", "vocab.json"), (v) => {
        expect([typeof v["astronaut</w>"], typeof v["horse</w>"]]).toEqual(["number", "number"]);
        [v["astronaut</w>"], v["horse</w>"]] = [v["horse</w>"], v["astronaut</w>"]];
      });
      return { dir };
    },
    // the text encoder is fed the reference's ids: it is rightly not blamed
    fails: ["tokenizer:corpus", "end_to_end:txt2img-pndm-64x64"],
  },
  {
    label: "text encoder: layers.0.layer_norm1.weight[3] x 1.01",
    make: () => ({ dir: oneWeight(TINY, "te-weight", "text_encoder", "model.text_model.encoder.layers.0.layer_norm1.weight", 3, 1.01) }),
    fails: ["text_encoder:astronaut", "end_to_end:txt2img-pndm-64x64", "end_to_end:img2img-pndm-strength0.6"],
  },
  {
    label: "U-Net: down_blocks.0.resnets.0.conv1.weight[0] x 1.01",
    make: () => ({ dir: oneWeight(TINY, "unet-weight", "unet", "model.down_blocks.0.resnets.0.conv1.weight", 0, 1.01) }),
    fails: [
      "unet:txt2img-pndm-64x64-step00",
      "unet:txt2img-pndm-64x64-step05",
      "unet:txt2img-pndm-64x64-free",
      "end_to_end:txt2img-pndm-64x64",
      "end_to_end:img2img-pndm-strength0.6",
    ],
  },
  {
    label: "inpainting U-Net: conv_in.weight[0] x 1.01",
    // the 4-channel model is the unbroken one; only the inpainting folder's U-Net is changed
    make: () => ({ dir: TINY, inpaintDir: oneWeight(TINY_INPAINT, "inpaint-weight", "unet", "model.conv_in.weight", 0, 1.01) }),
    fails: ["unet:inpaint-pndm-64x64-step00", "end_to_end:inpaint-pndm-64x64"],
  },
  {
    label: "VAE encoder: down_blocks.0.resnets.0.conv1.weight[0] x 1.01",
    // img2img's end_to_end case passes (measured excess < 4: strength 0.6 noises the encoded
    // latents); vae_encode and vae_roundtrip are the stages that see the encoder
    make: () => ({ dir: oneWeight(TINY, "venc-weight", "vae_encoder", "model.encoder.down_blocks.0.resnets.0.conv1.weight", 0, 1.01) }),
    fails: ["vae_encode:64x64", "vae_roundtrip:64x64"],
  },
  {
    label: "VAE decoder: up_blocks.0.resnets.0.conv1.weight[0] x 1.01",
    // the end_to_end pictures pass (measured excess < 4); vae_decode and vae_roundtrip see it
    make: () => ({ dir: oneWeight(TINY, "vdec-weight", "vae_decoder", "model.decoder.up_blocks.0.resnets.0.conv1.weight", 0, 1.01) }),
    fails: ["vae_decode:64x64", "vae_roundtrip:64x64"],
  },
];

describe("model-level faults: one value changed in a copy of the model folder", () => {
  let report: Report;
  let models: ModelSpec[];
  beforeAll(async () => {
    // the inpainting model is loaded only where a fault is meant to reach it (its cases are skipped elsewhere)
    models = [{ label: GOOD, dir: TINY, inpaintDir: TINY_INPAINT }, ...FAULTS.map((f) => ({ ...f.make(), label: f.label }))];
    report = await runConformance({ models, references: REFS, profile: "fp32", only: [...EVERY_STAGE], outDir: null, threads: 1 });
    for (const m of models) console.log(describeModel(report, m.label));
  }, 600_000);

  test("the unbroken model passes every case of every stage", () => {
    expect(statusesOf(report, GOOD)).toEqual(expectedStatuses(EVERY_STAGE, [], true));
  });

  test.each(FAULTS.map((f) => [f.label, f] as const))("%s", (label, f) => {
    const withInpaint = !!models.find((m) => m.label === label)?.inpaintDir;
    expect(statusesOf(report, label)).toEqual(expectedStatuses(EVERY_STAGE, f.fails, withInpaint));
    expectCaughtByMargin(report, label, f.fails);
  });
});
