/**
 * The SD 1.x ONNX model folder, in the layout optimum / diffusers write:
 *   model_index.json, text_encoder/model.onnx, unet/model.onnx (+ model.onnx_data),
 *   vae_decoder/model.onnx, vae_encoder/model.onnx (optional), tokenizer/, scheduler/,
 *   and each part's config.json.
 * Every number the pipeline uses comes from these configs, parsed once into typed objects here.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { HarnessError, ExitCode, oneLine } from "../errors";
import { readInputText, INPUT_LIMITS } from "../util/read-input";
import { resolveRawConfig } from "../schedulers";

export interface UNetConfig {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly sampleSize: number;
  readonly crossAttentionDim: number;
  /** widths of the down blocks; their count sets the down-sampling: 2^(len - 1) (8 for SD 1.x) */
  readonly blockOutChannels: readonly number[];
  readonly downFactor: number;
}

export interface VaeConfig {
  readonly latentChannels: number;
  readonly scalingFactor: number;
  /** 2^(len(block_out_channels) - 1): 8 for SD 1.x */
  readonly scaleFactor: number;
  readonly sampleSize: number;
}

export interface TextEncoderConfig {
  readonly hiddenSize: number;
  readonly numHiddenLayers: number;
  readonly maxPositionEmbeddings: number;
  readonly layerNormEps: number;
  /** vocab_size from the config (49408 for CLIP ViT-L/14) */
  readonly vocabSize: number | null;
}

/** A config value diffusers' pipeline changes in its __init__ before any run, applied here too. */
export interface ConfigCorrection {
  readonly file: string;
  readonly key: string;
  readonly from: unknown;
  readonly to: unknown;
  /** the diffusers pipeline class whose __init__ applies it */
  readonly rule: string;
}

/**
 * What a reference set must share with the model it is run against: the shapes and constants a
 * different model would change. make_references.py writes the same fields into its manifest.
 */
export interface ModelFingerprint {
  readonly text_hidden_size: number;
  readonly text_vocab_size: number | null;
  readonly text_max_position_embeddings: number;
  readonly latent_channels: number;
  readonly vae_scaling_factor: number;
  readonly vae_scale_factor: number;
  readonly unet_in_channels: number;
  readonly unet_out_channels: number;
  readonly cross_attention_dim: number;
  readonly prediction_type: string;
  readonly scheduler: Readonly<Record<string, unknown>>;
}

export interface ModelFolder {
  readonly dir: string;
  readonly name: string;
  readonly textEncoder: string;
  readonly unet: string;
  readonly vaeDecoder: string;
  /** absent in txt2img-only exports */
  readonly vaeEncoder: string | null;
  readonly tokenizerDir: string;
  /** scheduler_config.json after diffusers' pipeline-level corrections (see `corrections`) */
  readonly schedulerConfig: Readonly<Record<string, unknown>>;
  readonly unetConfig: UNetConfig;
  readonly vaeConfig: VaeConfig;
  readonly textConfig: TextEncoderConfig;
  /** a U-Net taking 2 x latent channels + 1 inputs (9 for SD 1.x): latents, mask, masked-image latents */
  readonly isInpaint: boolean;
  /** output sizes must be multiples of this: the VAE's factor x the U-Net's down-sampling (64 for SD 1.x) */
  readonly sizeStep: number;
  readonly corrections: readonly ConfigCorrection[];
  readonly fingerprint: ModelFingerprint;
}

/**
 * generation_config.json at the folder's root, optional (sd-harness's own, named after the file in
 * which transformers keeps a model's default generation settings): the guidance and step count the
 * model was made to be sampled with, in diffusers' argument names, e.g. {"guidance_scale": 2.5}.
 * Only the CLI's `generate` reads them (readGenerationDefaults), as defaults a flag overrides; the
 * library's generate() and the conformance suite keep diffusers' defaults (7.5, and every reference
 * case names its own), and loadModelFolder does not open the file: a bad one fails `generate` only.
 */
export interface GenerationDefaults {
  readonly guidanceScale?: number;
  readonly steps?: number;
}

export const GENERATION_CONFIG = "generation_config.json";

