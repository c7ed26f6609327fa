/**
 * Stable Diffusion 1.x on ONNX Runtime (onnxruntime-node by default; src/runtime/): txt2img, img2img and inpainting, step for step the
 * arithmetic of diffusers' StableDiffusion{,Img2Img,Inpaint}Pipeline, so that the same seed gives
 * the same noise and (up to the runtime's own float drift) the same image.
 *
 * The denoising loop, in one place (diffusers' __call__):
 *   ids      = tokenize(prompt), tokenize(negative or "")             // [B, 77]
 *   embeds   = cat([text_encoder(neg_ids), text_encoder(ids)])        // [2B, 77, D] with CFG
 *   latents  = randn([B, 4, H/8, W/8], generator) * init_noise_sigma  // or img2img's noised image
 *   for i, t in timesteps:
 *     x     = scale_model_input(cat([latents, latents]), i)           // [2B, 4, h, w]
 *     eps   = unet(x, t, embeds)                                      // one batched call
 *     eps   = eps_uncond + g * (eps_text - eps_uncond)
 *     latents = scheduler.step(eps, i, latents)
 *   image    = vae_decoder(latents / scaling_factor)                  // [B, 3, H, W] in [-1, 1]
 */
import * as fs from "node:fs";
import { HarnessError, ExitCode, invalid, invalidParameter, param } from "../errors";
import { F32, f32, numel, concat0, concatChannels, formatDims } from "../tensor/tensor";
import { TorchGenerator } from "../rng/torch-generator";
import { readGraph } from "../onnx/graph-outputs";
import { createScheduler, parseSchedulerConfig } from "../schedulers";
import { Scheduler, SchedulerConfig, SigmaScheduleName } from "../schedulers/types";
import { ClipTokenizer } from "./tokenizer";
import { ModelFolder, loadModelFolder, describeCorrection } from "./model-folder";
import { OnnxComponent, SessionSettings, ComponentKind } from "./onnx-model";
import { toF32, fromF32 } from "../tensor/float16";
import type { RuntimeTensor } from "../runtime/types";
import { readFloatInitializers } from "../onnx/initializers";
import { RgbImage, GrayImage, imageToTensor, maskToTensor, tensorToImages } from "./image";

const f = Math.fround;

export interface PipelineOptions extends SessionSettings {
  /** load each component only while it is needed and release it after (lowest peak memory) */
  readonly lowMemory?: boolean;
  /** run a folder that looks like SD 2.x as SD 1.x anyway */
  readonly forceSd1?: boolean;
  /** told once per config value corrected the way diffusers' pipeline corrects it */
  readonly warn?: (message: string) => void;
}

/** Why clip skip cannot run on a text encoder without hidden-state outputs (optimum's SD 1.x export). */
export const NO_HIDDEN_STATES =
  "the text encoder export has no hidden_states outputs, which clip skip needs; re-export it with output_hidden_states (scripts/export_onnx.py does)";

export interface GenerateParams {
  readonly prompt: string | readonly string[];
  readonly negativePrompt?: string | readonly string[] | null;
  readonly steps?: number;
  readonly guidanceScale?: number;
  /** CLI name (euler-a, dpm++2m-karras, …) or diffusers class name; default: the folder's */
  readonly scheduler?: string;
  readonly seed?: number | bigint;
  readonly width?: number;
  readonly height?: number;
  readonly numImagesPerPrompt?: number;
  readonly initImage?: RgbImage | null;
  readonly strength?: number;
  readonly mask?: GrayImage | null;
  /** layers to skip from the end of the text encoder (diffusers' clip_skip; 0 or undefined = none) */
  readonly clipSkip?: number;
  readonly eta?: number;
  /**
   * the sigma schedule ("default", "karras", "exponential", "beta") to run the scheduler on instead
   * of the one the model's config selects; must be one the scheduler accepts (its descriptor's
   * sigmaSchedules), else InvalidParameter("sigmas")
   */
  readonly sigmas?: SigmaScheduleName;
  /** start from these latents instead of drawing them (conformance: the reference's initial noise) */
  readonly latents?: F32;
  /** use these prompt embeddings ([uncond, cond] with CFG) instead of encoding the prompt */
  readonly promptEmbeds?: F32;
  /** draw from this generator (its current state) instead of a fresh one seeded with `seed` */
  readonly generator?: TorchGenerator;
  readonly onStep?: (info: StepInfo) => void | Promise<void>;
  readonly signal?: AbortSignal;
}

