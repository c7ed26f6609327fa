/**
 * Precision variants of the tiny model (fixtures/models/tiny-sd-{fp16,int8}-onnx, made by
 * scripts/quantize.py) run side by side through the suite: the drift must be ordered
 * fp32 < fp16 < int8, each variant must pass its own tolerance profile, and the stricter profiles
 * must reject the coarser variants (the suite tells them apart). Then fp16 overflows, reproduced
 * on the fixture and located by the suite.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runConformance, ModelSpec } from "../src/conformance/runner";
import { CaseResult, Report } from "../src/conformance/types";
import { loadTolerances, resolve, evaluate } from "../src/conformance/judge/tolerances";
import { ROOT, TINY, REFS } from "./helpers/fixtures";
import { copyModel, scaleInitializers } from "./helpers/onnx-edit";
import { readFloatInitializers } from "../src/onnx/initializers";
import { floatToHalf } from "../src/tensor/float16";

const FP16 = path.join(ROOT, "fixtures", "models", "tiny-sd-fp16-onnx");
const INT8 = path.join(ROOT, "fixtures", "models", "tiny-sd-int8-onnx");
const VARIANTS: ModelSpec[] = [
  { label: "fp32", dir: TINY },
  { label: "fp16", dir: FP16 },
  { label: "int8", dir: INT8 },
];

const ONLY = [
  "text_encoder:astronaut",
  "unet:txt2img-pndm-64x64-step00",
  "unet:txt2img-pndm-64x64-step05",
  "unet:txt2img-euler-a-64x64-step03",
  "unet:txt2img-pndm-64x64-free",
  "vae_decode:64x64",
  "vae_roundtrip:64x64",
  "end_to_end:txt2img-pndm-64x64",
];

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sd-variants-"));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function byModel(report: Report, model: string): CaseResult[] {
  return report.results.filter((r) => r.model === model && r.status !== "skip");
}

function get(report: Report, model: string, id: string): CaseResult {
  const r = report.results.find((x) => x.model === model && x.id === id);
  if (!r) throw new Error(`no result ${model} ${id}`);
  return r;
}

/** The same results judged under another profile, with the suite's own resolve / evaluate. */
function rejudge(report: Report, model: string, profile: string): CaseResult[] {
  const tol = loadTolerances();
  return byModel(report, model).map((r) => {
    const stageKey = r.stage === "unet" && r.id.endsWith("-free") ? "unet_free" : r.stage;
    const checks = evaluate(resolve(tol, profile, stageKey, r.id, model).limits, r.metrics, r.images ?? []);
    return { ...r, checks, status: checks.every((k) => k.ok) && !r.nonFinite ? "pass" : "fail" };
  });
}

function failedStages(results: CaseResult[]): string[] {
  return [...new Set(results.filter((r) => r.status !== "pass").map((r) => r.stage))].sort();
}

