/**
 * `sd-harness generate` in-process: runs out of the box with only --prompt (the bundled tiny
 * model), writes PNGs carrying A1111-style `parameters`, handles batch / img2img / inpainting,
 * and lists the schedulers in --help.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { PNG } from "pngjs";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { readPngText, writePng } from "../src/pipeline/image";
import { SCHEDULER_NAMES } from "../src/schedulers";

function capture(): CliIO & { stdout: () => string; stderr: () => string } {
  let out = "";
  let err = "";
  return {
    out: (t) => {
      out += t;
    },
    err: (t) => {
      err += t;
    },
    isTTY: false,
    stdout: () => out,
    stderr: () => err,
  };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-gen-"));
const cwd = process.cwd();
beforeAll(() => process.chdir(tmp));
afterAll(() => {
  process.chdir(cwd);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test("runs with nothing but --prompt and writes out.png with its parameters (the default model, shapes-sd)", async () => {
  const io = capture();
  const code = await main(["generate", "--prompt", "a lighthouse at dusk", "--steps", "4", "--seed", "42"], io);
  expect(io.stderr()).not.toMatch(/error/);
  expect(code).toBe(0);
  const buf = fs.readFileSync(path.join(tmp, "out.png"));
  const png = PNG.sync.read(buf);
  expect([png.width, png.height]).toEqual([32, 32]);
  const params = readPngText(buf).parameters;
  // guidance 2.5: the model folder's generation_config.json, which the summary line names
  expect(params).toMatch(/^a lighthouse at dusk\nSteps: 4, Sampler: PLMS, CFG scale: 2.5, Seed: 42, Size: 32x32, Model: shapes-sd-onnx/);
  expect(io.stderr()).toMatch(/^seed 42, 4 steps, pndm, 32x32, guidance 2.5 \(guidance from the model's generation_config.json\)$/m);
  // progress lines when stderr is not a terminal
  // (PNDM's 4 steps are 5 U-Net calls: its first PLMS step is taken twice)
  expect(io.stderr()).toMatch(/generate 5\/5 \(\d+\.\d+ it\/s\)/);
});

test("a model folder's generation_config.json gives generate's defaults; a flag wins; a bad file is refused with one line", async () => {
  const model = path.join(tmp, "gencfg-model");
  fs.cpSync(path.resolve(cwd, "fixtures", "models", "tiny-sd-onnx"), model, { recursive: true });
  const file = path.join(model, "generation_config.json");
  const run = async (...extra: string[]) => {
    const io = capture();
    const code = await main(["generate", "--model", model, "--prompt", "x", "--seed", "5", "--out", "gc.png", "--overwrite", ...extra], io);
    const params = code === 0 ? readPngText(fs.readFileSync(path.join(tmp, "gc.png"))).parameters : "";
    return { code, params, stderr: io.stderr() };
  };
  // no file: diffusers' defaults
  let r = await run("--steps", "2");
  expect(r.params).toContain("Steps: 2, Sampler: PLMS, CFG scale: 7.5,");
  expect(r.stderr).toMatch(/^seed 5, 2 steps, pndm, 64x64$/m);
  fs.writeFileSync(file, JSON.stringify({ _comment: "made for a test", guidance_scale: 3, num_inference_steps: 3 }));
  r = await run();
  expect(r.params).toContain("Steps: 3, Sampler: PLMS, CFG scale: 3,");
  expect(r.stderr).toMatch(/^seed 5, 3 steps, pndm, 64x64, guidance 3 \(steps and guidance from the model's generation_config.json\)$/m);
  r = await run("--guidance", "1.5", "--steps", "2");
  expect(r.params).toContain("Steps: 2, Sampler: PLMS, CFG scale: 1.5,");
  expect(r.stderr).toMatch(/^seed 5, 2 steps, pndm, 64x64$/m);
  for (const [bad, msg] of [
    [{ guidance: 3 }, /generation_config.json: unknown key "guidance" \(generate reads guidance_scale and num_inference_steps\)$/],
    [{ guidance_scale: "high" }, /generation_config.json: "guidance_scale" must be a number \(got "high"\)$/],
    [{ guidance_scale: 101 }, /generation_config.json: "guidance_scale" must be in \[0, 100\] \(got 101\)$/],
    [{ num_inference_steps: 2.5 }, /generation_config.json: "num_inference_steps" must be an integer in \[1, 1000\] \(got 2.5\)$/],
  ] as const) {
    fs.writeFileSync(file, JSON.stringify(bad));
    fs.rmSync(path.join(tmp, "gc.png"), { force: true });
    r = await run();
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr.trim()).toMatch(msg);
    expect(fs.existsSync(path.join(tmp, "gc.png"))).toBe(false);
  }
  fs.writeFileSync(file, "{ not json");
  r = await run();
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/generation_config.json: not valid JSON/);
  // only generate reads it: the conformance suite judges the same folder as before
  const io = capture();
  expect(
    await main(["conformance", "--model", model, "--only", "text_encoder:*", "--threads", "1", "--quiet", "--out", "gc-report"], io),
  ).toBe(0);
});

test("clip skip works on the default model (its export keeps the final LayerNorm under its name)", async () => {
  const io = capture();
  expect(
    await main(
      ["generate", "--prompt", "a red circle on a blue background", "--clip-skip", "1", "--steps", "2", "--seed", "1", "--out", "cs.png"],
      io,
    ),
  ).toBe(0);
  expect(readPngText(fs.readFileSync(path.join(tmp, "cs.png"))).parameters).toContain("Clip skip: 2");
});

test("refuses to overwrite an existing file unless told to", async () => {
  const io = capture();
  expect(await main(["generate", "--prompt", "x", "--steps", "2", "--seed", "1"], io)).toBe(3);
  expect(io.stderr()).toMatch(/out\.png: already exists/);
  expect(await main(["generate", "--prompt", "x", "--steps", "2", "--seed", "1", "--overwrite"], capture())).toBe(0);
});

test("batch, non-square size, negative prompt and a unicode prompt (iTXt)", async () => {
  const io = capture();
  const code = await main(
    [
      "generate",
      "--prompt",
      "東京の夜景 🌃",
      "--negative-prompt",
      "blurry",
      "--batch",
      "2",
      "--width",
      "128",
      "--height",
      "64",
      "--scheduler",
      "euler-a",
      "--steps",
      "3",
      "--seed",
      "7",
      "--out",
      "b.png",
    ],
    io,
  );
  expect(code).toBe(0);
  for (const f of ["b-0.png", "b-1.png"]) {
    const buf = fs.readFileSync(path.join(tmp, f));
    const png = PNG.sync.read(buf);
    expect([png.width, png.height]).toEqual([128, 64]);
    const p = readPngText(buf).parameters;
    expect(p).toContain("東京の夜景 🌃\nNegative prompt: blurry\n");
    expect(p).toContain("Sampler: Euler a");
  }
  expect(fs.readFileSync(path.join(tmp, "b-0.png")).equals(fs.readFileSync(path.join(tmp, "b-1.png")))).toBe(false);
});

test("img2img and inpainting from PNG files", async () => {
  const rgb = new Uint8Array(64 * 64 * 3).map((_, i) => (i * 37) % 256);
  writePng(path.join(tmp, "init.png"), { width: 64, height: 64, data: rgb });
  const mask = new Uint8Array(64 * 64 * 3).map((_, i) => (Math.floor(i / 3) % 64 > 32 ? 255 : 0));
  writePng(path.join(tmp, "mask.png"), { width: 64, height: 64, data: mask });
  expect(
    await main(
      [
        "generate",
        "--prompt",
        "a street",
        "--init-image",
        "init.png",
        "--strength",
        "0.5",
        "--steps",
        "4",
        "--seed",
        "3",
        "--out",
        "i2i.png",
      ],
      capture(),
    ),
  ).toBe(0);
  expect(readPngText(fs.readFileSync(path.join(tmp, "i2i.png"))).parameters).toContain("Denoising strength: 0.5");
  const inpaint = path.resolve(cwd, "fixtures", "models", "tiny-sd-inpaint-onnx");
  const io = capture();
  expect(
    await main(
      [
        "generate",
        "--model",
        inpaint,
        "--prompt",
        "flowers",
        "--init-image",
        "init.png",
        "--mask",
        "mask.png",
        "--steps",
        "3",
        "--seed",
        "5",
        "--out",
        "inp.png",
      ],
      io,
    ),
  ).toBe(0);
  expect(fs.existsSync(path.join(tmp, "inp.png"))).toBe(true);
});

test("a model whose own scheduler is DPMSolverMultistep writes A1111's sampler name, Karras sigmas included", async () => {
  // the model's default scheduler, not --scheduler, decides the name here (it once leaked the diffusers class name)
  const model = path.join(tmp, "dpm-model");
  fs.cpSync(path.resolve(cwd, "fixtures", "models", "tiny-sd-onnx"), model, { recursive: true });
  const configFile = path.join(model, "scheduler", "scheduler_config.json");
  const base = JSON.parse(fs.readFileSync(configFile, "utf8"));
  const runs = [
    [{}, "DPM++ 2M"],
    [{ use_karras_sigmas: true }, "DPM++ 2M Karras"],
    // A1111's separate field for the schedules its sampler names do not carry
    [{ use_exponential_sigmas: true }, "DPM++ 2M, Schedule type: Exponential"],
  ] as const;
  for (const [extra, sampler] of runs) {
    fs.writeFileSync(
      configFile,
      JSON.stringify({ ...base, _class_name: "DPMSolverMultistepScheduler", skip_prk_steps: undefined, ...extra }),
    );
    const io = capture();
    expect(
      await main(["generate", "--model", model, "--prompt", "x", "--steps", "2", "--seed", "3", "--out", "dpm.png", "--overwrite"], io),
    ).toBe(0);
    expect(readPngText(fs.readFileSync(path.join(tmp, "dpm.png"))).parameters).toContain(`Sampler: ${sampler}, CFG scale`);
  }
});

test("--sigmas picks the sigma schedule: written as A1111's Schedule type, said on stderr", async () => {
  const io = capture();
  expect(
    await main(
      ["generate", "--prompt", "x", "--scheduler", "euler", "--sigmas", "exponential", "--steps", "3", "--seed", "4", "--out", "exp.png"],
      io,
    ),
  ).toBe(0);
  expect(readPngText(fs.readFileSync(path.join(tmp, "exp.png"))).parameters).toContain(
    "Sampler: Euler, Schedule type: Exponential, CFG scale",
  );
  expect(io.stderr()).toContain("3 steps, euler (exponential sigmas), 32x32");
  // dpm++2m on Karras sigmas is the dpm++2m-karras choice, named as A1111 names it
  expect(
    await main(
      ["generate", "--prompt", "x", "--scheduler", "dpm++2m", "--sigmas", "karras", "--steps", "2", "--seed", "4", "--out", "k.png"],
      capture(),
    ),
  ).toBe(0);
  expect(readPngText(fs.readFileSync(path.join(tmp, "k.png"))).parameters).toContain("Sampler: DPM++ 2M Karras, CFG scale");
});

test("--sigmas a scheduler does not accept: one line naming --sigmas and what the scheduler accepts", async () => {
  const cases: [string[], string][] = [
    [
      ["--scheduler", "ddim", "--sigmas", "karras"],
      "--sigmas karras: scheduler ddim accepts none (it steps over alphas_cumprod by timestep and has no sigmas)",
    ],
    [["--scheduler", "dpm++2m-karras", "--sigmas", "exponential"], "--sigmas exponential: scheduler dpm++2m-karras accepts karras"],
    [["--scheduler", "euler-a", "--sigmas", "beta"], "--sigmas beta: scheduler euler-a accepts default"],
    // without --scheduler the model's own (PNDM here) is the one asked
    [
      ["--sigmas", "exponential"],
      "--sigmas exponential: scheduler pndm accepts none (it steps over alphas_cumprod by timestep and has no sigmas)",
    ],
    [
      ["--scheduler", "euler", "--sigmas", "cosine"],
      '--sigmas: unknown sigma schedule "cosine"; choose one of default, karras, exponential, beta',
    ],
  ];
  for (const [flags, message] of cases) {
    const io = capture();
    expect(await main(["generate", "--prompt", "x", "--steps", "2", "--out", "never.png", ...flags], io)).toBe(2);
    expect(io.stderr().trim().split("\n")).toHaveLength(1);
    expect(io.stderr()).toContain(message);
    expect(fs.existsSync(path.join(tmp, "never.png"))).toBe(false);
  }
});

test("--help lists every scheduler", async () => {
  const lines: string[] = [];
  const log = jest.spyOn(console, "log").mockImplementation((...a: unknown[]) => {
    lines.push(a.join(" "));
  });
  try {
    expect(await main(["generate", "--help"], capture())).toBe(0);
  } finally {
    log.mockRestore();
  }
  const help = lines.join("\n");
  for (const name of SCHEDULER_NAMES) expect(help).toContain(name);
  // and --sigmas with its schedules, and which schedulers take them
  expect(help).toContain("--sigmas");
  expect(help.replace(/\s+/g, " ")).toContain("sigma schedule, one of: default, karras, exponential, beta");
  expect(help.replace(/\s+/g, " ")).toContain("lms, euler, heun, dpm++2m, unipc: default, karras, exponential, beta");
});

test("the same seed gives byte-identical PNGs", async () => {
  for (const f of ["d1.png", "d2.png"])
    expect(await main(["generate", "--prompt", "same", "--steps", "3", "--seed", "9", "--out", f], capture())).toBe(0);
  expect(fs.readFileSync(path.join(tmp, "d1.png")).equals(fs.readFileSync(path.join(tmp, "d2.png")))).toBe(true);
});