/** Everything the loop computed at one step, for callbacks and the conformance runner. */
export interface StepInfo {
  readonly index: number;
  readonly total: number;
  readonly timestep: number;
  /** the U-Net's input (after scale_model_input and the inpainting channels) */
  readonly modelInput: F32;
  /** the U-Net's raw output ([uncond, cond] with CFG) */
  readonly noisePredRaw: F32;
  /** after classifier-free guidance */
  readonly noisePred: F32;
  /** latents after the scheduler step */
  readonly latents: F32;
}

export interface GenerateResult {
  readonly images: RgbImage[];
  /** the VAE's output in [-1, 1], [B, 3, H, W] */
  readonly decoded: F32;
  readonly latents: F32;
  readonly initialLatents: F32;
  readonly promptEmbeds: F32;
  readonly timesteps: Float32Array;
  /** the scheduler registry's id of what ran ("dpm++2m-karras"), as `--scheduler` spells it */
  readonly scheduler: string;
  /** the sigma schedule it ran on (the params' sigmas, else the model's config; undefined without sigmas) */
  readonly sigmaSchedule: SigmaScheduleName | undefined;
  readonly seed: bigint;
  readonly width: number;
  readonly height: number;
}

/** generate()'s inputs after check_inputs, with the defaults filled in. */
interface RunInputs {
  readonly prompts: readonly string[];
  readonly negative: readonly string[] | null;
  readonly perPrompt: number;
  readonly steps: number;
  readonly guidance: number;
  readonly cfg: boolean;
  readonly seed: bigint;
  readonly init: RgbImage | null;
  readonly mask: GrayImage | null;
  readonly width: number;
  readonly height: number;
  readonly strength: number;
  /** the latents' shape, [B, C, H / f, W / f] */
  readonly shape: readonly number[];
}

interface PreparedLatents {
  readonly latents: F32;
  /** inpainting: the mask at latent size and the masked image's latents, doubled for CFG */
  readonly maskLatent: F32 | null;
  readonly maskedImageLatents: F32 | null;
}

/**
 * diffusers' get_timesteps: img2img / inpainting start part-way along the schedule, at
 * int(steps * strength) steps from its end (times the scheduler's order).
 */
function startIndex(scheduler: Scheduler, steps: number, strength: number): number {
  const initSteps = Math.min(Math.floor(steps * strength), steps);
  const tStart = Math.max(steps - initSteps, 0);
  const first = tStart * scheduler.order;
  if (first >= scheduler.timesteps.length) {
    throw invalid("strength")`${param("strength")} ${strength} with ${param("steps")} ${steps} leaves no denoising steps`;
  }
  return first;
}

export class NumericError extends HarnessError {
  constructor(
    readonly stage: string,
    readonly step: number | null,
    what: string,
  ) {
    super(`${what} in ${stage}${step === null ? "" : ` at step ${step}`}`, ExitCode.numeric);
    this.name = "NumericError";
  }
}

/** The first NaN / Inf in a tensor, or -1. */
export function firstNonFinite(data: Float32Array): number {
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) return i;
  return -1;
}

function checkFinite(t: F32, stage: string, step: number | null): void {
  const i = firstNonFinite(t.data);
  if (i >= 0) throw new NumericError(stage, step, `${Number.isNaN(t.data[i]) ? "NaN" : "Inf"} at element ${i} of ${formatDims(t.dims)}`);
}

function toList(v: string | readonly string[]): string[] {
  return typeof v === "string" ? [v] : [...v];
}

/**
 * The text encoder's final LayerNorm (weight, bias), which clip skip applies to an earlier hidden
 * state as diffusers' encode_prompt does. torch.onnx stores parameters of identical values once and
 * names the others through Identity nodes (a freshly initialised model's LayerNorms are all ones and
 * zeros), so where no initializer has the name, the name is followed through Identity nodes to the
 * initializer that holds its values.
 */
