/**
 * A standing reproduction of the onnxruntime-web WebGPU bug that makes the inpainting U-Net wrong
 * on chromium-webgpu (docs/other-runtimes.md): a 3x3 Conv with 9 input channels is wrong (its
 * Conv2dMM program reads the input in vec3 steps and indexes it with the vec4 path's channel
 * index), a 12-channel control beside it is exact to float32, and chromium-wasm is exact on both.
 * Judged against a float64 convolution written here, not against any runtime.
 *
 * The 9-channel figure is asserted as measured (relL2 0.83 against float64, onnxruntime-web 1.30.0,
 * SwiftShader): when an upstream fix lands, this test fails, and the note in
 * docs/other-runtimes.md and conformance/README.md's runtime table should go with it.
 * Skipped with a notice where no Chromium is installed or Chromium offers no WebGPU adapter.
 * The fixture comes from scripts/make_webgpu_conv_repro.py.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { ChromiumRuntime } from "../src/runtime/chromium";
import type { RuntimeTensor } from "../src/runtime/types";
import { readFloatInitializers } from "../src/onnx/initializers";
import { HarnessError } from "../src/errors";

const FIXTURE = path.resolve(__dirname, "fixtures", "webgpu-conv-channels.onnx");
const HAVE_CHROMIUM = ["/usr/bin/chromium", ...(process.env.PATH ?? "").split(path.delimiter).map((d) => path.join(d, "chromium"))].some(
  (p) => fs.existsSync(p),
);
if (!HAVE_CHROMIUM) console.warn("webgpu-conv-repro: skipped, no Chromium installed (Debian: apt-get install chromium)");
const maybe = HAVE_CHROMIUM ? describe : describe.skip;

jest.setTimeout(300_000);

const SIDE = 4;
const OUT_CHANNELS = 4;

function input(channels: number): Float32Array {
  return Float32Array.from({ length: channels * SIDE * SIDE }, (_, i) => Math.sin(0.37 * i + channels));
}

/** y[o, r, c] = b[o] + Σ_{ch, ky, kx} w[o, ch, ky, kx] · x[ch, r + ky - 1, c + kx - 1], zero padding 1, in float64. */
function conv3x3(x: Float32Array, w: Float32Array, b: Float32Array, channels: number): Float64Array {
  const y = new Float64Array(OUT_CHANNELS * SIDE * SIDE);
  for (let o = 0; o < OUT_CHANNELS; o++) {
    for (let r = 0; r < SIDE; r++) {
      for (let c = 0; c < SIDE; c++) {
        let acc = b[o];
        for (let ch = 0; ch < channels; ch++) {
          for (let ky = 0; ky < 3; ky++) {
            for (let kx = 0; kx < 3; kx++) {
              const ir = r + ky - 1;
              const ic = c + kx - 1;
              if (ir < 0 || ir >= SIDE || ic < 0 || ic >= SIDE) continue;
              acc += w[((o * channels + ch) * 3 + ky) * 3 + kx] * x[(ch * SIDE + ir) * SIDE + ic];
            }
          }
        }
        y[(o * SIDE + r) * SIDE + c] = acc;
      }
    }
  }
  return y;
}

function relL2(a: Float32Array, ref: Float64Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (a[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** relL2 against float64 of conv9 and conv12 on one runtime; null when it has no WebGPU adapter. */
async function measure(backend: "wasm" | "webgpu"): Promise<{ conv9: number; conv12: number } | null> {
  const weights = readFloatInitializers(FIXTURE, () => true);
  const runtime = new ChromiumRuntime(backend);
  try {
    let session;
    try {
      session = await runtime.load(FIXTURE, { threads: 1 });
    } catch (e) {
      if (backend === "webgpu" && e instanceof HarnessError && /adapter|navigator\.gpu/.test(e.message)) {
        console.warn(`webgpu-conv-repro: skipped on chromium-webgpu (${e.message})`);
        return null;
      }
      throw e;
    }
    const feeds: Record<string, RuntimeTensor> = {};
    for (const ch of [9, 12]) feeds[`x_conv${ch}`] = { dtype: "float32", dims: [1, ch, SIDE, SIDE], data: input(ch) };
    const out = await session.run(feeds);
    await session.release();
    const figure = (ch: number) =>
      relL2(out[`y_conv${ch}`].data as Float32Array, conv3x3(input(ch), weights.get(`w_conv${ch}`)!, weights.get(`b_conv${ch}`)!, ch));
    const r = { conv9: figure(9), conv12: figure(12) };
    console.log(
      `chromium-${backend} (${runtime.describe().device}) vs float64: relL2 conv9 ${r.conv9.toExponential(2)}, conv12 ${r.conv12.toExponential(2)}`,
    );
    return r;
  } finally {
    await runtime.close();
  }
}

maybe("onnxruntime-web WebGPU Conv, 9 input channels", () => {
  test("chromium-wasm: both Convs exact to float32 (the fixture and the float64 reference agree)", async () => {
    const r = await measure("wasm");
    expect(r!.conv9).toBeLessThan(1e-6);
    expect(r!.conv12).toBeLessThan(1e-6);
  });

  test("chromium-webgpu: the 12-channel control is exact, the 9-channel Conv is wrong (relL2 ≈ 1, measured)", async () => {
    const r = await measure("webgpu");
    if (!r) return;
    expect(r.conv12).toBeLessThan(1e-6);
    // measured 0.83 on this fixture (0.96–1.37 on other shapes with 6, 9, 15, 18, 21, 27 or 33 channels), SwiftShader,
    // onnxruntime-web 1.30.0; a fixed Conv gives ~1e-7 as the control does
    expect(r.conv9).toBeGreaterThan(0.3);
  });
});
