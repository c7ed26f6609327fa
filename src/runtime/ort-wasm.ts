/**
 * Runtime `ort-wasm`: onnxruntime-web's WebAssembly backend, in Node. The package runs in a
 * worker thread of its own: its WASM glue is an ES module it imports dynamically, which a
 * CommonJS host that evaluates code in a VM context (jest) cannot do, and the worker keeps the
 * WASM heap (and its threads, env.wasm.numThreads) apart from the harness. Tensors cross as
 * binary: feeds are copied in by structured clone, outputs are transferred back.
 *
 * onnxruntime-web cannot read files: the model and its external data (model.onnx_data) are read
 * here and handed over as bytes, the external data under the path the model's initializers name
 * (the externalData session option). Everything lives in one 32-bit WASM heap, so a model of
 * 4 GiB or more with its external data is refused before anything is read.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { HarnessError, ExitCode } from "../errors";
import { readGraph } from "../onnx/graph-outputs";
import type { DType, TypedData } from "../tensor/tensor";
import { packageVersion } from "./package-version";
import type { IOSpec, Runtime, RuntimeDescription, RuntimeSession, RuntimeTensor, SessionSettings } from "./types";

/** WebAssembly's 32-bit address space: the whole heap, weights and activations, fits in 4 GiB. */
export const WASM_ADDRESS_SPACE = 4 * 1024 ** 3;

const ORT_WEB_VERSION = packageVersion("onnxruntime-web");

/**
 * The worker, as source: it needs nothing of the harness, so it is evaluated as is, from dist/
 * and from jest's TypeScript alike. Requests: {id, op: "load" | "run" | "release", ...};
 * replies {id, ok, ...} or {id, ok: false, message}.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const ort = require(workerData.ortPath);
if (workerData.numThreads > 0) ort.env.wasm.numThreads = workerData.numThreads;
ort.env.logLevel = "fatal";
const sessions = new Map();
let next = 1;
const meta = (list) => list.map((m) => ({ name: m.name, type: m.isTensor ? String(m.type) : "non-tensor", shape: m.isTensor ? Array.from(m.shape) : [] }));
// an output that is a view (of the WASM heap, or a shared buffer) is copied before it is transferred
const own = (a) => (a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && !(a.buffer instanceof SharedArrayBuffer) ? a : a.slice());
parentPort.on("message", async (msg) => {
  try {
    if (msg.op === "load") {
      const s = await ort.InferenceSession.create(msg.model, msg.options);
      const id = next++;
      sessions.set(id, s);
      parentPort.postMessage({ id: msg.id, ok: true, session: id, inputs: meta(s.inputMetadata), outputs: meta(s.outputMetadata) });
    } else if (msg.op === "run") {
      const s = sessions.get(msg.session);
      if (!s) throw new Error("session used after release");
      const feeds = {};
      for (const [name, t] of Object.entries(msg.feeds)) feeds[name] = new ort.Tensor(t.dtype, t.data, t.dims);
      const r = msg.outputs ? await s.run(feeds, msg.outputs) : await s.run(feeds);
      const outputs = {};
      const transfer = [];
      for (const [name, t] of Object.entries(r)) {
        const data = own(t.data);
        outputs[name] = { dtype: t.type, dims: Array.from(t.dims), data };
        transfer.push(data.buffer);
      }
      parentPort.postMessage({ id: msg.id, ok: true, outputs }, transfer);
    } else if (msg.op === "release") {
      const s = sessions.get(msg.session);
      sessions.delete(msg.session);
      if (s) await s.release();
      parentPort.postMessage({ id: msg.id, ok: true });
    }
  } catch (e) {
    parentPort.postMessage({ id: msg.id, ok: false, message: String((e && e.message) || e) });
  }
});
`;

interface Reply {
  readonly id: number;
  readonly ok: boolean;
  readonly message?: string;
  readonly session?: number;
  readonly inputs?: IOSpec[];
  readonly outputs?: IOSpec[] | Record<string, { dtype: string; dims: number[]; data: TypedData }>;
}

/** One worker and its pending requests; referenced (keeping Node alive) only while a request is pending. */
class WasmWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private dead: Error | null = null;

  constructor(readonly numThreads: number) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { ortPath: require.resolve("onnxruntime-web"), numThreads } });
    this.worker.unref();
    this.worker.on("message", (r: Reply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if (this.pending.size === 0) this.worker.unref();
      if (r.ok) p.resolve(r);
      else p.reject(new Error(r.message ?? "failed"));
    });
    const fail = (e: Error) => {
      this.dead ??= e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    this.worker.on("error", (e) => fail(new Error(`onnxruntime-web worker failed: ${String(e.message ?? e).split("\n")[0]}`)));
    this.worker.on("exit", (code) => fail(new Error(`onnxruntime-web worker exited (code ${code})`)));
  }

  request(msg: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<Reply> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ ...msg, id }, transfer);
    });
  }

  async terminate(): Promise<void> {
    this.dead ??= new Error("runtime ort-wasm closed");
    await this.worker.terminate();
  }
}