function readFinalLayerNorm(file: string): { weight: Float32Array; bias: Float32Array } {
  const isFinal = (n: string) => /final_layer_norm\.(weight|bias)$/.test(n);
  let values = readFloatInitializers(file, isFinal);
  const holder = new Map<string, string>([...values.keys()].map((n) => [n, n])); // name -> initializer with its values
  if (holder.size < 2) {
    const identity = new Map<string, string>(); // output -> input of each Identity node
    for (const node of readGraph(fs.readFileSync(file), file).nodes) {
      if (node.opType === "Identity" && node.inputs.length === 1 && node.outputs.length === 1)
        identity.set(node.outputs[0], node.inputs[0]);
    }
    for (const alias of [...identity.keys()].filter(isFinal)) {
      let n = alias;
      for (let hops = 0; identity.has(n) && hops < identity.size; hops++) n = identity.get(n)!;
      holder.set(alias, n);
    }
    const sources = new Set(holder.values());
    values = readFloatInitializers(file, (n) => sources.has(n));
  }
  const pick = (suffix: string) => {
    const name = [...holder.keys()].find((n) => n.endsWith(suffix));
    return name === undefined ? undefined : values.get(holder.get(name)!);
  };
  const weight = pick("weight");
  const bias = pick("bias");
  if (!weight || !bias) throw new HarnessError(`${file}: final_layer_norm weights not found; clip skip cannot be applied`, ExitCode.usage);
  return { weight, bias };
}

export class StableDiffusionPipeline {
  private readonly loaded = new Map<ComponentKind, OnnxComponent>();
  private finalNorm: { weight: Float32Array; bias: Float32Array } | null = null;

  private constructor(
    readonly folder: ModelFolder,
    readonly tokenizer: ClipTokenizer,
    readonly schedulerConfig: SchedulerConfig,
    readonly options: PipelineOptions,
  ) {}

  /** Load a model folder. Sessions are created now, or per use with `lowMemory`. */
  static async load(dir: string, options: PipelineOptions = {}): Promise<StableDiffusionPipeline> {
    return StableDiffusionPipeline.fromFolder(loadModelFolder(dir, { forceSd1: options.forceSd1 }), options);
  }

  /** From a folder whose configs were already read (the CLI checks flags against them first). */
  static async fromFolder(folder: ModelFolder, options: PipelineOptions = {}): Promise<StableDiffusionPipeline> {
    const tokenizer = ClipTokenizer.fromDir(folder.tokenizerDir);
    const schedulerConfig = parseSchedulerConfig(
      folder.schedulerConfig as Record<string, unknown>,
      `${folder.dir}/scheduler/scheduler_config.json`,
    );
    const p = new StableDiffusionPipeline(folder, tokenizer, schedulerConfig, options);
    for (const c of folder.corrections) options.warn?.(describeCorrection(c));
    if (!options.lowMemory) {
      for (const kind of ["text_encoder", "unet", "vae_decoder"] as const) await p.component(kind);
    }
    return p;
  }

  private fileOf(kind: ComponentKind): string {
    const f = {
      text_encoder: this.folder.textEncoder,
      unet: this.folder.unet,
      vae_decoder: this.folder.vaeDecoder,
      vae_encoder: this.folder.vaeEncoder,
    }[kind];
    if (!f)
      throw new HarnessError(`${this.folder.dir}: no vae_encoder/model.onnx; img2img and inpainting need the VAE encoder`, ExitCode.usage);
    return f;
  }

  /** The component's session, loading it on first use. */
  async component(kind: ComponentKind): Promise<OnnxComponent> {
    const have = this.loaded.get(kind);
    if (have) return have;
    const c = await OnnxComponent.load(kind, this.fileOf(kind), this.options);
    this.loaded.set(kind, c);
    return c;
  }

  private async done(kind: ComponentKind): Promise<void> {
    if (!this.options.lowMemory) return;
    const c = this.loaded.get(kind);
    this.loaded.delete(kind);
    await c?.release();
  }

  async release(): Promise<void> {
    for (const c of this.loaded.values()) await c.release();
    this.loaded.clear();
  }

  /** Whether the text encoder exposes hidden_states.N outputs (clip skip needs them). */
  async hasHiddenStates(): Promise<boolean> {
    const enc = await this.component("text_encoder");
    const yes = enc.outputNames.some((n) => n.startsWith("hidden_states."));
    await this.done("text_encoder");
    return yes;
  }

  get defaultSize(): number {
    return this.folder.unetConfig.sampleSize * this.folder.vaeConfig.scaleFactor;
  }

  // ---- text ----------------------------------------------------------------------------------

  /** input_ids for each prompt, padded to 77 with <|endoftext|>; warns on truncation like transformers. */
  tokenize(prompts: readonly string[], warn: (msg: string) => void = () => {}): Int32Array[] {
    return prompts.map((p) => {
      const r = this.tokenizer.tokenize(p, this.folder.textConfig.maxPositionEmbeddings);
      if (r.truncated) {
        warn(`prompt truncated: ${r.untruncatedLength} tokens, CLIP reads only ${this.folder.textConfig.maxPositionEmbeddings}`);
      }
      return r.ids;
    });
  }

