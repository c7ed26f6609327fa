/** `sd-harness generate`: txt2img / img2img / inpainting to PNG files with their parameters. */
import * as fs from "node:fs";
import * as path from "node:path";
import yargs from "yargs";
import { HarnessError, ExitCode } from "../../errors";
import { StableDiffusionPipeline, validateSize, validateMaskSize, NO_HIDDEN_STATES } from "../../pipeline/pipeline";
import { GENERATION_CONFIG, loadModelFolder, readGenerationDefaults } from "../../pipeline/model-folder";
import { readRgbPng, readMaskPng, writePng, PngHeader } from "../../pipeline/image";
import { MAX_PROMPT_CHARS } from "../../pipeline/tokenizer";
import {
  a1111SamplerName,
  a1111ScheduleType,
  checkSigmaSchedule,
  findScheduler,
  parseSchedulerConfig,
  parseSigmaSchedule,
  SCHEDULER_NAMES,
  SCHEDULERS,
  SIGMA_SCHEDULE_NAMES,
  SigmaScheduleName,
} from "../../schedulers";
import { CliIO, progress } from "../io";
import {
  asTyped,
  intFlag,
  numFlag,
  seedFlag,
  threadsFlag,
  THREADS_HELP,
  runtimeFromFlags,
  RUNTIME_HELP,
  PORT_HELP,
  PORT_TIMEOUT_HELP,
} from "../parse";
import { DEFAULT_RUNTIME } from "../../runtime/index";
import { DEFAULT_GENERATE_MODEL, VERSION } from "../defaults";

export function generateParser(argv: string[]) {
  return (
    yargs(argv)
      .scriptName("sd-harness generate")
      .usage(
        "$0 --prompt TEXT [options]\n\nGenerate images with an SD 1.x ONNX model folder (txt2img, img2img with --init-image, inpainting with --mask).",
      )
      .option("model", {
        type: "string",
        default: DEFAULT_GENERATE_MODEL,
        describe:
          'SD 1.x ONNX model folder (optimum layout); the default, shapes-sd, draws prompts like "a red circle on a blue background, left"',
      })
      .option("prompt", { type: "string", demandOption: true, describe: "what to draw" })
      .option("negative-prompt", { type: "string", describe: "what to steer away from" })
      .option("steps", { type: "number", describe: "denoising steps (default: the model's generation_config.json, else 20)" })
      .option("guidance", {
        type: "number",
        describe: "classifier-free guidance scale, <= 1 disables CFG (default: the model's generation_config.json, else 7.5)",
      })
      .option("scheduler", { type: "string", describe: `the sampler, one of: ${SCHEDULER_NAMES.join(", ")} (default: the model's)` })
      .option("sigmas", { type: "string", describe: SIGMAS_HELP })
      .option("seed", { type: "string", describe: "torch seed, 0 to 2^64-1 (default: random, printed)" })
      .option("width", {
        type: "number",
        describe:
          "a multiple of the model's size step: the VAE's factor x the U-Net's down-sampling, 64 for SD 1.x (default: the model's sample size, or the init image's)",
      })
      .option("height", { type: "number", describe: "a multiple of the model's size step (64 for SD 1.x)" })
      .option("force-sd1", {
        type: "boolean",
        default: false,
        describe: "run a folder that looks like SD 2.x (1024-wide text, 768-v, OpenCLIP tokenizer) as SD 1.x anyway",
      })
      .option("batch", { type: "number", default: 1, describe: "images per prompt (one noise draw for the batch, as diffusers)" })
      .option("init-image", { type: "string", describe: "RGB PNG for img2img / inpainting" })
      .option("strength", { type: "number", describe: "img2img strength in (0, 1] (default 0.8; inpainting 1.0)" })
      .option("mask", { type: "string", describe: "PNG mask for inpainting, white = repaint (needs a 9-channel model)" })
      .option("clip-skip", {
        type: "number",
        default: 0,
        describe: "text-encoder layers to skip (diffusers' clip_skip; A1111's value minus 1)",
      })
      .option("eta", { type: "number", default: 0, describe: "DDIM eta" })
      .option("threads", { type: "number", default: 0, describe: THREADS_HELP })
      .option("runtime", { type: "string", default: DEFAULT_RUNTIME, describe: RUNTIME_HELP })
      .option("port", { type: "string", describe: PORT_HELP })
      .option("port-timeout", { type: "string", describe: PORT_TIMEOUT_HELP })
      .option("low-memory", { type: "boolean", default: false, describe: "load each model component only while it runs" })
      .option("out", { type: "string", default: "out.png", describe: "output PNG (batch: name-0.png, name-1.png, …)" })
      .option("overwrite", { type: "boolean", default: false, describe: "replace existing output files" })
      .option("truncate", {
        type: "boolean",
        default: false,
        describe: "accept prompts over 77 CLIP tokens, keeping the first 77 (as diffusers does)",
      })
      .option("verbose", { type: "boolean", default: false, describe: "stack traces on errors" })
      .strict()
      // a repeated flag takes its last value, as in most CLIs: yargs' default made `--steps 2 --steps 3`
      // an array (reported as `["2","3"] is not an integer`) and `--out a.png --out b.png` the path "a.png,b.png"
      .parserConfiguration({ "duplicate-arguments-array": false })
      .fail((msg, err) => {
        throw new HarnessError(`generate: ${msg ?? err?.message ?? "bad arguments"}`, ExitCode.usage);
      })
      .help()
      .version(VERSION)
      .exitProcess(false)
  );
}

