// Jest runs tests in a separate V8 context whose typed-array constructors differ from the main
// context's; onnxruntime-node's native binding hands back main-context arrays, which then fail
// onnxruntime-common's `instanceof Float32Array` checks. Share the main context's constructors.
const { TestEnvironment } = require("jest-environment-node");

class SharedTypedArrayEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of [
      "ArrayBuffer",
      "Uint8Array",
      "Int8Array",
      "Uint16Array",
      "Int16Array",
      "Uint32Array",
      "Int32Array",
      "Float32Array",
      "Float64Array",
      "BigInt64Array",
      "BigUint64Array",
      "Uint8ClampedArray",
      "Buffer",
    ]) {
      this.global[name] = globalThis[name];
    }
  }
}

module.exports = SharedTypedArrayEnvironment;