  /** Text-encoder states for a batch of token ids: last hidden state, or with clipSkip the
   *  (clipSkip+1)-th from last hidden state passed through the final layer norm (diffusers). */
  async encodeIds(ids: readonly Int32Array[], clipSkip = 0): Promise<F32> {
    const enc = await this.component("text_encoder");
    const seq = ids[0].length;
    const type = enc.inputType("input_ids");
    const flat =
      type === "int64" ? BigInt64Array.from(ids.flatMap((a) => Array.from(a, BigInt))) : Int32Array.from(ids.flatMap((a) => Array.from(a)));
    const feed: RuntimeTensor = { dtype: type === "int64" ? "int64" : "int32", dims: [ids.length, seq], data: flat };
    let out: F32;
    if (!clipSkip) {
      const r = await enc.run({ input_ids: feed }, ["last_hidden_state"]);
      out = toF32(r.last_hidden_state);
    } else {
      const layers = this.folder.textConfig.numHiddenLayers;
      if (clipSkip < 0 || clipSkip >= layers)
        throw invalid("clipSkip")`${param("clipSkip")} ${clipSkip}: must be between 0 and ${layers - 1} for this text encoder`;
      // hidden_states has layers + 1 entries (the embeddings first); diffusers takes [-(clip_skip + 1)]
      const name = `hidden_states.${layers - clipSkip}`;
      if (!enc.outputNames.some((n) => n.startsWith("hidden_states.")))
        throw invalidParameter("clipSkip", `${enc.file}: ${NO_HIDDEN_STATES}`);
      if (!enc.outputNames.includes(name)) {
        throw invalidParameter(
          "clipSkip",
          `${enc.file} has no output ${name}; clip skip needs a text encoder exported with all its hidden states`,
        );
      }
      const r = await enc.run({ input_ids: feed }, [name]);
      out = this.finalLayerNorm(toF32(r[name]), enc.file);
    }
    await this.done("text_encoder");
    return out;
  }

  private finalLayerNorm(x: F32, file: string): F32 {
    this.finalNorm ??= readFinalLayerNorm(file);
    const { weight, bias } = this.finalNorm;
    const d = x.dims[x.dims.length - 1];
    const eps = this.folder.textConfig.layerNormEps;
    const out = new Float32Array(x.data.length);
    for (let r = 0; r < x.data.length / d; r++) {
      const row = x.data.subarray(r * d, (r + 1) * d);
      let mean = 0;
      for (const v of row) mean += v;
      mean /= d;
      let varSum = 0;
      for (const v of row) varSum += (v - mean) * (v - mean);
      const rstd = 1 / Math.sqrt(varSum / d + eps);
      for (let i = 0; i < d; i++) out[r * d + i] = (row[i] - mean) * rstd * weight[i] + bias[i];
    }
    return f32(out, x.dims);
  }

  /** [uncond…, cond…] embeddings as diffusers' encode_prompt builds them (each prompt repeated
   *  numImagesPerPrompt times, consecutively). Without CFG only the cond half. */
  async encodePrompt(
    prompts: readonly string[],
    negative: readonly string[] | null,
    cfg: boolean,
    perPrompt: number,
    clipSkip = 0,
    warn?: (m: string) => void,
  ): Promise<F32> {
    const repeatEach = (ids: Int32Array[]) => ids.flatMap((x) => Array.from({ length: perPrompt }, () => x));
    const cond = repeatEach(this.tokenize(prompts, warn));
    if (!cfg) return this.encodeIds(cond, clipSkip);
    const neg = negative ?? prompts.map(() => "");
    if (neg.length !== prompts.length) {
      throw invalidParameter("negativePrompt", `${neg.length} negative prompts for ${prompts.length} prompts`);
    }
    const uncond = repeatEach(this.tokenize(neg, warn));
    if (clipSkip) {
      // diffusers' encode_prompt applies clip_skip to the prompt only: the negative prompt's
      // embeddings are always the last hidden state. Faithful to that, so two calls.
      return concat0([await this.encodeIds(uncond, 0), await this.encodeIds(cond, clipSkip)]);
    }
    // One text-encoder call for both halves; the states are per row, so this equals two calls.
    return this.encodeIds([...uncond, ...cond], 0);
  }

