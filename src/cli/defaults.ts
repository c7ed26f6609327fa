import * as path from "node:path";

/** The package root (dist/cli/ or src/cli/ -> ../..). */
export const PACKAGE_ROOT = path.resolve(__dirname, "..", "..");
/** The bundled tiny fixture, so every command runs out of the box. */
export const DEFAULT_MODEL = path.join(PACKAGE_ROOT, "fixtures", "models", "tiny-sd-onnx");
export const DEFAULT_INPAINT_MODEL = path.join(PACKAGE_ROOT, "fixtures", "models", "tiny-sd-inpaint-onnx");
export const DEFAULT_REFERENCES = path.join(PACKAGE_ROOT, "fixtures", "references", "tiny-sd", "cpu");
// eslint-disable-next-line @typescript-eslint/no-var-requires
export const VERSION: string = require(path.join(PACKAGE_ROOT, "package.json")).version;