/**
 * --sigmas' help, from the registry: which schedulers accept which sigma schedule (stable-diffusion.cpp
 * calls this choice --scheduler beside its --sampling-method; here --scheduler stays the sampler).
 */
const SIGMAS_HELP = (() => {
  const groups = new Map<string, string[]>();
  for (const d of SCHEDULERS) {
    const key = d.sigmaSchedules.length > 0 ? d.sigmaSchedules.join(", ") : "none (no sigmas)";
    groups.set(key, [...(groups.get(key) ?? []), d.id]);
  }
  return (
    `sigma schedule, one of: ${SIGMA_SCHEDULE_NAMES.join(", ")} (default: the model's config: diffusers' use_karras_sigmas / ` +
    `use_exponential_sigmas / use_beta_sigmas). Accepted: ${[...groups].map(([accepts, ids]) => `${ids.join(", ")}: ${accepts}`).join("; ")}`
  );
})();

/**
 * A1111's `parameters` text; `scheduler` is a registry id, written as A1111's sampler name, and
 * `sigmas` the sigma schedule it ran on, written as A1111's "Schedule type" where it has one.
 */
export function a1111Parameters(p: {
  prompt: string;
  negative?: string;
  steps: number;
  scheduler: string;
  sigmas?: SigmaScheduleName;
  guidance: number;
  seed: bigint;
  width: number;
  height: number;
  model: string;
  strength?: number;
  clipSkip: number;
}): string {
  const scheduleType = a1111ScheduleType(p.scheduler, p.sigmas);
  const fields = [
    `Steps: ${p.steps}`,
    `Sampler: ${a1111SamplerName(p.scheduler)}`,
    ...(scheduleType ? [`Schedule type: ${scheduleType}`] : []),
    `CFG scale: ${p.guidance}`,
    `Seed: ${p.seed}`,
    `Size: ${p.width}x${p.height}`,
    `Model: ${p.model}`,
  ];
  if (p.strength !== undefined) fields.push(`Denoising strength: ${p.strength}`);
  if (p.clipSkip > 0) fields.push(`Clip skip: ${p.clipSkip + 1}`);
  fields.push(`RNG: CPU`, `Version: sd-harness ${VERSION}`);
  const lines = [p.prompt];
  if (p.negative) lines.push(`Negative prompt: ${p.negative}`);
  lines.push(fields.join(", "));
  return lines.join("\n");
}

/**
 * img2img and inpainting take the init image's size: without --width/--height that size must follow
 * the model's size rule, and with them it must match. Checked on the PNG header, before decoding, and
 * said of the image (a 1x1 init image was reported as a bad --width nobody had passed).
 */
function checkInitImageSize(file: string, h: PngHeader, width: number | undefined, height: number | undefined, step: number): void {
  const w = width ?? h.width;
  const hh = height ?? h.height;
  if (w !== h.width || hh !== h.height) {
    throw new HarnessError(
      `--init-image ${file}: ${h.width}x${h.height} pixels but --width/--height ask for ${w}x${hh}; resize the image or drop --width/--height`,
      ExitCode.usage,
    );
  }
  if (h.width % step !== 0 || h.height % step !== 0) {
    throw new HarnessError(
      `--init-image ${file}: ${h.width}x${h.height} pixels; the output takes the image's size, which must be a multiple of ${step} on each side for this model (the VAE's factor x the U-Net's down-sampling); resize the image`,
      ExitCode.usage,
    );
  }
}

function outputPaths(out: string, count: number): string[] {
  if (count === 1) return [out];
  const ext = path.extname(out) || ".png";
  const base = out.slice(0, out.length - path.extname(out).length);
  return Array.from({ length: count }, (_, i) => `${base}-${i}${ext}`);
}

/**
 * `argv`: the command line as given, so that a bad number is quoted as typed ("-2", "abc"; yargs has
 * made it a number or NaN by then).
 */