export function readGenerationDefaults(dir: string): GenerationDefaults {
  const file = path.join(dir, GENERATION_CONFIG);
  if (!fs.existsSync(file)) return {};
  const cfg = readJson(file, "the model's generation defaults");
  for (const key of Object.keys(cfg)) {
    if (key.startsWith("_") || key === "guidance_scale" || key === "num_inference_steps") continue;
    throw new HarnessError(
      `${file}: unknown key ${JSON.stringify(key)} (generate reads guidance_scale and num_inference_steps)`,
      ExitCode.usage,
    );
  }
  const out: { guidanceScale?: number; steps?: number } = {};
  if (cfg.guidance_scale !== undefined) {
    const g = num(cfg, "guidance_scale", file);
    if (g < 0 || g > 100) throw new HarnessError(`${file}: "guidance_scale" must be in [0, 100] (got ${g})`, ExitCode.usage);
    out.guidanceScale = g;
  }
  if (cfg.num_inference_steps !== undefined) {
    const n = num(cfg, "num_inference_steps", file);
    if (!Number.isInteger(n) || n < 1 || n > 1000)
      throw new HarnessError(`${file}: "num_inference_steps" must be an integer in [1, 1000] (got ${n})`, ExitCode.usage);
    out.steps = n;
  }
  return out;
}

export interface LoadFolderOptions {
  /** run a folder that looks like SD 2.x as SD 1.x anyway (the CLI's --force-sd1) */
  readonly forceSd1?: boolean;
}

function readJson(file: string, what: string): Record<string, unknown> {
  // a regular file of at most INPUT_LIMITS.config bytes (/dev/zero or a FIFO here aborted or hung)
  const text = readInputText(file, what, INPUT_LIMITS.config);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new HarnessError(`${file}: not valid JSON (${oneLine((e as Error).message)})`, ExitCode.usage);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new HarnessError(`${file}: not a JSON object`, ExitCode.usage);
  return value as Record<string, unknown>;
}

function num(cfg: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const v = cfg[key];
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v))
    throw new HarnessError(`${file}: "${key}" must be a number (got ${JSON.stringify(v)})`, ExitCode.usage);
  return v;
}

function requireFile(file: string, what: string): string {
  if (!fs.existsSync(file)) throw new HarnessError(`${file}: missing (${what})`, ExitCode.usage);
  return file;
}

function isPositiveInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v > 0;
}

/** SD 2.x's tokenizer (OpenCLIP's) pads with "!" (id 0) where CLIP ViT-L/14's pads with <|endoftext|>. */
function tokenizerPadToken(dir: string): string | null {
  for (const name of ["special_tokens_map.json", "tokenizer_config.json"]) {
    const file = path.join(dir, name);
    if (!fs.existsSync(file)) continue;
    try {
      // bounded: /dev/zero or a FIFO here would read without end or block (the tokenizer then refuses it)
      const pad = (JSON.parse(readInputText(file, "the tokenizer's configuration", INPUT_LIMITS.config)) as Record<string, unknown>)
        .pad_token;
      if (typeof pad === "string") return pad;
      if (pad && typeof pad === "object" && typeof (pad as { content?: unknown }).content === "string")
        return (pad as { content: string }).content;
    } catch {
      // a tokenizer side file that does not parse says nothing about the family; vocab.json decides
    }
  }
  return null;
}

/** "0.8.1" < "0.9.0"; unparsable versions count as current (no correction). */
function versionBelow(v: unknown, major: number, minor: number): boolean {
  const m = typeof v === "string" ? /^(\d+)\.(\d+)/.exec(v) : null;
  if (!m) return false;
  return Number(m[1]) < major || (Number(m[1]) === major && Number(m[2]) < minor);
}

/**
 * The scheduler and U-Net config corrections diffusers' StableDiffusion{,Img2Img}Pipeline and
 * StableDiffusionInpaintPipeline make in __init__ (diffusers 0.35.2), so that a folder runs here as it
 * runs there: steps_offset forced to 1 and clip_sample to False (txt2img / img2img), steps_offset to 1
 * and skip_prk_steps to True (inpainting), and a pre-0.9 U-Net's sample_size below 64 raised to 64.
 * `resolved` is the scheduler config with its class's defaults filled in, as diffusers' config holds it.
 */
