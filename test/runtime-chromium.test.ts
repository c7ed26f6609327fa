/**
 * Runtimes chromium-wasm and chromium-webgpu: onnxruntime-web inside the system's headless
 * Chromium. They give onnxruntime-node's outputs up to float32 reordering, record the browser and
 * the WebGPU adapter, refuse a WebGPU without an adapter in one line (exit 2), and leave no browser
 * running after close(), after a failed load or a failed start. Skipped where no Chromium is
 * installed (Debian: apt-get install chromium).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createRuntime } from "../src/runtime/index";
import { ChromiumRuntime } from "../src/runtime/chromium";
import type { Runtime, RuntimeTensor } from "../src/runtime/types";
import { OnnxComponent, ComponentKind } from "../src/pipeline/onnx-model";
import { tensorMetrics } from "../src/conformance/judge/metrics";
import { HarnessError, ExitCode } from "../src/errors";

const ROOT = path.resolve(__dirname, "..");
const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");
const HAVE_CHROMIUM = ["/usr/bin/chromium", ...(process.env.PATH ?? "").split(path.delimiter).map((d) => path.join(d, "chromium"))].some(
  (p) => fs.existsSync(p),
);
const maybe = HAVE_CHROMIUM ? describe : describe.skip;

jest.setTimeout(240_000);

function ramp(n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => ((i * 7919) % 2000) / 1000 - 1);
}

const FEEDS: Record<"text_encoder" | "unet" | "vae_decoder", Record<string, RuntimeTensor>> = {
  text_encoder: { input_ids: { dtype: "int32", dims: [1, 77], data: Int32Array.from({ length: 77 }, (_, i) => (i < 5 ? 400 + i : 999)) } },
  unet: {
    sample: { dtype: "float32", dims: [2, 4, 8, 8], data: ramp(2 * 4 * 8 * 8) },
    timestep: { dtype: "float32", dims: [1], data: Float32Array.of(501) },
    encoder_hidden_states: { dtype: "float32", dims: [2, 77, 8], data: ramp(2 * 77 * 8) },
  },
  vae_decoder: { latent_sample: { dtype: "float32", dims: [1, 4, 8, 8], data: ramp(4 * 8 * 8) } },
};

async function runOn(runtime: Runtime, kind: ComponentKind, feeds: Record<string, RuntimeTensor>): Promise<RuntimeTensor> {
  const c = await OnnxComponent.load(kind, path.join(TINY, kind, "model.onnx"), { threads: 2, runtime });
  try {
    const typed: Record<string, RuntimeTensor> = {};
    for (const [name, t] of Object.entries(feeds)) {
      typed[name] =
        c.inputType(name) === "int64" && t.dtype === "int32"
          ? { dtype: "int64", dims: t.dims, data: BigInt64Array.from(t.data as Int32Array, BigInt) }
          : t;
    }
    return (await c.run(typed))[c.outputNames[0]];
  } finally {
    await c.release();
  }
}

/** Whether a process is still there (a zombie left to a reaper-less init counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

function browserPid(runtime: Runtime): number {
  const s = (runtime as unknown as { last: { browser: { process(): { pid?: number } | null } } | null }).last;
  return s?.browser.process()?.pid ?? -1;
}

maybe.each(["chromium-wasm", "chromium-webgpu"])("%s", (name) => {
  const runtime = createRuntime(name);
  const reference = createRuntime("ort-node");
  afterAll(() => runtime.close());

  test.each(Object.keys(FEEDS) as (keyof typeof FEEDS)[])(`${name} runs the %s as onnxruntime-node does`, async (kind) => {
    const a = await runOn(runtime, kind, FEEDS[kind]);
    const b = await runOn(reference, kind, FEEDS[kind]);
    expect(a.dims).toEqual(b.dims);
    const m = tensorMetrics(a.data as Float32Array, b.data as Float32Array, b.dims);
    console.log(`${name} vs ort-node, ${kind}: relL2 ${m.relL2.toExponential(2)}, maxAbs ${m.maxAbs.toExponential(2)}`);
    expect(m.nanCount + m.infCount).toBe(0);
    expect(m.relL2).toBeLessThan(name === "chromium-webgpu" ? 1e-4 : 1e-5);
  });

  test(`${name} records the browser${name === "chromium-webgpu" ? " and the WebGPU adapter" : ""}, and close() ends the browser`, async () => {
    const d = runtime.describe();
    expect(d).toMatchObject({ runtime: name, package: "onnxruntime-web", threads: 2 });
    expect(d.device).toMatch(/^Chrome\/\d+/);
    if (name === "chromium-webgpu") expect(d.device).toMatch(/WebGPU adapter \S.*, Dawn toggles disable_workgroup_init$/);
    const pid = browserPid(runtime);
    expect(alive(pid)).toBe(true);
    await runtime.close();
    expect(alive(pid)).toBe(false);
  });
});

maybe("chromium, failures", () => {
  test("a model the page cannot load is one line, and the browser still closes", async () => {
    const runtime = createRuntime("chromium-wasm");
    try {
      // external weights cut short, so they end before the initializers they hold: onnxruntime-web fails inside the page
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-chromium-"));
      for (const f of ["model.onnx", "model.onnx_data"])
        fs.copyFileSync(path.join(ROOT, "fixtures", "broken", "external-data", "vae_decoder", f), path.join(dir, f));
      fs.truncateSync(path.join(dir, "model.onnx_data"), 100);
      const file = path.join(dir, "model.onnx");
      const err = await OnnxComponent.load("vae_decoder", file, { threads: 2, runtime }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(HarnessError);
      expect((err as Error).message).not.toContain("\n");
      expect((err as Error).message).toMatch(/model\.onnx: (its external weights cannot be loaded|not a loadable ONNX model)/);
      fs.rmSync(dir, { recursive: true, force: true });
    } finally {
      const pid = browserPid(runtime);
      await runtime.close();
      expect(alive(pid)).toBe(false);
    }
  });

  test("WebGPU without an adapter (the unsafe-WebGPU flags left out) is one line, exit 2, and no browser is left", async () => {
    const runtime = new ChromiumRuntime("webgpu", { webgpuFlags: false });
    const before = fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p) && alive(Number(p)) && /chromium/.test(safeCmd(p))).length;
    const err = await OnnxComponent.load("vae_decoder", path.join(TINY, "vae_decoder", "model.onnx"), { threads: 2, runtime }).then(
      () => null,
      (e: unknown) => e,
    );
    await runtime.close();
    expect(err).toBeInstanceOf(HarnessError);
    expect((err as HarnessError).exitCode).toBe(ExitCode.usage);
    expect((err as Error).message).not.toContain("\n");
    expect((err as Error).message).toMatch(/--runtime chromium-webgpu: .*(no adapter|navigator\.gpu is missing)/);
    const after = fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p) && alive(Number(p)) && /chromium/.test(safeCmd(p))).length;
    expect(after).toBeLessThanOrEqual(before);
  });
});

function safeCmd(pid: string): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return "";
  }
}
