/**
 * The runtime registry: one entry per runtime a port can be judged on. A runtime's package is
 * loaded when it first loads a component, so a run on one runtime never loads another's.
 */
import { HarnessError, ExitCode } from "../errors";
import type { Runtime } from "./types";
import { OrtNodeRuntime } from "./ort-node";
import { OrtWasmRuntime } from "./ort-wasm";
import { ChromiumRuntime } from "./chromium";

export type { Runtime, RuntimeSession, RuntimeTensor, RuntimeDescription, IOSpec, SessionSettings } from "./types";

export interface RuntimeEntry {
  readonly name: string;
  readonly describe: string;
  readonly create: () => Runtime;
}

export const RUNTIMES: readonly RuntimeEntry[] = [
  {
    name: "ort-node",
    describe: "onnxruntime-node, CPU execution provider (the default)",
    create: () => new OrtNodeRuntime(),
  },
  {
    name: "ort-wasm",
    describe: "onnxruntime-web, WebAssembly backend, in a Node worker thread",
    create: () => new OrtWasmRuntime(),
  },
  {
    name: "chromium-wasm",
    describe: "onnxruntime-web, WebAssembly backend, in the system's headless Chromium",
    create: () => new ChromiumRuntime("wasm"),
  },
  {
    name: "chromium-webgpu",
    describe: "onnxruntime-web, WebGPU backend, in the system's headless Chromium",
    create: () => new ChromiumRuntime("webgpu"),
  },
];

export const DEFAULT_RUNTIME = "ort-node";

/** A fresh runtime by registry name; an unknown name is a usage error naming `flag`. */
export function createRuntime(name: string = DEFAULT_RUNTIME, flag = "--runtime"): Runtime {
  const entry = RUNTIMES.find((r) => r.name === name);
  if (!entry)
    throw new HarnessError(
      `${flag}: unknown runtime ${JSON.stringify(name)}; known: ${RUNTIMES.map((r) => r.name).join(", ")}`,
      ExitCode.usage,
    );
  return entry.create();
}

let shared: Runtime | null = null;

/** The default runtime, one per process, for callers that name none. */
export function defaultRuntime(): Runtime {
  shared ??= createRuntime(DEFAULT_RUNTIME);
  return shared;
}

/** runtimeText formats a RuntimeDescription, so it lives beside it: report writers need no registry. */
export { runtimeText } from "./types";