  // ---- U-Net and VAE ---------------------------------------------------------------------------

  async runUnet(sample: F32, timestep: number, encoderHiddenStates: F32): Promise<F32> {
    const unet = await this.component("unet");
    const tType = unet.inputType("timestep");
    const spec = unet.inputs.get("timestep")!;
    // shape [1] broadcasts in every export seen; a fixed batch dimension gets the batch
    const fixed = typeof spec.shape[0] === "number" && (spec.shape[0] as number) > 1 ? (spec.shape[0] as number) : 1;
    const shape = spec.shape.length === 0 ? [] : [fixed];
    const n = Math.max(1, fixed);
    // An int64 timestep input truncates fractional timesteps, as such exports' own pipelines do.
    const tTensor: RuntimeTensor =
      tType === "int64"
        ? { dtype: "int64", dims: shape, data: BigInt64Array.from({ length: n }, () => BigInt(Math.trunc(timestep))) }
        : tType === "float16"
          ? fromF32(f32(new Float32Array(n).fill(timestep), shape), "float16")
          : tType === "float64"
            ? { dtype: "float64", dims: shape, data: new Float64Array(n).fill(timestep) }
            : { dtype: "float32", dims: shape, data: new Float32Array(n).fill(timestep) };
    let r: Record<string, RuntimeTensor>;
    try {
      r = await unet.run({
        sample: fromF32(sample, unet.inputType("sample")),
        timestep: tTensor,
        encoder_hidden_states: fromF32(encoderHiddenStates, unet.inputType("encoder_hidden_states")),
      });
    } catch (e) {
      // A U-Net traced at a size divisible by 64 px bakes in up-sampling by exact doubling (diffusers'
      // forward_upsample_size is false then), so other sizes fail where skip connections concatenate.
      if (e instanceof HarnessError && /Concat|concat/.test(e.message) && /dimension/.test(e.message)) {
        const [, , h, w] = sample.dims;
        const vsf = this.folder.vaeConfig.scaleFactor;
        throw invalid(
          "width",
        )`${param("width")}/${param("height")}: ${w * vsf}x${h * vsf} is not supported by ${unet.file}: this export up-samples by exact doubling, so use sizes divisible by ${this.folder.sizeStep}`;
      }
      throw e;
    }
    return toF32(r[unet.outputNames[0]]);
  }

  /** latents (scaled by scaling_factor) -> image in [-1, 1]; batch decoded one by one would differ
   *  in nothing but peak memory, so the batch goes in one call. */
  async decodeLatents(latents: F32): Promise<F32> {
    const dec = await this.component("vae_decoder");
    const sf = f(this.folder.vaeConfig.scalingFactor);
    const scaled = f32(
      latents.data.map((v) => f(v / sf)),
      latents.dims,
    );
    const r = await dec.run({ latent_sample: fromF32(scaled, dec.inputType("latent_sample")) });
    await this.done("vae_decoder");
    return toF32(r[dec.outputNames[0]]);
  }

  /** image in [-1, 1] -> the latent distribution's mean and std (DiagonalGaussianDistribution:
   *  logvar clamped to [-30, 20], std = exp(0.5 logvar)). */
  async encodeImage(image: F32): Promise<{ mean: F32; std: F32 }> {
    const enc = await this.component("vae_encoder");
    const r = await enc.run({ sample: fromF32(image, enc.inputType("sample")) });
    const out = toF32(r[enc.outputNames[0]]);
    await this.done("vae_encoder");
    const [b, c, h, w] = out.dims;
    const lc = this.folder.vaeConfig.latentChannels;
    if (c === lc) {
      // an export whose encoder already samples (older diffusers conversion): no distribution
      return { mean: out, std: f32(new Float32Array(out.data.length), out.dims) };
    }
    if (c !== 2 * lc) throw new HarnessError(`${enc.file}: output has ${c} channels, expected ${2 * lc} (mean, logvar)`, ExitCode.usage);
    const plane = h * w;
    const mean = new Float32Array(b * lc * plane);
    const std = new Float32Array(b * lc * plane);
    for (let n = 0; n < b; n++) {
      mean.set(out.data.subarray(n * c * plane, (n * c + lc) * plane), n * lc * plane);
      const lv = out.data.subarray((n * c + lc) * plane, (n + 1) * c * plane);
      for (let i = 0; i < lv.length; i++) {
        const clamped = Math.min(Math.max(lv[i], -30), 20);
        std[n * lc * plane + i] = f(Math.exp(f(0.5 * clamped)));
      }
    }
    return { mean: f32(mean, [b, lc, h, w]), std: f32(std, [b, lc, h, w]) };
  }

