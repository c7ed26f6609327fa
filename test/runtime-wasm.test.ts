/**
 * Runtime ort-wasm (onnxruntime-web's WASM backend in a Node worker): it loads the bundled
 * components, external data included, gives onnxruntime-node's outputs up to float32 reordering,
 * says what it is, and refuses a model over WebAssembly's 4 GiB address space before loading it.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createRuntime, RUNTIMES } from "../src/runtime/index";
import type { Runtime, RuntimeTensor } from "../src/runtime/types";
import { OnnxComponent, ComponentKind } from "../src/pipeline/onnx-model";
import { tensorMetrics } from "../src/conformance/judge/metrics";
import { HarnessError, ExitCode } from "../src/errors";
import { copyModel, externalizeInitializers } from "./helpers/onnx-edit";
import { runtimeFlag } from "../src/cli/parse";

const ROOT = path.resolve(__dirname, "..");
const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-wasm-"));
const wasm = createRuntime("ort-wasm");
const node = createRuntime("ort-node");
afterAll(async () => {
  await wasm.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A deterministic input in [-1, 1) (no RNG: the same on every machine). */
function ramp(n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => ((i * 7919) % 2000) / 1000 - 1);
}

const FEEDS: Record<Exclude<ComponentKind, "vae_encoder">, Record<string, RuntimeTensor>> = {
  text_encoder: {
    input_ids: { dtype: "int32", dims: [1, 77], data: Int32Array.from({ length: 77 }, (_, i) => (i < 5 ? 49406 + (i % 2) : 49407) % 1000) },
  },
  unet: {
    sample: { dtype: "float32", dims: [2, 4, 8, 8], data: ramp(2 * 4 * 8 * 8) },
    timestep: { dtype: "float32", dims: [1], data: Float32Array.of(501) },
    encoder_hidden_states: { dtype: "float32", dims: [2, 77, 8], data: ramp(2 * 77 * 8) },
  },
  vae_decoder: { latent_sample: { dtype: "float32", dims: [1, 4, 8, 8], data: ramp(4 * 8 * 8) } },
};

async function runOn(runtime: Runtime, kind: ComponentKind, file: string, feeds: Record<string, RuntimeTensor>): Promise<RuntimeTensor> {
  const c = await OnnxComponent.load(kind, file, { threads: 2, runtime });
  try {
    // feeds typed as this export declares them (the text encoder takes int32 or int64 ids)
    const typed: Record<string, RuntimeTensor> = {};
    for (const [name, t] of Object.entries(feeds)) {
      typed[name] =
        c.inputType(name) === "int64" && t.dtype === "int32"
          ? { dtype: "int64", dims: t.dims, data: BigInt64Array.from(t.data as Int32Array, BigInt) }
          : t;
    }
    const r = await c.run(typed);
    return r[c.outputNames[0]];
  } finally {
    await c.release();
  }
}

test("both runtimes are in the registry, ort-node first (the default)", () => {
  expect(RUNTIMES.map((r) => r.name).slice(0, 2)).toEqual(["ort-node", "ort-wasm"]);
  expect(() => createRuntime("tensorflow")).toThrow(/--runtime: unknown runtime "tensorflow"; known: ort-node, ort-wasm/);
});

test.each(Object.keys(FEEDS) as (keyof typeof FEEDS)[])(
  "ort-wasm runs the %s as onnxruntime-node does, up to float32 reordering",
  async (kind) => {
    const dir = { text_encoder: "text_encoder", unet: "unet", vae_decoder: "vae_decoder" }[kind];
    const file = path.join(TINY, dir, "model.onnx");
    const a = await runOn(wasm, kind, file, FEEDS[kind]);
    const b = await runOn(node, kind, file, FEEDS[kind]);
    expect(a.dtype).toBe("float32");
    expect(a.dims).toEqual(b.dims);
    const m = tensorMetrics(a.data as Float32Array, b.data as Float32Array, b.dims);
    console.log(`ort-wasm vs ort-node, ${kind}: relL2 ${m.relL2.toExponential(2)}, maxAbs ${m.maxAbs.toExponential(2)}`);
    expect(m.nanCount + m.infCount).toBe(0);
    // measured on x86-64 (AMD EPYC): 1e-7..1e-6; float32 reordering stays far below this
    expect(m.relL2).toBeLessThan(1e-5);
    expect(m.relL2).toBeGreaterThanOrEqual(0);
  },
);

test("ort-wasm describes itself: onnxruntime-web at onnxruntime-node's version, the wasm backend, its threads", () => {
  const d = wasm.describe();
  expect(d).toMatchObject({ runtime: "ort-wasm", package: "onnxruntime-web", executionProvider: "wasm", threads: 2 });
  expect(d.version).toBe(node.describe().version);
  expect(d.device).toMatch(/WebAssembly in Node/);
});

test("external weights (model.onnx_data) reach onnxruntime-web as the externalData option", async () => {
  const ext = copyModel(TINY, tmp, "external");
  const file = path.join(ext, "unet", "model.onnx");
  expect(externalizeInitializers(file, "model.onnx_data").length).toBeGreaterThan(0);
  const a = await runOn(wasm, "unet", file, FEEDS.unet);
  const b = await runOn(node, "unet", path.join(TINY, "unet", "model.onnx"), FEEDS.unet);
  expect(tensorMetrics(a.data as Float32Array, b.data as Float32Array, b.dims).relL2).toBeLessThan(1e-5);
});

test("a model of 4 GiB or more with its external data is refused in one line before it is loaded", async () => {
  const big = copyModel(TINY, tmp, "big");
  const file = path.join(big, "vae_decoder", "model.onnx");
  externalizeInitializers(file, "model.onnx_data");
  // sparse: the size is what counts; the data file is never read
  fs.truncateSync(path.join(big, "vae_decoder", "model.onnx_data"), 4 * 1024 ** 3);
  const err = await OnnxComponent.load("vae_decoder", file, { threads: 2, runtime: wasm }).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(HarnessError);
  expect((err as HarnessError).exitCode).toBe(ExitCode.usage);
  expect((err as Error).message).not.toContain("\n");
  expect((err as Error).message).toContain(file);
  expect((err as Error).message).toMatch(/over WebAssembly's 4 GiB address space/);
  // ort-node has no such limit: the same folder is only too big for the WASM heap
});

test("a second thread count for one ort-wasm runtime is refused (env.wasm.numThreads is set once)", async () => {
  const err = await OnnxComponent.load("vae_decoder", path.join(TINY, "vae_decoder", "model.onnx"), { threads: 1, runtime: wasm }).then(
    () => null,
    (e: unknown) => e,
  );
  expect((err as Error).message).toMatch(/threads: runtime ort-wasm already runs with 2 threads/);
});

test("an interrupt (the CLI's abort signal) closes the runtime at once: a call in flight ends, its worker with it", async () => {
  const controller = new AbortController();
  const runtime = runtimeFlag("ort-wasm", controller.signal);
  const c = await OnnxComponent.load("unet", path.join(TINY, "unet", "model.onnx"), { threads: 2, runtime });
  const call = c.run(FEEDS.unet);
  controller.abort();
  await expect(call).rejects.toThrow(/inference failed \(onnxruntime-web worker (exited|failed)|runtime ort-wasm closed/);
  // closed, not broken: the next load starts a fresh worker
  const again = await OnnxComponent.load("vae_decoder", path.join(TINY, "vae_decoder", "model.onnx"), { threads: 2, runtime });
  await again.release();
  await runtime.close();
});
