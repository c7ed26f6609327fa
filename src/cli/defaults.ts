import * as fs from "node:fs";
import * as path from "node:path";
import { packageVersion } from "../runtime/package-version";

/** The package root (dist/cli/ or src/cli/ -> ../..). */
export const PACKAGE_ROOT = path.resolve(__dirname, "..", "..");
/**
 * The bundled tiny fixture with random weights, which the bundled reference set was made from:
 * conformance and sensitivity run on it by default.
 */
export const DEFAULT_MODEL = path.join(PACKAGE_ROOT, "fixtures", "models", "tiny-sd-onnx");
/**
 * What `generate` draws with by default: shapes-sd, a small model trained from scratch to draw what
 * its prompt says ("a red circle on a blue background, left"; scripts/train_shapes_model.py).
 */
export const DEFAULT_GENERATE_MODEL = path.join(PACKAGE_ROOT, "fixtures", "models", "shapes-sd-onnx");
export const DEFAULT_INPAINT_MODEL = path.join(PACKAGE_ROOT, "fixtures", "models", "tiny-sd-inpaint-onnx");
export const DEFAULT_REFERENCES = path.join(PACKAGE_ROOT, "fixtures", "references", "tiny-sd", "cpu");
export const VERSION: string = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, "package.json"), "utf8")).version;
/** The onnxruntime-node version in use, for reports. */
export const ORT_VERSION: string = packageVersion("onnxruntime-node");
