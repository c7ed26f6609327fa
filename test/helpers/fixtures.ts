import * as path from "node:path";

export const ROOT = path.resolve(__dirname, "..", "..");
export const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");
export const TINY_INPAINT = path.join(ROOT, "fixtures", "models", "tiny-sd-inpaint-onnx");
export const REFS = path.join(ROOT, "fixtures", "references", "tiny-sd", "cpu");