export async function runGenerate(args: Record<string, unknown>, io: CliIO, argv: readonly string[] = []): Promise<number> {
  const typed = (flag: string) => asTyped(argv, flag, args[flag]);
  const stepsFlag = args.steps === undefined ? undefined : intFlag("--steps", typed("steps"), 1, 1000);
  const guidanceFlag = args.guidance === undefined ? undefined : numFlag("--guidance", typed("guidance"), 0, 100);
  const batch = intFlag("--batch", typed("batch"), 1, 64);
  const clipSkip = intFlag("--clip-skip", typed("clip-skip"), 0, 48);
  const threads = threadsFlag(typed("threads"));
  const eta = numFlag("--eta", typed("eta"), 0, 1);
  const seed = args.seed === undefined ? BigInt.asUintN(53, BigInt(Math.floor(Math.random() * 2 ** 53))) : seedFlag(args.seed);
  const width = args.width === undefined ? undefined : intFlag("--width", typed("width"), 8, 8192);
  const height = args.height === undefined ? undefined : intFlag("--height", typed("height"), 8, 8192);
  const strength = args.strength === undefined ? undefined : numFlag("--strength", typed("strength"), Number.MIN_VALUE, 1);
  const prompt = String(args.prompt);
  const negative = args["negative-prompt"] === undefined ? undefined : String(args["negative-prompt"]);
  // bounded before anything else: CLIP reads 77 tokens, and a huge argument is refused in milliseconds
  for (const [flag, text] of [
    ["--prompt", prompt],
    ["--negative-prompt", negative],
  ] as const) {
    if (text !== undefined && text.length > MAX_PROMPT_CHARS) {
      throw new HarnessError(
        `${flag}: ${text.length} characters, over the limit of ${MAX_PROMPT_CHARS}; CLIP reads only the first 77 tokens`,
        ExitCode.usage,
      );
    }
  }
  if (args.scheduler !== undefined && !SCHEDULER_NAMES.includes(String(args.scheduler))) {
    throw new HarnessError(
      `--scheduler: unknown scheduler ${JSON.stringify(args.scheduler)}; choose one of ${SCHEDULER_NAMES.join(", ")}`,
      ExitCode.usage,
    );
  }
  // a schedule that is none is refused here; one the scheduler does not take, once the model says which runs
  const sigmas = args.sigmas === undefined ? undefined : String(args.sigmas);
  if (sigmas !== undefined) parseSigmaSchedule(sigmas);
  if (args.mask && !args["init-image"]) throw new HarnessError("--mask needs --init-image", ExitCode.usage);
  // The folder's configs (cheap) before the images and the sessions (seconds): size flags fail
  // before any work, and an image's declared size is checked before its pixels are decoded.
  const modelFolder = loadModelFolder(String(args.model), { forceSd1: Boolean(args["force-sd1"]) });
  // a flag wins over the folder's generation_config.json, which wins over diffusers' defaults
  const defaults = readGenerationDefaults(modelFolder.dir);
  const steps = stepsFlag ?? defaults.steps ?? 20;
  const guidance = guidanceFlag ?? defaults.guidanceScale ?? 7.5;
  const fromFolder = [
    stepsFlag === undefined && defaults.steps !== undefined ? "steps" : "",
    guidanceFlag === undefined && defaults.guidanceScale !== undefined ? "guidance" : "",
  ].filter(Boolean);
  // --sigmas is checked against the sampler that will run (--scheduler, else the model's own class)
  // before any work; generate() runs it and reports the schedule it ran on
  const configFile = `${modelFolder.dir}/scheduler/scheduler_config.json`;
  const sampler =
    args.scheduler === undefined ? parseSchedulerConfig({ ...modelFolder.schedulerConfig }, configFile).className : String(args.scheduler);
  const samplerChoice = findScheduler(sampler);
  if (sigmas !== undefined && samplerChoice) checkSigmaSchedule(samplerChoice, sigmas);

  validateSize(width, height, modelFolder.sizeStep);
  const initFile = String(args["init-image"]);
  const initImage = args["init-image"]
    ? readRgbPng(initFile, "--init-image", (h) => checkInitImageSize(initFile, h, width, height, modelFolder.sizeStep))
    : null;
  const mask =
    initImage && args.mask ? readMaskPng(String(args.mask), "--mask", (h) => validateMaskSize(h, initImage.width, initImage.height)) : null;
  const out = String(args.out);
  const targets = outputPaths(out, batch);
  // Fail before any work when the outputs cannot be written.
  for (const t of targets) {
    const dir = path.dirname(path.resolve(t));
    if (!fs.existsSync(dir)) throw new HarnessError(`--out ${t}: directory ${dir} does not exist`, ExitCode.output);
    if (!fs.statSync(dir).isDirectory()) throw new HarnessError(`--out ${t}: ${dir} is not a directory`, ExitCode.output);
    if (fs.existsSync(t) && fs.statSync(t).isDirectory()) throw new HarnessError(`--out ${t}: is a directory`, ExitCode.output);
    if (!args.overwrite && fs.existsSync(t))
      throw new HarnessError(`--out ${t}: already exists (pass --overwrite to replace it)`, ExitCode.output);
    // access(W_OK) says yes to root everywhere, even where nothing can be created (/proc, read-only
    // mounts): create and remove a probe file instead.
    const probe = path.join(dir, `.sd-harness-probe.${process.pid}.tmp`);
    try {
      fs.writeFileSync(probe, "", { flag: "wx" });
      fs.unlinkSync(probe);
    } catch (e) {
      throw new HarnessError(
        `--out ${t}: directory ${dir} is not writable (${(e as NodeJS.ErrnoException).code ?? "error"})`,
        ExitCode.output,
      );
    }
  }

  const runtime = runtimeFromFlags(
    argv,
    { runtime: args.runtime, port: args.port, portTimeout: asTyped(argv, "port-timeout", args["port-timeout"]) },
    io.signal,
    args.verbose ? (line) => io.err(`${line}\n`) : undefined,
  );
  const pipe = await StableDiffusionPipeline.fromFolder(modelFolder, {
    threads,
    runtime,
    lowMemory: Boolean(args["low-memory"]),
    warn: (m) => io.err(`sd-harness: warning: ${m}\n`),
  }).catch(async (e: unknown) => {
    await runtime.close();
    throw e;
  });
  try {
    if (clipSkip > 0 && !(await pipe.hasHiddenStates()))
      throw new HarnessError(`--clip-skip: ${modelFolder.textEncoder}: ${NO_HIDDEN_STATES}`, ExitCode.usage);
    // CLIP reads 77 tokens. A longer prompt is refused unless --truncate says to keep the first 77
    // as diffusers does (with a warning): silently dropping the end of a prompt surprises people.
    for (const [flag, text] of [
      ["--prompt", prompt],
      ["--negative-prompt", negative],
    ] as const) {
      if (text === undefined) continue;
      pipe.tokenize([text], (m) => {
        if (!args.truncate)
          throw new HarnessError(
            `${flag}: ${m}; shorten it, or pass --truncate to keep the first 77 tokens as diffusers does`,
            ExitCode.usage,
          );
        io.err(`sd-harness: warning: ${flag}: ${m}\n`);
      });
    }
    // the bar appears at the first step, when the number of U-Net calls is known; the rate counts from now
    const t0 = process.hrtime.bigint();
    let total = 0;
    let barRef = { tick: (_done: number) => {}, end: () => {} };
    const result = await pipe.generate({
      prompt,
      negativePrompt: negative ?? null,
      steps,
      guidanceScale: guidance,
      scheduler: args.scheduler as string | undefined,
      sigmas: sigmas as SigmaScheduleName | undefined,
      seed,
      width,
      height,
      numImagesPerPrompt: batch,
      initImage,
      mask,
      strength,
      clipSkip,
      eta,
      signal: io.signal,
      onStep: (s) => {
        if (total === 0) {
          total = s.total;
          barRef = progress(io, "generate", total, t0);
        }
        barRef.tick(s.index + 1);
      },
    });
    barRef.end();
    // the registry id of what ran (the model's own scheduler when no --scheduler was given)
    const schedulerName = result.scheduler;
    const sigmaSchedule = result.sigmaSchedule;
    const params = a1111Parameters({
      prompt,
      negative,
      steps,
      scheduler: schedulerName,
      sigmas: sigmaSchedule,
      guidance,
      seed,
      width: result.width,
      height: result.height,
      model: pipe.folder.name,
      strength: initImage ? (strength ?? (mask ? 1 : 0.8)) : undefined,
      clipSkip,
    });
    result.images.forEach((img, i) => {
      writePng(targets[i], img, { parameters: params }, !args.overwrite);
      io.out(`${targets[i]}\n`);
    });
    const schedule = sigmaSchedule && sigmaSchedule !== "default" ? ` (${sigmaSchedule} sigmas)` : "";
    const folderNote =
      fromFolder.length > 0 ? `, guidance ${guidance} (${fromFolder.join(" and ")} from the model's ${GENERATION_CONFIG})` : "";
    io.err(`seed ${seed}, ${steps} steps, ${schedulerName}${schedule}, ${result.width}x${result.height}${folderNote}\n`);
    return ExitCode.ok;
  } finally {
    await pipe.release();
    await runtime.close();
  }
}
