/**
 * The suite must catch faults. Each test breaks a copy of the tiny model (or the pipeline, through
 * runConformance's pipelineFactory) in one known way and runs the unbroken model and the broken one
 * side by side on a small `only` subset: the unbroken model must pass every case, the broken one
 * must fail exactly the stages the fault reaches and pass the ones it does not.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { runConformance, PipelineFactory } from "../src/conformance/runner";
import { CaseResult, Report, Status } from "../src/conformance/types";
import { StableDiffusionPipeline, GenerateParams } from "../src/pipeline/pipeline";
import { F32, f32 } from "../src/tensor/tensor";
import { TINY, REFS } from "./helpers/fixtures";
import { copyModel, editJson, scaleInitializers } from "./helpers/onnx-edit";
import { tempDir } from "./helpers/tmp";

const tmp = tempDir("sd-faults-");

const GOOD = "good";
const BAD = "broken";

async function sideBySide(only: string[], broken: { dir?: string; factory?: PipelineFactory; forceSd1?: boolean }): Promise<Report> {
  const brokenDir = broken.dir ?? path.join(tmp(), "__factory__", path.basename(TINY));
  if (!broken.dir) {
    // the factory decides what is broken; the label still needs its own folder path
    fs.mkdirSync(path.dirname(brokenDir), { recursive: true });
    if (!fs.existsSync(brokenDir)) fs.symlinkSync(TINY, brokenDir);
  }
  const factory: PipelineFactory = (dir, options) =>
    dir === brokenDir && broken.factory ? broken.factory(dir, options) : StableDiffusionPipeline.load(dir, options);
  return runConformance({
    models: [
      { label: GOOD, dir: TINY },
      { label: BAD, dir: brokenDir },
    ],
    references: REFS,
    profile: "fp32",
    only,
    outDir: null,
    threads: 1,
    pipelineFactory: factory,
    forceSd1: broken.forceSd1,
  });
}

function results(report: Report, model: string, glob: RegExp): CaseResult[] {
  const r = report.results.filter((x) => x.model === model && glob.test(x.id) && x.status !== "skip");
  if (r.length === 0) throw new Error(`no ${model} results match ${glob}`);
  return r;
}

function statuses(report: Report, model: string, glob: RegExp): Record<string, Status> {
  return Object.fromEntries(results(report, model, glob).map((r) => [r.id, r.status]));
}

function expectAll(report: Report, model: string, glob: RegExp, status: Status): void {
  const got = statuses(report, model, glob);
  expect(got).toEqual(Object.fromEntries(Object.keys(got).map((k) => [k, status])));
}

function expectGoodPasses(report: Report): void {
  expectAll(report, GOOD, /./, "pass");
}

/** A pipeline whose methods the fault overrides on the instance (the constructor is private, so
 *  the "subclass" is an instance with its own methods shadowing the prototype's). */
function patched(patch: (pipe: StableDiffusionPipeline) => void): PipelineFactory {
  return async (dir, options) => {
    const pipe = await StableDiffusionPipeline.load(dir, options);
    patch(pipe);
    return pipe;
  };
}

