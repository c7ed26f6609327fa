/**
 * Models as users bring them: diffusers' pipeline-level config corrections, a reference set that
 * belongs to another model, and the coverage a report must state. Folders are temporary copies of
 * the bundled tiny model with one config changed; the committed user-model fixtures (an optimum
 * export, other geometries, a scheduler config that needs correcting) are checked in
 * test/user-fixtures.test.ts against references diffusers made for them.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ExitCode } from "../src/errors";
import { loadModelFolder, pipelineCorrections } from "../src/pipeline/model-folder";
import { resolveRawConfig } from "../src/schedulers";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline";
import { TINY, REFS } from "./helpers/fixtures";
import { cli } from "./helpers/cli";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sd-users-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let n = 0;
function copyWith(name: string, edits: Record<string, Record<string, unknown>>): string {
  const dest = path.join(tmp, `${name}-${n++}`);
  fs.cpSync(TINY, dest, { recursive: true, dereference: true });
  for (const [rel, patch] of Object.entries(edits)) {
    const file = path.join(dest, rel);
    const cfg = JSON.parse(fs.readFileSync(file, "utf8"));
    fs.rmSync(file);
    fs.writeFileSync(file, JSON.stringify({ ...cfg, ...patch }));
  }
  return dest;
}

describe("diffusers' pipeline-level config corrections", () => {
  const fix = (raw: Record<string, unknown>, inpaint = false) => pipelineCorrections(raw, resolveRawConfig(raw), inpaint, "s.json");

  test("steps_offset becomes 1 and clip_sample False, as StableDiffusionPipeline.__init__ does", () => {
    const r = fix({ _class_name: "DDIMScheduler", steps_offset: 0, clip_sample: true });
    expect(r.config.steps_offset).toBe(1);
    expect(r.config.clip_sample).toBe(false);
    expect(r.corrections.map((c) => c.key)).toEqual(["steps_offset", "clip_sample"]);
  });

  test("keys a file lacks take the class's defaults first (DDIM clips by default; every class offsets by 0)", () => {
    const r = fix({ _class_name: "DDIMScheduler" });
    expect(r.corrections.map((c) => [c.key, c.from, c.to])).toEqual([
      ["steps_offset", 0, 1],
      ["clip_sample", true, false],
    ]);
    // PNDM has no clip_sample: nothing to correct there
    expect(fix({ _class_name: "PNDMScheduler", steps_offset: 1, skip_prk_steps: true }).corrections).toEqual([]);
  });

  test("the inpainting pipeline forces skip_prk_steps and leaves clip_sample alone", () => {
    const r = fix({ _class_name: "PNDMScheduler", steps_offset: 1, skip_prk_steps: false, clip_sample: true }, true);
    expect(r.corrections.map((c) => c.key)).toEqual(["skip_prk_steps"]);
    expect(r.config.skip_prk_steps).toBe(true);
    expect(r.config.clip_sample).toBe(true);
  });

  test("an outdated scheduler config runs diffusers' timesteps (901…1, not 900…0) and says why", async () => {
    const dir = copyWith("legacy", { "scheduler/scheduler_config.json": { steps_offset: 0 } });
    const warnings: string[] = [];
    const pipe = await StableDiffusionPipeline.load(dir, { warn: (w) => warnings.push(w) });
    try {
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/scheduler_config\.json: steps_offset is 0; diffusers' StableDiffusionPipeline runs with 1/);
      const s = pipe.resolveScheduler("pndm", 10);
      // leading spacing, 10 steps over 1000: 0, 100, … 900 plus steps_offset 1
      expect(Math.max(...s.timesteps)).toBe(901);
      expect(Math.min(...s.timesteps)).toBe(1);
    } finally {
      await pipe.release();
    }
  });

  test("generate prints the correction as a warning", async () => {
    const dir = copyWith("legacy-cli", { "scheduler/scheduler_config.json": { steps_offset: 0 } });
    const r = await cli(["generate", "--model", dir, "--prompt", "a fox", "--steps", "2", "--out", path.join(tmp, "legacy.png")]);
    expect(r.code).toBe(ExitCode.ok);
    expect(r.err).toMatch(/warning: .*steps_offset is 0; diffusers' StableDiffusionPipeline runs with 1/);
  });
});

describe("geometry", () => {
  test("the size step is the VAE's factor times the U-Net's down-sampling", () => {
    expect(loadModelFolder(TINY).sizeStep).toBe(64);
    const dir = copyWith("three-block", {
      "unet/config.json": { block_out_channels: [8, 16, 16] },
      "vae_decoder/config.json": { block_out_channels: [8, 16, 16] },
    });
    expect(loadModelFolder(dir).sizeStep).toBe(16);
  });
});

describe("a reference set belongs to one model", () => {
  test("another model's folder is refused in one line before any case runs, naming both folders and the field", async () => {
    const dir = copyWith("other-vae", { "vae_decoder/config.json": { scaling_factor: 0.13025 } });
    const out = path.join(tmp, "mismatch-report");
    const r = await cli(["conformance", "--model", dir, "--references", REFS, "--out", out]);
    expect(r.code).toBe(ExitCode.usage);
    const lines = r.err.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`--references ${REFS} was made from another model than --model ${dir}`);
    expect(lines[0]).toMatch(/vae_scaling_factor is 0\.18215 in the reference set, 0\.13025 in the model/);
    expect(fs.existsSync(out)).toBe(false);
  });

  test("a scheduler config that differs from the one the references ran with is named too", async () => {
    const dir = copyWith("other-betas", { "scheduler/scheduler_config.json": { beta_end: 0.02 } });
    const r = await cli(["conformance", "--model", dir, "--references", REFS, "--only", "tokenizer:*", "--out", path.join(tmp, "x")]);
    expect(r.code).toBe(ExitCode.usage);
    expect(r.err).toMatch(/scheduler\.beta_end is 0\.012 in the reference set, 0\.02 in the model/);
  });
});

describe("coverage", () => {
  test("a report says what it did not check, and why", async () => {
    const out = path.join(tmp, "coverage-report");
    // a copy of the bundled model is "the user's own": no inpainting model comes with it
    const dir = copyWith("cov", {});
    const r = await cli([
      "conformance",
      "--model",
      `${dir}=mine`,
      "--references",
      REFS,
      "--quiet",
      "--out",
      out,
      "--only",
      "text_encoder:*",
      "--only",
      "end_to_end:txt2img-pndm-64x64",
      "--only",
      "end_to_end:inpaint-*",
    ]);
    expect(r.code).toBe(ExitCode.ok);
    // no --inpaint-model: the inpaint runs cannot be judged, and the report says so
    expect(r.err).toMatch(/not covered: task inpaint: needs an inpainting model \(--inpaint-model\)/);
    expect(r.err).toMatch(/not covered: task img2img: its \d+ end-to-end runs were left out/);
    expect(r.err).toMatch(/not covered: stage unet: all \d+ cases left out by --only/);
    const report = JSON.parse(fs.readFileSync(path.join(out, "report.json"), "utf8"));
    expect(report.coverage.tasks).toEqual({ txt2img: 1, img2img: 0, inpaint: 0 });
    expect(report.coverage.schedulers).toEqual(["PNDMScheduler"]);
    expect(report.coverage.sizes).toEqual(["64x64"]);
    expect(report.coverage.precisions).toEqual({ mine: "float32" });
    expect(fs.readFileSync(path.join(out, "summary.md"), "utf8")).toMatch(
      /## Coverage[\s\S]*\*\*Not covered:\*\*[\s\S]*- task inpaint: needs an inpainting model/,
    );
    expect(fs.readFileSync(path.join(out, "report.html"), "utf8")).toMatch(/<section class="card" id="coverage">/);
  });
});
