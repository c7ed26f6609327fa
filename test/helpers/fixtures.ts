import * as path from "node:path";

export const ROOT = path.resolve(__dirname, "..", "..");
export const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");
export const TINY_INPAINT = path.join(ROOT, "fixtures", "models", "tiny-sd-inpaint-onnx");
export const REFS = path.join(ROOT, "fixtures", "references", "tiny-sd", "cpu");

/**
 * Models as users bring them (not shipped), each with the reference set diffusers made for it
 * (scripts/make_fixtures.sh): the detection fixture tiny-sd-wide as optimum's exporter writes it,
 * and three further geometries / configs exported by scripts/export_onnx.py.
 */
export const WIDE = path.join(ROOT, "fixtures", "models", "tiny-sd-wide-optimum-onnx");
export const WIDE_REFS = path.join(ROOT, "fixtures", "references", "tiny-sd-wide", "cpu");
export const USER_FIXTURES: readonly { readonly name: string; readonly model: string; readonly refs: string }[] = [
  { name: "tiny-sd-wide-optimum-onnx", model: WIDE, refs: WIDE_REFS },
  ...["tiny-sd-3block-linear", "tiny-sd-2block-euler", "tiny-sd-legacy-pndm"].map((name) => ({
    name: `${name}-onnx`,
    model: path.join(ROOT, "fixtures", "models", `${name}-onnx`),
    refs: path.join(ROOT, "fixtures", "references", name, "cpu"),
  })),
];

/** shapes-sd: the trained model `generate` uses by default (scripts/train_shapes_model.py). */
export const SHAPES = path.join(ROOT, "fixtures", "models", "shapes-sd-onnx");
