/**
 * The runtime interface: what the pipeline and the conformance stages need from whatever runs an
 * ONNX component (onnxruntime-node, onnxruntime-web's WASM backend, ...). Modelled on
 * onnxruntime js/common's backend: create a session handler from a file, then its input and
 * output names, run, release; nothing of the runtime's own types leaks. Tensors in and out are
 * the project's (src/tensor/), so judging never knows which runtime produced a tensor.
 */
import type { Tensor, TypedData } from "../tensor/tensor";
import { HarnessError, ExitCode } from "../errors";

/** A tensor as it crosses the runtime boundary: float16 travels as its raw bits in a Uint16Array. */
export type RuntimeTensor = Tensor<TypedData>;

/** One input or output of a loaded component, as the model declares it. */
export interface IOSpec {
  readonly name: string;
  /** element type: "float32", "float16", "int64", ... ("non-tensor" for sequences and maps) */
  readonly type: string;
  /** dims; symbolic dims are their names */
  readonly shape: readonly (number | string)[];
}

/** Options every runtime takes (each maps them to its own, or ignores what it cannot honour). */
export interface SessionSettings {
  /** intra-op threads; 0 lets the runtime choose */
  readonly threads?: number;
  readonly graphOptimizationLevel?: "disabled" | "basic" | "extended" | "all";
  /** ORT's memory-pattern planner: fastest for fixed shapes, which a generation has */
  readonly enableMemPattern?: boolean;
  /**
   * ORT's CPU arena keeps the largest activations it ever held. Off by default: at SD 1.5 size
   * (512x512, 2 threads) it took peak RSS from 11.2 GB to 6.8-7.3 GB with the same steady-state
   * step time; the cost is a slower first U-Net call per session (~18 s vs ~13 s). bench/RESULTS.md.
   */
  readonly enableCpuMemArena?: boolean;
}

/** What ran the components, as reports name it. */
export interface RuntimeDescription {
  /** the registry name: "ort-node", "ort-wasm" */
  readonly runtime: string;
  /** the package that computes, e.g. "onnxruntime-node" */
  readonly package: string;
  /** its version, e.g. "1.30.0" */
  readonly version: string;
  /** execution provider / backend: "cpu", "wasm" */
  readonly executionProvider: string;
  /** the device or adapter that computed: a CPU model, a GPU adapter */
  readonly device: string;
  /** threads the runtime was asked for (0: its own choice) */
  readonly threads: number;
}

/** One line for reports: `ort-wasm (onnxruntime-web 1.30.0, wasm, WebAssembly in Node 20.19.0 (AMD EPYC), 2 threads)`. */
export function runtimeText(d: {
  readonly runtime: string;
  readonly package: string;
  readonly version: string;
  readonly executionProvider: string;
  readonly device: string;
  readonly threads: number;
}): string {
  return `${d.runtime} (${d.package} ${d.version}, ${d.executionProvider}, ${d.device}, ${d.threads || "default"} threads)`;
}

/** One loaded component. */
export interface RuntimeSession {
  readonly inputs: readonly IOSpec[];
  readonly outputs: readonly IOSpec[];
  /** Run on `feeds`; `outputs` limits the fetched outputs (all when absent). Errors are thrown as Errors whose first line says why. */
  run(feeds: Readonly<Record<string, RuntimeTensor>>, outputs?: readonly string[]): Promise<Record<string, RuntimeTensor>>;
  release(): Promise<void>;
  /**
   * Run on `feeds` and return named module outputs (`conformance --localize`), where the runtime
   * computes them itself (a port's `modules` operation); `call` names the case in errors.
   * Present only on sessions of a runtime whose `modulesNotCovered` says it can.
   */
  runModules?(feeds: Readonly<Record<string, RuntimeTensor>>, modules: readonly ModuleRequest[], call: string): Promise<ModuleOutputs>;
}

/** One module whose output `--localize` asks a runtime for. */
export interface ModuleRequest {
  /** the PyTorch module path (diffusers): `down_blocks.0.resnets.0` */
  readonly name: string;
  /** the shape of the module's output in the reference */
  readonly shape: readonly number[];
  /**
   * Where the harness found them: tensors of the component's model.onnx, in graph order; the
   * module's output is the last of them that is float and of `shape` (src/onnx/graph-outputs.ts).
   * Absent when the export has no tensor for the module.
   */
  readonly tensors?: readonly string[];
}

/** A runtime's module outputs for one call: values by module name, and why the others have none. */
export interface ModuleOutputs {
  readonly values: ReadonlyMap<string, RuntimeTensor>;
  readonly missing: ReadonlyMap<string, string>;
}

export interface Runtime {
  readonly name: string;
  /** Load `file` (an ONNX model, its external data beside it). A refusal the runtime can name is a HarnessError; anything else an Error. */
  load(file: string, settings: SessionSettings): Promise<RuntimeSession>;
  describe(): RuntimeDescription;
  /**
   * Why a stage running these components (none: a stage of sd-harness's own code) says nothing of
   * this runtime, or null when it does. Optional: runtimes that run every component leave it out.
   */
  notCovered?(components: readonly string[]): string | null;
  /**
   * For runtimes that compute module outputs themselves (`--localize`), given the component's
   * model.onnx: null when its sessions offer `runModules`, else why this runtime localizes nothing
   * there. Absent: the harness runs a copy of the ONNX graph with the modules' tensors as extra outputs.
   */
  modulesNotCovered?(file: string): Promise<string | null>;
  /** Release what the runtime holds beyond its sessions (a worker); loading after close starts afresh. */
  close(): Promise<void>;
}

/**
 * A component the runtime does not run (a port that lists it as unsupported, with its reason):
 * the cases that need it are reported as skipped, "not covered", never as errors.
 */
export class NotCoveredError extends HarnessError {
  constructor(message: string) {
    // outside the conformance runner (generate) it is a usage error: this runtime cannot run that
    super(message, ExitCode.usage);
    this.name = "NotCoveredError";
  }
}