export function pipelineCorrections(
  scheduler: Readonly<Record<string, unknown>>,
  resolved: Readonly<Record<string, unknown>>,
  inpaint: boolean,
  schedulerFile: string,
): { config: Record<string, unknown>; corrections: ConfigCorrection[] } {
  const rule = inpaint ? "StableDiffusionInpaintPipeline" : "StableDiffusionPipeline";
  const config: Record<string, unknown> = { ...scheduler };
  const corrections: ConfigCorrection[] = [];
  const set = (key: string, to: unknown) => {
    corrections.push({ file: schedulerFile, key, from: resolved[key], to, rule });
    config[key] = to;
  };
  // getattr(scheduler.config, "steps_offset", 1) != 1
  if ("steps_offset" in resolved && resolved.steps_offset !== 1) set("steps_offset", 1);
  // getattr(scheduler.config, "clip_sample", False) is True (not in the inpainting pipeline)
  if (!inpaint && resolved.clip_sample === true) set("clip_sample", false);
  // getattr(scheduler.config, "skip_prk_steps", True) is False (inpainting pipeline only)
  if (inpaint && resolved.skip_prk_steps === false) set("skip_prk_steps", true);
  return { config, corrections };
}

/** One line per correction, in the words of a warning. */
export function describeCorrection(c: ConfigCorrection): string {
  return `${c.file}: ${c.key} is ${JSON.stringify(c.from)}; diffusers' ${c.rule} runs with ${JSON.stringify(c.to)} (an outdated config), and so does sd-harness`;
}

export function loadModelFolder(dir: string, options: LoadFolderOptions = {}): ModelFolder {
  if (!fs.existsSync(dir)) throw new HarnessError(`${dir}: model folder does not exist`, ExitCode.usage);
  if (!fs.statSync(dir).isDirectory())
    throw new HarnessError(`${dir}: not a directory (expected an SD 1.x ONNX model folder)`, ExitCode.usage);
  const index = readJson(path.join(dir, "model_index.json"), "model_index.json of an SD 1.x ONNX folder");
  const cls = String(index._class_name ?? "");
  if (/XL|StableDiffusion3|Flux|Kandinsky/i.test(cls) || "text_encoder_2" in index) {
    throw new HarnessError(
      `${dir}: model_index.json says ${cls || "a second text encoder"}; sd-harness runs SD 1.x folders only`,
      ExitCode.usage,
    );
  }
  const p = (...parts: string[]) => path.join(dir, ...parts);
  const corrections: ConfigCorrection[] = [];

  const unetCfgFile = p("unet", "config.json");
  const unetConfig = readUnetConfig(unetCfgFile, corrections);

  // optimum writes the VAE's config into both vae_decoder/ and vae_encoder/
  const vaeCfgFile = fs.existsSync(p("vae_decoder", "config.json")) ? p("vae_decoder", "config.json") : p("vae", "config.json");
  const vaeConfig = readVaeConfig(vaeCfgFile);
  checkLatentChannels(unetConfig, unetCfgFile, vaeConfig, vaeCfgFile);

  const textConfig = readTextConfig(p("text_encoder", "config.json"), unetConfig, dir);

  const schedulerFile = p("scheduler", "scheduler_config.json");
  const schedulerRaw = readJson(schedulerFile, "the scheduler's config");
  requireFile(p("tokenizer", "vocab.json"), "the CLIP tokenizer's vocabulary");
  requireFile(p("tokenizer", "merges.txt"), "the CLIP tokenizer's merges");

  if (!options.forceSd1) refuseSd2(unetConfig, unetCfgFile, vaeConfig, schedulerRaw, schedulerFile, p("tokenizer"));

  const isInpaint = unetConfig.inChannels === 2 * vaeConfig.latentChannels + 1;
  const fixed = pipelineCorrections(schedulerRaw, resolveRawConfig(schedulerRaw), isInpaint, schedulerFile);
  corrections.push(...fixed.corrections);
  const schedulerConfig = fixed.config;
  const resolved = resolveRawConfig(schedulerConfig);

  return {
    dir,
    name: path.basename(path.resolve(dir)),
    textEncoder: requireFile(p("text_encoder", "model.onnx"), "the text encoder"),
    unet: requireFile(p("unet", "model.onnx"), "the U-Net"),
    vaeDecoder: requireFile(p("vae_decoder", "model.onnx"), "the VAE decoder"),
    vaeEncoder: fs.existsSync(p("vae_encoder", "model.onnx")) ? p("vae_encoder", "model.onnx") : null,
    tokenizerDir: p("tokenizer"),
    schedulerConfig,
    unetConfig,
    vaeConfig,
    textConfig,
    isInpaint,
    sizeStep: vaeConfig.scaleFactor * unetConfig.downFactor,
    corrections,
    fingerprint: fingerprintOf(textConfig, vaeConfig, unetConfig, resolved),
  };
}