  // ---- generation ------------------------------------------------------------------------------

  resolveScheduler(name: string | undefined, steps: number, eta = 0, sigmas?: SigmaScheduleName): Scheduler {
    return createScheduler(name ?? this.schedulerConfig.className, this.schedulerConfig, steps, { eta, sigmas });
  }

  /**
   * One generation, in diffusers' StableDiffusionPipeline.__call__ order: check the inputs, encode
   * the prompt, set the timesteps (and where img2img / inpainting starts on them), prepare the
   * latents for the task, denoise, decode.
   */
  async generate(params: GenerateParams): Promise<GenerateResult> {
    const run = this.checkInputs(params);
    const generator = params.generator ?? new TorchGenerator(run.seed);
    const scheduler = this.resolveScheduler(params.scheduler, run.steps, params.eta ?? 0, params.sigmas);

    const embeds =
      params.promptEmbeds ?? (await this.encodePrompt(run.prompts, run.negative, run.cfg, run.perPrompt, params.clipSkip ?? 0));
    checkFinite(embeds, "text_encoder", null);

    const first = startIndex(scheduler, run.steps, run.strength);
    const prepared = await this.prepareLatents(run, scheduler, first, generator, params.latents ?? null);
    const initialLatents = prepared.latents;
    checkFinite(initialLatents, "initial latents", null);

    const latents = await this.denoise(run, scheduler, first, embeds, prepared, generator, params);
    await this.done("unet");
    if (params.signal?.aborted) throw new HarnessError("interrupted", ExitCode.interrupted);
    const decoded = await this.decodeLatents(latents);
    checkFinite(decoded, "vae_decoder", null);
    return {
      images: tensorToImages(decoded),
      decoded,
      latents,
      initialLatents,
      promptEmbeds: embeds,
      timesteps: scheduler.timesteps.slice(first),
      scheduler: scheduler.name,
      sigmaSchedule: scheduler.sigmaSchedule,
      seed: run.seed,
      width: run.width,
      height: run.height,
    };
  }

  /** check_inputs, with the defaults filled in: every bad value is an InvalidParameter naming it. */
  private checkInputs(params: GenerateParams): RunInputs {
    const prompts = toList(params.prompt);
    if (prompts.length === 0) throw invalidParameter("prompt", "no prompt given");
    const negative = params.negativePrompt == null ? null : toList(params.negativePrompt);
    const perPrompt = params.numImagesPerPrompt ?? 1;
    const steps = params.steps ?? 20;
    const guidance = params.guidanceScale ?? 7.5;
    const init = params.initImage ?? null;
    const mask = params.mask ?? null;
    const width = params.width ?? init?.width ?? this.defaultSize;
    const height = params.height ?? init?.height ?? this.defaultSize;
    const strength = params.strength ?? (init && !mask ? 0.8 : 1.0);
    validate(width, height, steps, guidance, perPrompt, strength, this.folder.sizeStep);
    if (init && (init.width !== width || init.height !== height)) {
      throw invalid(
        "initImage",
      )`${param("initImage")} is ${init.width}x${init.height} but the output is ${width}x${height}; resize the image or drop ${param("width")}/${param("height")}`;
    }
    if (mask && !init) throw invalid("mask")`${param("mask")} needs ${param("initImage")}`;
    if (mask) validateMaskSize(mask, width, height);
    if (this.folder.isInpaint && !mask)
      throw invalid("mask")`${this.folder.dir}: a 9-channel inpainting U-Net needs ${param("initImage")} and ${param("mask")}`;
    if (mask && !this.folder.isInpaint)
      throw invalidParameter("mask", `${this.folder.dir} has a 4-channel U-Net; inpainting needs a 9-channel inpainting model`);
    const vsf = this.folder.vaeConfig.scaleFactor;
    const batch = prompts.length * perPrompt;
    return {
      prompts,
      negative,
      perPrompt,
      steps,
      guidance,
      cfg: guidance > 1,
      seed: BigInt(params.seed ?? 0),
      init,
      mask,
      width,
      height,
      strength,
      // [B, 4, H/8, W/8]
      shape: [batch, this.folder.vaeConfig.latentChannels, height / vsf, width / vsf],
    };
  }

