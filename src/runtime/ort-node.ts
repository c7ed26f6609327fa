/**
 * Runtime `ort-node` (the default): onnxruntime-node's CPU execution provider, in process.
 * Session options are chosen here, deliberately: see SessionSettings for the defaults' reasons.
 */
import * as os from "node:os";
import type * as Ort from "./ort";
import type { DType, TypedData } from "../tensor/tensor";
import { packageVersion } from "./package-version";
import { missingPackageToHarness } from "../errors";
import type { IOSpec, Runtime, RuntimeDescription, RuntimeSession, RuntimeTensor, SessionSettings } from "./types";

/**
 * onnxruntime-node's native binding, loaded when the first component loads: a command that only
 * reads JSON (report merge) and a run on another runtime never load it.
 */
let binding: typeof Ort | null = null;
function ort(): typeof Ort {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a deferred load, see above
    binding ??= require("./ort") as typeof Ort;
  } catch (e) {
    // an incomplete install names the package, not the model that happened to load first
    throw missingPackageToHarness(e) ?? e;
  }
  return binding;
}

/** The onnxruntime-node version in use, for reports. */
/** The onnxruntime-node version in use, for reports. */
export const ORT_NODE_VERSION = packageVersion("onnxruntime-node");

function specs(meta: readonly Ort.InferenceSession.ValueMetadata[]): IOSpec[] {
  return meta.map((m) => ({
    name: m.name,
    type: m.isTensor ? String(m.type) : "non-tensor",
    shape: m.isTensor ? (m.shape as (number | string)[]) : [],
  }));
}

class OrtNodeSession implements RuntimeSession {
  private session: Ort.InferenceSession | null;
  readonly inputs: readonly IOSpec[];
  readonly outputs: readonly IOSpec[];

  constructor(session: Ort.InferenceSession) {
    this.session = session;
    this.inputs = specs(session.inputMetadata);
    this.outputs = specs(session.outputMetadata);
  }

  async run(feeds: Readonly<Record<string, RuntimeTensor>>, outputs?: readonly string[]): Promise<Record<string, RuntimeTensor>> {
    if (!this.session) throw new Error("session used after release");
    const f: Record<string, Ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds))
      f[name] = new (ort().Tensor)(t.dtype as Ort.Tensor.Type, t.data as Ort.Tensor.DataType, t.dims);
    const r = outputs ? await this.session.run(f, [...outputs]) : await this.session.run(f);
    const out: Record<string, RuntimeTensor> = {};
    for (const [name, t] of Object.entries(r)) out[name] = { dtype: t.type as DType, dims: t.dims, data: t.data as TypedData };
    return out;
  }

  async release(): Promise<void> {
    const s = this.session;
    this.session = null;
    await s?.release();
  }
}

export class OrtNodeRuntime implements Runtime {
  readonly name = "ort-node";
  private threads = 0;

  async load(file: string, settings: SessionSettings): Promise<RuntimeSession> {
    this.threads = settings.threads ?? 0;
    const options: Ort.InferenceSession.SessionOptions = {
      executionProviders: ["cpu"],
      graphOptimizationLevel: settings.graphOptimizationLevel ?? "all",
      intraOpNumThreads: settings.threads ?? 0,
      interOpNumThreads: 1,
      executionMode: "sequential",
      enableMemPattern: settings.enableMemPattern ?? true,
      enableCpuMemArena: settings.enableCpuMemArena ?? false,
      // ORT's own error lines would bypass the CLI's one-line errors; its failures reach us as exceptions
      logSeverityLevel: 4,
    };
    // Loading by path lets ORT find external weights (model.onnx_data) beside the model.
    return new OrtNodeSession(await ort().InferenceSession.create(file, options));
  }

  describe(): RuntimeDescription {
    return {
      runtime: this.name,
      package: "onnxruntime-node",
      version: ORT_NODE_VERSION,
      executionProvider: "cpu",
      device: os.cpus()[0]?.model?.trim() || "unknown CPU",
      threads: this.threads,
    };
  }

  async close(): Promise<void> {}
}