/** The U-Net's config (unet/config.json): refuses SDXL, corrects sample_size as diffusers' pipeline does. */
function readUnetConfig(unetCfgFile: string, corrections: ConfigCorrection[]): UNetConfig {
  const unetRaw = readJson(unetCfgFile, "the U-Net's config");
  // Say which family a folder is when it is not SD 1.x, rather than failing later on a shape.
  if (unetRaw.addition_embed_type === "text_time" || unetRaw.cross_attention_dim === 2048) {
    throw new HarnessError(
      `${unetCfgFile}: an SDXL U-Net (addition_embed_type ${JSON.stringify(unetRaw.addition_embed_type)}, cross_attention_dim ${JSON.stringify(unetRaw.cross_attention_dim)}); sd-harness runs SD 1.x folders only`,
      ExitCode.usage,
    );
  }
  // diffusers allows one cross-attention width per block; SD 1.x-family models use one for all
  let cross: unknown = unetRaw.cross_attention_dim;
  if (Array.isArray(cross) && cross.length > 0 && cross.every((c: unknown) => c === (cross as unknown[])[0])) cross = cross[0];
  if (!isPositiveInt(cross)) {
    throw new HarnessError(
      `${unetCfgFile}: "cross_attention_dim" ${JSON.stringify(unetRaw.cross_attention_dim)} must be one positive integer (the text encoder's width)`,
      ExitCode.usage,
    );
  }
  const blockOut = unetRaw.block_out_channels ?? [320, 640, 1280, 1280];
  if (!Array.isArray(blockOut) || blockOut.length < 1 || blockOut.length > 8 || !blockOut.every(isPositiveInt)) {
    throw new HarnessError(
      `${unetCfgFile}: "block_out_channels" ${JSON.stringify(unetRaw.block_out_channels)} must be a list of 1 to 8 positive integers`,
      ExitCode.usage,
    );
  }
  let sampleSize = num(unetRaw, "sample_size", unetCfgFile, 64);
  if (!isPositiveInt(sampleSize))
    throw new HarnessError(
      `${unetCfgFile}: "sample_size" ${JSON.stringify(unetRaw.sample_size)} must be a positive integer (the latent size)`,
      ExitCode.usage,
    );
  // StableDiffusionPipeline.__init__: a U-Net config older than diffusers 0.9 with sample_size < 64
  if (versionBelow(unetRaw._diffusers_version, 0, 9) && sampleSize < 64) {
    corrections.push({ file: unetCfgFile, key: "sample_size", from: sampleSize, to: 64, rule: "StableDiffusionPipeline" });
    sampleSize = 64;
  }
  const unetConfig: UNetConfig = {
    inChannels: num(unetRaw, "in_channels", unetCfgFile),
    outChannels: num(unetRaw, "out_channels", unetCfgFile, 4),
    sampleSize,
    crossAttentionDim: cross,
    blockOutChannels: blockOut as number[],
    downFactor: 2 ** (blockOut.length - 1),
  };
  return unetConfig;
}