describe("the suite catches faults and passes the unbroken model", () => {
  test("(a) a perturbed U-Net weight fails the U-Net cases only", async () => {
    const dir = copyModel(TINY, tmp(), "perturbed-unet");
    // 64 of the 2304 values of the first down block's first convolution, times 1.05
    const weight = "model.down_blocks.0.resnets.0.conv1.weight";
    const edited = scaleInitializers(path.join(dir, "unet", "model.onnx"), (n) => n === weight, 1.05, 64);
    expect(edited).toEqual([{ name: weight, dataType: 1, changed: 64, total: 2304 }]);
    // measured: relL2 4.3e-3 at pndm step00, 9.7e-4 at step03 against the fp32 limit 1e-4 (the
    // last, nearly clean steps move least: euler-a step07 at t=1 drifts only 1.3e-4, too close
    // to the limit to assert on)
    const report = await sideBySide(
      [
        "tokenizer:*",
        "rng:seed42-1x4x8x8",
        "scheduler:pndm-*",
        "text_encoder:astronaut",
        "vae_decode:64x64",
        "unet:txt2img-pndm-64x64-step00",
        "unet:txt2img-pndm-64x64-step03",
        "unet:txt2img-euler-a-64x64-step00",
      ],
      { dir },
    );
    expectGoodPasses(report);
    expectAll(report, BAD, /^unet:/, "fail");
    for (const stage of [/^tokenizer:/, /^rng:/, /^scheduler:/, /^text_encoder:/, /^vae_decode:/]) expectAll(report, BAD, stage, "pass");
    // the failing check names the tensor and the metric that moved
    const c = results(report, BAD, /^unet:/)[0].checks.find((k) => !k.ok);
    expect(c?.tensor).toBe("out_sample");
  });

  test("(b) a wrong VAE scaling factor in the configs is refused up front: it differs from the references' fingerprint", async () => {
    const dir = copyModel(TINY, tmp(), "wrong-vae-scale");
    for (const part of ["vae_decoder", "vae_encoder"]) {
      editJson(path.join(dir, part, "config.json"), (j) => {
        j.scaling_factor = 0.13025;
      }); // SDXL's
    }
    await expect(sideBySide(["vae_*:64x64"], { dir })).rejects.toThrow(
      /vae_scaling_factor is 0\.18215 in the reference set, 0\.13025 in the model's configs/,
    );
  });

  test("(b2) a wrong VAE scaling factor in the code fails vae_roundtrip / vae_decode / end_to_end, not vae_encode", async () => {
    // the same fault past the fingerprint check: the pipeline itself uses the wrong factor
    const factory = patched((pipe) => {
      (pipe.folder.vaeConfig as { scalingFactor: number }).scalingFactor = 0.13025;
    });
    const report = await sideBySide(["vae_*:64x64", "end_to_end:txt2img-pndm-64x64", "unet:txt2img-pndm-64x64-step00"], { factory });
    expectGoodPasses(report);
    expectAll(report, BAD, /^vae_roundtrip:/, "fail");
    expectAll(report, BAD, /^vae_decode:/, "fail");
    expectAll(report, BAD, /^end_to_end:/, "fail");
    expectAll(report, BAD, /^vae_encode:/, "pass"); // the encoder's mean / std do not involve the factor
    expectAll(report, BAD, /^unet:/, "pass");
    // roundtrip: decode(encode(x) * sf / sf) is the same picture; the scaled latents are what is wrong
    const rt = results(report, BAD, /^vae_roundtrip:/)[0];
    expect(rt.checks.filter((k) => !k.ok).map((k) => k.tensor)).toContain("latents");
  });

  test("(c) swapped CFG halves in the loop fail end_to_end / unet free-running, not teacher-forced", async () => {
    const swapHalves = (t: F32): F32 => {
      const half = t.data.length / 2;
      const out = new Float32Array(t.data.length);
      out.set(t.data.subarray(half), 0);
      out.set(t.data.subarray(0, half), half);
      return f32(out, t.dims);
    };
    const factory = patched((pipe) => {
      const generate = pipe.generate.bind(pipe);
      const runUnet = pipe.runUnet.bind(pipe);
      // inside generate only: the U-Net's [uncond, cond] output read as [cond, uncond]
      pipe.generate = async (params: GenerateParams) => {
        const cfg = (params.guidanceScale ?? 7.5) > 1;
        pipe.runUnet = async (s, t, e) => (cfg ? swapHalves(await runUnet(s, t, e)) : runUnet(s, t, e));
        try {
          return await generate(params);
        } finally {
          pipe.runUnet = runUnet;
        }
      };
    });
    const report = await sideBySide(
      [
        "end_to_end:txt2img-pndm-64x64",
        "end_to_end:txt2img-pndm-guidance1",
        "unet:txt2img-pndm-64x64-free",
        "unet:txt2img-pndm-64x64-step00",
        "unet:txt2img-pndm-64x64-step01",
        "unet:txt2img-pndm-64x64-step02",
      ],
      { factory },
    );
    expectGoodPasses(report);
    expect(statuses(report, BAD, /./)).toEqual({
      "end_to_end:txt2img-pndm-64x64": "fail",
      "unet:txt2img-pndm-64x64-free": "fail",
      "unet:txt2img-pndm-64x64-step00": "pass",
      "unet:txt2img-pndm-64x64-step01": "pass",
      "unet:txt2img-pndm-64x64-step02": "pass",
      // guidance 1 has no CFG batch: nothing to swap, and the suite does not cry wolf
      "end_to_end:txt2img-pndm-guidance1": "pass",
    });
    // the free-running drift series shows where it starts: from the first step on
    const free = results(report, BAD, /-free$/)[0];
    const series = free.series?.find((s) => s.metric === "relL2")?.values ?? [];
    expect(series[0]).toBeGreaterThan(1e-3);
  });

  test("(d) an off-by-one timestep fails the U-Net cases", async () => {
    const factory = patched((pipe) => {
      const runUnet = pipe.runUnet.bind(pipe);
      pipe.runUnet = (s, t, e) => runUnet(s, t + 1, e);
    });
    const report = await sideBySide(
      [
        "unet:txt2img-pndm-64x64-step00",
        "unet:txt2img-pndm-64x64-step01",
        "unet:txt2img-pndm-64x64-step02",
        "unet:txt2img-pndm-64x64-step10",
        "unet:txt2img-euler-a-64x64-step07",
        "unet:txt2img-pndm-64x64-free",
        "tokenizer:*",
        "vae_decode:64x64",
      ],
      { factory },
    );
    expectGoodPasses(report);
    expectAll(report, BAD, /^unet:/, "fail");
    expectAll(report, BAD, /^(tokenizer|vae_decode):/, "pass");
  });

  test("(e) height and width swapped fail the non-square end_to_end cases only", async () => {
    const factory = patched((pipe) => {
      const generate = pipe.generate.bind(pipe);
      pipe.generate = (params: GenerateParams) => generate({ ...params, width: params.height, height: params.width });
    });
    const report = await sideBySide(
      [
        "end_to_end:txt2img-euler-128x64-negative",
        "end_to_end:txt2img-pndm-64x64",
        "unet:txt2img-euler-128x64-negative-free",
        "unet:txt2img-euler-128x64-negative-step00",
      ],
      { factory },
    );
    expectGoodPasses(report);
    expect(statuses(report, BAD, /./)).toEqual({
      "end_to_end:txt2img-euler-128x64-negative": "fail",
      "unet:txt2img-euler-128x64-negative-free": "fail",
      "end_to_end:txt2img-pndm-64x64": "pass", // square: the swap is a no-op
      "unet:txt2img-euler-128x64-negative-step00": "pass", // teacher-forced: shapes come from the reference
    });
  });

  test("(f) a wrong pad token fails the tokenizer and the prompt embeddings, not the text encoder", async () => {
    const dir = copyModel(TINY, tmp(), "wrong-pad");
    // ClipTokenizer.fromDir reads pad_token from special_tokens_map.json (which wins) and
    // tokenizer_config.json, as transformers' from_pretrained does: change both.
    for (const f of ["special_tokens_map.json", "tokenizer_config.json"]) {
      editJson(path.join(dir, "tokenizer", f), (j) => {
        j.pad_token = "!";
      });
    }
    const { ClipTokenizer } = await import("../src/pipeline/tokenizer");
    const tok = ClipTokenizer.fromDir(path.join(dir, "tokenizer"));
    expect(tok.padId).toBe(0); // "!" is id 0 in CLIP's vocabulary; <|endoftext|> is 49407
    // "!" padding is OpenCLIP's (SD 2.x): the folder is refused as SD 2.x unless told otherwise
    await expect(sideBySide(["tokenizer:*"], { dir })).rejects.toThrow(/pad_token "!" \(OpenCLIP's tokenizer\): an SD 2\.x model/);
    const report = await sideBySide(["tokenizer:*", "text_encoder:*", "end_to_end:txt2img-pndm-64x64"], { dir, forceSd1: true });
    expectGoodPasses(report);
    expectAll(report, BAD, /^tokenizer:/, "fail");
    // the text_encoder stage feeds the reference's input_ids (teacher-forced), so the encoder itself
    // is rightly not blamed; the generated prompt embeddings are what the wrong ids change
    expectAll(report, BAD, /^text_encoder:/, "pass");
    expectAll(report, BAD, /^end_to_end:/, "fail");
    const e2e = results(report, BAD, /^end_to_end:/)[0];
    expect(e2e.checks.filter((k) => !k.ok).map((k) => k.tensor)).toContain("prompt_embeds");
  });
});