  /**
   * prepare_latents per task (and the inpainting pipeline's prepare_mask_latents): txt2img and
   * full-strength inpainting draw noise scaled by the scheduler's initial sigma; img2img and
   * inpainting below full strength sample the init image's latents, then noise them to the first
   * timestep. `given`: start from these latents instead (conformance: the reference's).
   */
  private async prepareLatents(
    run: RunInputs,
    scheduler: Scheduler,
    first: number,
    generator: TorchGenerator,
    given: F32 | null,
  ): Promise<PreparedLatents> {
    const { init, mask, shape, strength } = run;
    const batch = shape[0];
    // diffusers multiplies by init_noise_sigma held as a float32 tensor
    const sigma0 = f(scheduler.initNoiseSigma);
    let latents: F32 | null = given;
    if (!latents && !init) {
      // one draw for the whole batch, scaled by the scheduler's initial sigma
      const noise = generator.randn(shape);
      latents = f32(
        noise.map((v) => f(v * sigma0)),
        shape,
      );
    } else if (!latents && !mask) {
      // img2img: VAE-encode, sample the latent distribution (one draw), scale, then noise (a second draw)
      const imageLatents = await this.sampleImageLatents(imageToTensor(init!), generator, batch);
      const noise = generator.randn(shape);
      latents = f32(scheduler.addNoise(imageLatents.data, noise, first), shape);
    } else if (!latents) {
      // inpainting, prepare_latents: at full strength pure noise; below it the image's latents
      // (one draw) come first, then the noise (a second draw)
      if (strength >= 1) {
        latents = f32(
          generator.randn(shape).map((v) => f(v * sigma0)),
          shape,
        );
      } else {
        const imageLatents = await this.sampleImageLatents(imageToTensor(init!), generator, batch);
        latents = f32(scheduler.addNoise(imageLatents.data, generator.randn(shape), first), shape);
      }
    }
    if (!latents) throw new HarnessError("no initial latents", ExitCode.internal);
    if (latents.data.length !== numel(shape)) {
      throw new HarnessError(`initial latents ${formatDims(latents.dims)} do not match ${formatDims(shape)}`, ExitCode.usage);
    }
    if (!(mask && init)) return { latents, maskLatent: null, maskedImageLatents: null };
    // prepare_mask_latents: the masked image's latents (a further draw) and the mask at latent size
    const m = maskToTensor(mask);
    const image = imageToTensor(init);
    const plane = m.data.length;
    const masked = f32(
      image.data.map((v, i) => f(v * (m.data[i % plane] < 0.5 ? 1 : 0))),
      image.dims,
    );
    let maskedImageLatents = await this.sampleImageLatents(masked, generator, batch);
    let maskLatent = resizeNearest(m, shape[2], shape[3], batch);
    if (run.cfg) {
      maskLatent = concat0([maskLatent, maskLatent]);
      maskedImageLatents = concat0([maskedImageLatents, maskedImageLatents]);
    }
    return { latents, maskLatent, maskedImageLatents };
  }

  /**
   * The denoising loop from timestep index `first`: per step one batched U-Net call ([uncond, cond]
   * with CFG; the mask and masked-image latents appended as channels for inpainting), guidance,
   * then the scheduler's step.
   */
  private async denoise(
    run: RunInputs,
    scheduler: Scheduler,
    first: number,
    embeds: F32,
    prepared: PreparedLatents,
    generator: TorchGenerator,
    params: Pick<GenerateParams, "onStep" | "signal">,
  ): Promise<F32> {
    const { shape } = run;
    const { maskLatent, maskedImageLatents } = prepared;
    let latents = prepared.latents;
    const state = scheduler.initialState();
    const total = scheduler.timesteps.length;
    const g = f(run.guidance);
    for (let i = first; i < total; i++) {
      if (params.signal?.aborted) throw new HarnessError("interrupted", ExitCode.interrupted);
      const t = scheduler.timesteps[i];
      // [2B, 4, h, w] with CFG: one batched U-Net call for uncond and cond
      const doubled = run.cfg ? concat0([latents, latents]) : latents;
      let modelInput = f32(scheduler.scaleModelInput(doubled.data, i), doubled.dims);
      if (maskLatent && maskedImageLatents) modelInput = concatChannels([modelInput, maskLatent, maskedImageLatents]); // [2B, 9, h, w]
      const raw = await this.runUnet(modelInput, t, embeds);
      checkFinite(raw, "unet", i);
      let eps: F32 = raw;
      if (run.cfg) {
        const half = raw.data.length / 2;
        const out = new Float32Array(half);
        for (let k = 0; k < half; k++) {
          const u = raw.data[k];
          out[k] = f(u + f(g * f(raw.data[half + k] - u)));
        }
        eps = f32(out, shape);
      }
      const next = scheduler.step(eps.data, i, latents.data, state, generator, shape).prevSample;
      latents = f32(next, shape);
      checkFinite(latents, "scheduler", i);
      if (params.onStep) {
        await params.onStep({
          index: i - first,
          total: total - first,
          timestep: t,
          modelInput,
          noisePredRaw: raw,
          noisePred: eps,
          latents,
        });
      }
    }
    return latents;
  }