describe("fp32 / fp16 / int8 side by side", () => {
  let sideBySide: Report; // all three under the fp16 profile
  let int8Own: Report; // int8 under its own profile
  beforeAll(async () => {
    sideBySide = await runConformance({ models: VARIANTS, references: REFS, profile: "fp16", only: ONLY, outDir: null, threads: 1 });
    int8Own = await runConformance({ models: [VARIANTS[2]], references: REFS, profile: "int8", only: ONLY, outDir: null, threads: 1 });
  });

  test("the drift is ordered fp32 < fp16 < int8", () => {
    for (const id of ONLY.filter((x) => x.startsWith("unet:"))) {
      const tensor = id.endsWith("-free") ? "final_latents" : "out_sample";
      const [a, b, c] = ["fp32", "fp16", "int8"].map((m) => get(sideBySide, m, id).metrics[tensor].relL2);
      expect(a).toBeLessThan(b);
      expect(b).toBeLessThan(c);
      // not marginal: each step down in precision costs at least 5x more drift
      expect(b / a).toBeGreaterThan(5);
      expect(c / b).toBeGreaterThan(5);
    }
    for (const id of ["vae_decode:64x64", "vae_roundtrip:64x64", "end_to_end:txt2img-pndm-64x64"]) {
      const [a, b, c] = ["fp32", "fp16", "int8"].map((m) => get(sideBySide, m, id).images![0].psnrU8);
      expect(a).toBeGreaterThan(b);
      expect(b).toBeGreaterThan(c);
    }
  });

  test("each variant passes its own profile", () => {
    const notPassed = (rs: CaseResult[]) => rs.filter((r) => r.status !== "pass").map((r) => `${r.id}: ${r.status}`);
    expect(byModel(sideBySide, "fp16")).toHaveLength(ONLY.length);
    expect(notPassed(byModel(sideBySide, "fp16"))).toEqual([]);
    expect(byModel(int8Own, "int8")).toHaveLength(ONLY.length);
    expect(notPassed(byModel(int8Own, "int8"))).toEqual([]);
    expect(notPassed(rejudge(sideBySide, "fp32", "fp32"))).toEqual([]);
  });

  test("stricter profiles reject the coarser variants, at the model stages", () => {
    const modelStages = ["end_to_end", "text_encoder", "unet", "vae_decode", "vae_roundtrip"];
    // fp16 profile (a real run): fp32 passes, int8 fails every model stage
    expect(failedStages(byModel(sideBySide, "fp32"))).toEqual([]);
    expect(failedStages(byModel(sideBySide, "int8"))).toEqual(modelStages);
    // fp32 profile: fp16 and int8 fail every model stage
    expect(failedStages(rejudge(sideBySide, "fp16", "fp32"))).toEqual(modelStages);
    expect(failedStages(rejudge(sideBySide, "int8", "fp32"))).toEqual(modelStages);
    // the int8 VAE roundtrip passes on its documented per-case override, not on the stage default
    const rt = get(int8Own, "int8", "vae_roundtrip:64x64");
    expect(rt.tolerance.source).toBe("override vae_roundtrip:*");
    expect(rt.tolerance.reason).toMatch(/compound/);
  });
});