/** The VAE's config: the latent channels, the scaling factor and the VAE's factor (2^(len(block_out_channels)-1)). */
function readVaeConfig(vaeCfgFile: string): VaeConfig {
  const vaeRaw = readJson(vaeCfgFile, "the VAE's config");
  const blocks = vaeRaw.block_out_channels;
  if (!Array.isArray(blocks) || blocks.length === 0 || blocks.length > 8)
    throw new HarnessError(`${vaeCfgFile}: "block_out_channels" missing or not a list of 1 to 8 widths`, ExitCode.usage);
  const vaeConfig: VaeConfig = {
    latentChannels: num(vaeRaw, "latent_channels", vaeCfgFile, 4),
    scalingFactor: num(vaeRaw, "scaling_factor", vaeCfgFile, 0.18215),
    scaleFactor: 2 ** (blocks.length - 1),
    sampleSize: num(vaeRaw, "sample_size", vaeCfgFile, 512),
  };
  if (!isPositiveInt(vaeConfig.latentChannels))
    throw new HarnessError(`${vaeCfgFile}: "latent_channels" must be a positive integer`, ExitCode.usage);
  if (!(vaeConfig.scalingFactor > 0))
    throw new HarnessError(`${vaeCfgFile}: "scaling_factor" ${vaeConfig.scalingFactor} must be positive`, ExitCode.usage);
  return vaeConfig;
}

/** txt2img / img2img U-Nets take the latents; inpainting ones also the mask and the masked image's latents. */
function checkLatentChannels(unetConfig: UNetConfig, unetCfgFile: string, vaeConfig: VaeConfig, vaeCfgFile: string): void {
  const lc = vaeConfig.latentChannels;
  if (unetConfig.inChannels !== lc && unetConfig.inChannels !== 2 * lc + 1) {
    throw new HarnessError(
      `${unetCfgFile}: in_channels ${unetConfig.inChannels}; with ${lc} latent channels (${vaeCfgFile}) an SD 1.x U-Net takes ${lc} (txt2img) or ${2 * lc + 1} (inpainting)`,
      ExitCode.usage,
    );
  }
  if (unetConfig.outChannels !== lc) {
    throw new HarnessError(
      `${unetCfgFile}: out_channels ${unetConfig.outChannels}; the VAE has ${lc} latent channels (${vaeCfgFile})`,
      ExitCode.usage,
    );
  }
}

/** The text encoder's config; its width must be the U-Net's cross-attention width. */
function readTextConfig(textCfgFile: string, unetConfig: UNetConfig, dir: string): TextEncoderConfig {
  const textRaw = readJson(textCfgFile, "the text encoder's config");
  const textConfig: TextEncoderConfig = {
    hiddenSize: num(textRaw, "hidden_size", textCfgFile),
    numHiddenLayers: num(textRaw, "num_hidden_layers", textCfgFile),
    maxPositionEmbeddings: num(textRaw, "max_position_embeddings", textCfgFile, 77),
    layerNormEps: num(textRaw, "layer_norm_eps", textCfgFile, 1e-5),
    vocabSize: typeof textRaw.vocab_size === "number" ? textRaw.vocab_size : null,
  };
  if (textConfig.hiddenSize !== unetConfig.crossAttentionDim) {
    throw new HarnessError(
      `${dir}: text encoder hidden_size ${textConfig.hiddenSize} != U-Net cross_attention_dim ${unetConfig.crossAttentionDim}`,
      ExitCode.usage,
    );
  }
  return textConfig;
}

/**
 * SD 2.x from what the model itself shows, not from internals an ONNX run never sees (head counts,
 * linear projections): OpenCLIP ViT-H's width, v-prediction at 768 px, OpenCLIP's "!" padding.
 */
function refuseSd2(
  unetConfig: UNetConfig,
  unetCfgFile: string,
  vaeConfig: VaeConfig,
  schedulerRaw: Record<string, unknown>,
  schedulerFile: string,
  tokenizerDir: string,
): void {
  const way = "pass --force-sd1 to run it as SD 1.x anyway";
  const prediction = schedulerRaw.prediction_type;
  if (unetConfig.crossAttentionDim === 1024) {
    throw new HarnessError(
      `${unetCfgFile}: "cross_attention_dim" is 1024 (OpenCLIP ViT-H's width): an SD 2.x model; sd-harness runs SD 1.x (${way})`,
      ExitCode.usage,
    );
  }
  if (prediction === "v_prediction" && unetConfig.sampleSize * vaeConfig.scaleFactor === 768) {
    throw new HarnessError(
      `${schedulerFile}: "prediction_type" v_prediction with 768-px samples: an SD 2.x 768-v model; sd-harness runs SD 1.x (${way})`,
      ExitCode.usage,
    );
  }
  if (tokenizerPadToken(tokenizerDir) === "!") {
    throw new HarnessError(
      `${tokenizerDir}: pad_token "!" (OpenCLIP's tokenizer): an SD 2.x model; sd-harness runs SD 1.x (${way})`,
      ExitCode.usage,
    );
  }
}