  /** retrieve_latents(vae.encode(x), generator) * scaling_factor, repeated to the batch. */
  private async sampleImageLatents(image: F32, generator: TorchGenerator, batch: number): Promise<F32> {
    const { mean, std } = await this.encodeImage(image);
    const eps = generator.randn(mean.dims);
    const sf = f(this.folder.vaeConfig.scalingFactor);
    const one = f32(
      mean.data.map((m, i) => f(sf * f(m + f(std.data[i] * eps[i])))),
      mean.dims,
    );
    if (one.dims[0] === batch) return one;
    if (batch % one.dims[0] !== 0)
      throw new HarnessError(`cannot repeat ${one.dims[0]} init images to a batch of ${batch}`, ExitCode.usage);
    return concat0(Array.from({ length: batch / one.dims[0] }, () => one));
  }
}

/**
 * Output sizes an exported model can run: positive multiples of its size step, at most 8192. The
 * step is the VAE's factor times the U-Net's down-sampling (8 x 8 = 64 for SD 1.x): a traced U-Net
 * up-samples by exact doubling, so a latent size must halve evenly at every down block.
 */
export function validateSize(width: number | undefined, height: number | undefined, step: number): void {
  for (const [name, v] of [
    ["width", width],
    ["height", height],
  ] as const) {
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v <= 0) throw invalidParameter(name, `${v} is not a positive integer`);
    if (v % step !== 0)
      throw invalidParameter(
        name,
        `${v} is not a multiple of ${step} (this model's size step: the VAE's factor x the U-Net's down-sampling)`,
      );
    if (v > 8192) throw invalidParameter(name, `${v} is larger than 8192`);
  }
}

/** An inpainting mask must cover the init image pixel for pixel. */
export function validateMaskSize(mask: { width: number; height: number }, width: number, height: number): void {
  if (mask.width !== width || mask.height !== height) {
    throw invalid(
      "mask",
    )`${param("mask")} is ${mask.width}x${mask.height} but ${param("initImage")} is ${width}x${height}; they must match`;
  }
}

function validate(width: number, height: number, steps: number, guidance: number, perPrompt: number, strength: number, step: number): void {
  validateSize(width, height, step);
  if (!Number.isInteger(steps) || steps < 1 || steps > 1000) throw invalidParameter("steps", `${steps} must be an integer from 1 to 1000`);
  if (!Number.isFinite(guidance) || guidance < 0) throw invalidParameter("guidanceScale", `${guidance} must be a finite number >= 0`);
  if (!Number.isInteger(perPrompt) || perPrompt < 1 || perPrompt > 64)
    throw invalidParameter("numImagesPerPrompt", `${perPrompt} must be an integer from 1 to 64`);
  if (!Number.isFinite(strength) || strength <= 0 || strength > 1) throw invalidParameter("strength", `${strength} must be in (0, 1]`);
}

/** F.interpolate(mode="nearest") of a [1, 1, H, W] mask to [batch, 1, h, w]: src = floor(dst * H / h). */
function resizeNearest(mask: F32, h: number, w: number, batch: number): F32 {
  const [, , H, W] = mask.dims;
  const out = new Float32Array(batch * h * w);
  const sy = f(H / h);
  const sx = f(W / w);
  for (let y = 0; y < h; y++) {
    const yy = Math.min(Math.floor(f(y * sy)), H - 1);
    for (let x = 0; x < w; x++) {
      const xx = Math.min(Math.floor(f(x * sx)), W - 1);
      out[y * w + x] = mask.data[yy * W + xx];
    }
  }
  for (let b = 1; b < batch; b++) out.copyWithin(b * h * w, 0, h * w);
  return f32(out, [batch, 1, h, w]);
}