describe("fp16 overflow is caught and located", () => {
  // The tiny VAE does not overflow fp16 on its own (its activations stay below ~100; SD 1.5's real
  // VAE reaches fp16's 65504 in its decoder, which is why diffusers' config has force_upcast). So
  // the overflow is made: the decoder's conv_in weight and bias are scaled by 2000 in a copy. The
  // conv_in output feeds a GroupNorm (scale-invariant) and the residual stream, so in fp32 the scaled
  // decoder still decodes finitely; in fp16 its activations (about 2000 x 7 for the reference's
  // N(0,1)-sized latents, 2000 x 98 for the loop's final latents, which reach |38| / 0.18215) are
  // stored as fp16 between nodes and overflow to Inf for the large latents only.
  test("a VAE decoder whose activations pass 65504 in fp16: end_to_end fails naming vae_decoder", async () => {
    const scale = (dir: string) =>
      scaleInitializers(path.join(dir, "vae_decoder", "model.onnx"), (n) => /^model\.decoder\.conv_in\.(weight|bias)$/.test(n), 2000);
    const fp16 = copyModel(FP16, tmp, "fp16-vae-overflow");
    const fp32 = copyModel(TINY, tmp, "fp32-vae-scaled");
    expect(scale(fp16).map((e) => e.dataType)).toEqual([10, 10]); // float16 initializers
    expect(scale(fp32).map((e) => e.dataType)).toEqual([1, 1]);
    const report = await runConformance({
      models: [
        { label: "fp16-scaled", dir: fp16 },
        { label: "fp32-scaled", dir: fp32 },
      ],
      references: REFS,
      profile: "fp16",
      only: ["vae_decode:64x64", "end_to_end:txt2img-pndm-64x64"],
      outDir: null,
      threads: 1,
    });
    const e2e = get(report, "fp16-scaled", "end_to_end:txt2img-pndm-64x64");
    expect(e2e.status).toBe("fail");
    expect(e2e.nonFinite).toEqual({
      stage: "vae_decoder",
      step: null,
      what: expect.stringMatching(/^(NaN|Inf) at element \d+ of \[1, 3, 64, 64\]/),
    });
    expect(e2e.message).toMatch(/^NaN\/Inf first at vae_decoder: /);
    // small latents decode finitely with the same fp16 weights: the overflow depends on the input
    const small = get(report, "fp16-scaled", "vae_decode:64x64").metrics.image;
    expect(small.nanCount + small.infCount).toBe(0);
    // the same scaled weights in fp32: wrong (the case fails on drift) but finite everywhere
    const control = get(report, "fp32-scaled", "end_to_end:txt2img-pndm-64x64");
    expect(control.status).toBe("fail");
    expect(control.nonFinite).toBeUndefined();
  });

  // The U-Net's latents grow along the tiny model's PNDM loop (max |latent| 2.5 at the start, 38 at
  // the end), so a U-Net conv_in scaled by 10000 in fp16 overflows part-way through: the suite must
  // name the U-Net and the step, and the teacher-forced cases must agree on where it starts.
  test("a U-Net that overflows fp16 mid-loop: the loop cases name unet and the step", async () => {
    const fp16 = copyModel(FP16, tmp, "fp16-unet-overflow");
    scaleInitializers(path.join(fp16, "unet", "model.onnx"), (n) => /^model\.conv_in\.(weight|bias)$/.test(n), 10000);
    const steps = Array.from({ length: 11 }, (_, k) => `unet:txt2img-pndm-64x64-step${String(k).padStart(2, "0")}`);
    const report = await runConformance({
      models: [{ label: "fp16-scaled", dir: fp16 }],
      references: REFS,
      profile: "fp16",
      only: [...steps, "unet:txt2img-pndm-64x64-free", "end_to_end:txt2img-pndm-64x64"],
      outDir: null,
      threads: 1,
    });
    // teacher-forced: the reference's inputs overflow from step 4 on
    const firstTeacher = steps.findIndex((id) => get(report, "fp16-scaled", id).nonFinite !== undefined);
    expect(firstTeacher).toBe(4);
    for (const id of steps.slice(firstTeacher))
      expect(get(report, "fp16-scaled", id).nonFinite).toMatchObject({ stage: "unet", step: expect.any(Number) });
    for (const id of steps.slice(0, firstTeacher)) expect(get(report, "fp16-scaled", id).nonFinite).toBeUndefined();
    // free-running and end-to-end: the loop stops at the first non-finite noise prediction
    for (const id of ["unet:txt2img-pndm-64x64-free", "end_to_end:txt2img-pndm-64x64"]) {
      const r = get(report, "fp16-scaled", id);
      expect(r.status).toBe("fail");
      expect(r.nonFinite).toMatchObject({ stage: "unet", step: firstTeacher });
      expect(r.message).toMatch(new RegExp(`^NaN/Inf first at unet step ${firstTeacher}: `));
    }
  });
});

describe("float16 initializers", () => {
  // An fp16 text encoder converted without keeping LayerNormalization in fp32 stores
  // final_layer_norm.* as FLOAT16; clip skip reads them by name and must widen them.
  const varint = (n: number): number[] => {
    const out: number[] = [];
    for (; n >= 0x80; n = Math.floor(n / 128)) out.push((n & 0x7f) | 0x80);
    return [...out, n];
  };
  const field = (no: number, bytes: number[]): number[] => [...varint(no * 8 + 2), ...varint(bytes.length), ...bytes];
  const values = [1.5, -0.25, 3];

  test.each([
    [
      "raw_data",
      (h: number[]) =>
        field(
          9,
          h.flatMap((x) => [x & 0xff, x >> 8]),
        ),
    ],
    ["packed int32_data", (h: number[]) => field(5, h.flatMap(varint))],
  ])("are read from %s and widened", (_how, data) => {
    const halves = values.map(floatToHalf);
    const name = [..."text_model.final_layer_norm.weight"].map((c) => c.charCodeAt(0));
    const tensor = [...varint(1 * 8), ...varint(3), ...varint(2 * 8), ...varint(10), ...field(8, name), ...data(halves)];
    const model = field(7, field(5, tensor)); // ModelProto.graph.initializer
    const file = path.join(tmp, `fp16-init-${_how.replace(/\W/g, "")}.onnx`);
    fs.writeFileSync(file, Buffer.from(model));
    const got = readFloatInitializers(file, (n) => n.endsWith("final_layer_norm.weight"));
    expect([...got.get("text_model.final_layer_norm.weight")!]).toEqual(values);
  });
});