/** What a reference set's manifest records of the model it was made with (conformance checks a --model against it). */
function fingerprintOf(
  textConfig: TextEncoderConfig,
  vaeConfig: VaeConfig,
  unetConfig: UNetConfig,
  resolved: Record<string, unknown>,
): ModelFingerprint {
  return {
    text_hidden_size: textConfig.hiddenSize,
    text_vocab_size: textConfig.vocabSize,
    text_max_position_embeddings: textConfig.maxPositionEmbeddings,
    latent_channels: vaeConfig.latentChannels,
    vae_scaling_factor: vaeConfig.scalingFactor,
    vae_scale_factor: vaeConfig.scaleFactor,
    unet_in_channels: unetConfig.inChannels,
    unet_out_channels: unetConfig.outChannels,
    cross_attention_dim: unetConfig.crossAttentionDim,
    prediction_type: String(resolved.prediction_type ?? "epsilon"),
    scheduler: Object.fromEntries(FINGERPRINT_SCHEDULER_KEYS.filter((k) => k in resolved).map((k) => [k, resolved[k]])),
  };
}

/** The scheduler keys a reference set's fingerprint records (scripts/make_references.py). */
const FINGERPRINT_SCHEDULER_KEYS = [
  "_class_name",
  "num_train_timesteps",
  "beta_start",
  "beta_end",
  "beta_schedule",
  "prediction_type",
  "steps_offset",
  "timestep_spacing",
  "clip_sample",
  "set_alpha_to_one",
  "skip_prk_steps",
] as const;

/** One file a loaded model folder is read from, relative to the folder, and what it is. */
export interface ModelFolderFile {
  readonly rel: string;
  readonly what: string;
}

/**
 * The files loadModelFolder and the pipeline's components read, relative to `folder.dir`:
 * model_index.json, the configs loadModelFolder parsed, the tokenizer's files, and each component's
 * model.onnx. External weights are named inside each model.onnx (its initializers' `location`); a
 * copy of the folder adds them from there. Nothing else in the folder is ever read (a
 * pytorch_model.bin, a FIFO or a symlink loop beside the models are not the model's).
 */
export function modelFolderFiles(folder: ModelFolder): ModelFolderFile[] {
  const has = (rel: string) => fs.existsSync(path.join(folder.dir, rel));
  const out: ModelFolderFile[] = [
    { rel: "model_index.json", what: "model_index.json" },
    { rel: path.join("unet", "config.json"), what: "the U-Net's config" },
    {
      rel: has(path.join("vae_decoder", "config.json")) ? path.join("vae_decoder", "config.json") : path.join("vae", "config.json"),
      what: "the VAE's config",
    },
    { rel: path.join("text_encoder", "config.json"), what: "the text encoder's config" },
    { rel: path.join("scheduler", "scheduler_config.json"), what: "the scheduler's config" },
    { rel: path.join("tokenizer", "vocab.json"), what: "the CLIP tokenizer's vocabulary" },
    { rel: path.join("tokenizer", "merges.txt"), what: "the CLIP tokenizer's merges" },
  ];
  for (const name of ["special_tokens_map.json", "tokenizer_config.json"]) {
    if (has(path.join("tokenizer", name))) out.push({ rel: path.join("tokenizer", name), what: "the tokenizer's configuration" });
  }
  const models: [string | null, string][] = [
    [folder.textEncoder, "the text encoder"],
    [folder.unet, "the U-Net"],
    [folder.vaeDecoder, "the VAE decoder"],
    [folder.vaeEncoder, "the VAE encoder"],
  ];
  for (const [file, what] of models) if (file) out.push({ rel: path.relative(folder.dir, file), what });
  return out;
}
