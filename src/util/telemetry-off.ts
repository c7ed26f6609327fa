/**
 * onnxruntime-node's native library ships with telemetry on (Linux too): at environment creation
 * it reads /etc/machine-id, writes a device id and an event database under
 * $HOME/.cache/Microsoft/DeveloperTools/.onnxruntime/, leaves $TMPDIR/mat-debug-<pid>.log and
 * $TMPDIR/.ses behind, and resolves an upload host. A conformance tool that runs in CI must not
 * phone home or leave files, so it is off unless the user set ORT_DISABLE_TELEMETRY themselves.
 * The native code reads the variable with getenv() when its environment is first created, so this
 * module must run before onnxruntime-node is loaded: src/runtime/ort.ts imports it first.
 */
const value = process.env.ORT_DISABLE_TELEMETRY;
if (value === undefined || value === "") process.env.ORT_DISABLE_TELEMETRY = "1";

export {};