/** A file's bytes in an ArrayBuffer of their own (transferable: not a slice of Node's buffer pool). */
function ownBytes(file: string): Uint8Array {
  const b = fs.readFileSync(file);
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength) return new Uint8Array(b.buffer);
  return new Uint8Array(b);
}

function tooBig(file: string, bytes: number): HarnessError {
  return new HarnessError(
    `${file}: ${(bytes / 1024 ** 3).toFixed(2)} GiB with its external data, over WebAssembly's 4 GiB address space (runtime ort-wasm); run it with --runtime ort-node`,
    ExitCode.usage,
  );
}

class WasmSession implements RuntimeSession {
  private released = false;

  constructor(
    private readonly worker: WasmWorker,
    private readonly id: number,
    readonly inputs: readonly IOSpec[],
    readonly outputs: readonly IOSpec[],
  ) {}

  async run(feeds: Readonly<Record<string, RuntimeTensor>>, outputs?: readonly string[]): Promise<Record<string, RuntimeTensor>> {
    if (this.released) throw new Error("session used after release");
    const f: Record<string, { dtype: string; dims: readonly number[]; data: TypedData }> = {};
    for (const [name, t] of Object.entries(feeds)) f[name] = { dtype: t.dtype, dims: [...t.dims], data: t.data };
    const r = await this.worker.request({ op: "run", session: this.id, feeds: f, outputs: outputs ? [...outputs] : undefined });
    const out: Record<string, RuntimeTensor> = {};
    for (const [name, t] of Object.entries(r.outputs as Record<string, { dtype: string; dims: number[]; data: TypedData }>)) {
      out[name] = { dtype: t.dtype as DType, dims: t.dims, data: t.data };
    }
    return out;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.worker.request({ op: "release", session: this.id }).catch(() => undefined);
  }
}

export class OrtWasmRuntime implements Runtime {
  readonly name = "ort-wasm";
  private worker: WasmWorker | null = null;

  async load(file: string, settings: SessionSettings): Promise<RuntimeSession> {
    const threads = settings.threads ?? 0;
    const dir = path.dirname(file);
    const modelBytes = fs.statSync(file).size;
    if (modelBytes >= WASM_ADDRESS_SPACE) throw tooBig(file, modelBytes);
    const model = ownBytes(file);
    // the external files the initializers name
    const graph = readGraph(Buffer.from(model.buffer, model.byteOffset, model.byteLength), file);
    const external = [...graph.externalFiles].map((rel) => {
      const p = path.resolve(dir, rel);
      let size: number;
      try {
        size = fs.statSync(p).size;
      } catch {
        throw new HarnessError(`${file}: its external weights ${rel} are missing (expected at ${p})`, ExitCode.usage);
      }
      return { rel, file: p, size };
    });
    const total = modelBytes + external.reduce((s, e) => s + e.size, 0);
    if (total >= WASM_ADDRESS_SPACE) throw tooBig(file, total);
    if (this.worker && this.worker.numThreads !== threads) {
      throw new HarnessError(
        `threads: runtime ort-wasm already runs with ${this.worker.numThreads} threads (env.wasm.numThreads is set once per worker), asked for ${threads}`,
        ExitCode.usage,
      );
    }
    this.worker ??= new WasmWorker(threads);
    const externalData = external.map((e) => ({ path: e.rel, data: ownBytes(e.file) }));
    const options = {
      executionProviders: ["wasm"],
      graphOptimizationLevel: settings.graphOptimizationLevel ?? "all",
      executionMode: "sequential",
      enableMemPattern: settings.enableMemPattern ?? true,
      enableCpuMemArena: settings.enableCpuMemArena ?? false,
      logSeverityLevel: 4,
      ...(externalData.length ? { externalData } : {}),
    };
    const r = await this.worker.request({ op: "load", model, options }, [
      model.buffer as ArrayBuffer,
      ...externalData.map((e) => e.data.buffer as ArrayBuffer),
    ]);
    return new WasmSession(this.worker, r.session!, r.inputs!, r.outputs as IOSpec[]);
  }

  describe(): RuntimeDescription {
    const cpu = os.cpus()[0]?.model?.trim() || "unknown CPU";
    return {
      runtime: this.name,
      package: "onnxruntime-web",
      version: ORT_WEB_VERSION,
      executionProvider: "wasm",
      device: `WebAssembly in Node ${process.versions.node} (${cpu})`,
      threads: this.worker?.numThreads ?? 0,
    };
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    await w?.terminate();
  }
}
