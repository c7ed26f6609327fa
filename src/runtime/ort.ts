/**
 * The one import of onnxruntime-node in the project (src/runtime/ort-node.ts uses it), so that
 * telemetry is switched off (src/util/telemetry-off.ts) before the native binding is loaded.
 * ES module semantics and TypeScript's CommonJS output both evaluate these imports in order.
 */
import "../util/telemetry-off";
export * from "onnxruntime-node";
