import * as path from "node:path";

export const ROOT = path.resolve(__dirname, "..", "..");
export const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");
export const TINY_INPAINT = path.join(ROOT, "fixtures", "models", "tiny-sd-inpaint-onnx");
export const REFS = path.join(ROOT, "fixtures", "references", "tiny-sd", "cpu");

/**
 * Models as users bring them (not shipped), each with the reference set diffusers made for it
 * (scripts/make_fixtures.sh). The optimum export is of the tiny model itself, so its set is REFS.
 */
export const USER_FIXTURES: readonly { readonly name: string; readonly model: string; readonly refs: string }[] = [
  { name: "tiny-sd-optimum-onnx", model: path.join(ROOT, "fixtures", "models", "tiny-sd-optimum-onnx"), refs: REFS },
  ...["tiny-sd-3block-linear", "tiny-sd-2block-euler", "tiny-sd-legacy-pndm"].map((name) => ({
    name: `${name}-onnx`,
    model: path.join(ROOT, "fixtures", "models", `${name}-onnx`),
    refs: path.join(ROOT, "fixtures", "references", name, "cpu"),
  })),
];
