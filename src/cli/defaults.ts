import * as path from "node:path";
import { PACKAGE_ROOT } from "../util/package";

/** The package root and version live below the library (src/util/package.ts); the CLI's defaults follow. */
export { PACKAGE_ROOT, VERSION } from "../util/package";
/**
 * The bundled tiny fixture with random weights, which the bundled reference set was made from:
 * conformance and sensitivity run on it by default.
 */
export const DEFAULT_MODEL = path.join(PACKAGE_ROOT, "fixtures", "models", "tiny-sd-onnx");
/**
 * What `generate` draws with by default: shapes-sd, a small model trained from scratch on captioned
 * drawings ("a red circle on a blue background, left"; scripts/train_shapes_model.py).
 */
export const DEFAULT_GENERATE_MODEL = path.join(PACKAGE_ROOT, "fixtures", "models", "shapes-sd-onnx");
export const DEFAULT_INPAINT_MODEL = path.join(PACKAGE_ROOT, "fixtures", "models", "tiny-sd-inpaint-onnx");
export const DEFAULT_REFERENCES = path.join(PACKAGE_ROOT, "fixtures", "references", "tiny-sd", "cpu");
