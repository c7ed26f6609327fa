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

export interface UNetConfig {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly sampleSize: number;
  readonly crossAttentionDim: number;
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
  readonly schedulerConfig: Readonly<Record<string, unknown>>;
  readonly unetConfig: UNetConfig;
  readonly vaeConfig: VaeConfig;
  readonly textConfig: TextEncoderConfig;
  /** 4 for txt2img / img2img U-Nets, 9 for inpainting U-Nets */
  readonly isInpaint: boolean;
}

function readJson(file: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new HarnessError(code === "ENOENT" ? `${file}: missing (${what})` : `${file}: cannot read (${code})`, ExitCode.usage);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new HarnessError(`${file}: not valid JSON (${oneLine((e as Error).message)})`, ExitCode.usage);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new HarnessError(`${file}: not a JSON object`, ExitCode.usage);
  return value as Record<string, unknown>;
}

function num(cfg: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const v = cfg[key];
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) throw new HarnessError(`${file}: "${key}" must be a number (got ${JSON.stringify(v)})`, ExitCode.usage);
  return v;
}

function requireFile(file: string, what: string): string {
  if (!fs.existsSync(file)) throw new HarnessError(`${file}: missing (${what})`, ExitCode.usage);
  return file;
}

export function loadModelFolder(dir: string): ModelFolder {
  if (!fs.existsSync(dir)) throw new HarnessError(`${dir}: model folder does not exist`, ExitCode.usage);
  if (!fs.statSync(dir).isDirectory()) throw new HarnessError(`${dir}: not a directory (expected an SD 1.x ONNX model folder)`, ExitCode.usage);
  const index = readJson(path.join(dir, "model_index.json"), "model_index.json of an SD 1.x ONNX folder");
  const cls = String(index._class_name ?? "");
  if (/XL|StableDiffusion3|Flux|Kandinsky/i.test(cls) || "text_encoder_2" in index) {
    throw new HarnessError(`${dir}: model_index.json says ${cls || "a second text encoder"}; sd-harness runs SD 1.x folders only`, ExitCode.usage);
  }
  const p = (...parts: string[]) => path.join(dir, ...parts);

  const unetCfgFile = p("unet", "config.json");
  const unetRaw = readJson(unetCfgFile, "the U-Net's config");
  const cross = unetRaw.cross_attention_dim;
  // Say which family a folder is when it is not SD 1.x, rather than failing later on a shape.
  if (unetRaw.addition_embed_type === "text_time" || cross === 2048) {
    throw new HarnessError(`${unetCfgFile}: an SDXL U-Net (addition_embed_type ${JSON.stringify(unetRaw.addition_embed_type)}, cross_attention_dim ${JSON.stringify(cross)}); sd-harness runs SD 1.x folders only`, ExitCode.usage);
  }
  if (cross === 1024 || (Array.isArray(cross) && cross.includes(1024)) || (Array.isArray(unetRaw.attention_head_dim) && unetRaw.use_linear_projection === true)) {
    throw new HarnessError(`${unetCfgFile}: an SD 2.x U-Net (cross_attention_dim ${JSON.stringify(cross)}, attention_head_dim ${JSON.stringify(unetRaw.attention_head_dim)}); sd-harness runs SD 1.x folders only`, ExitCode.usage);
  }
  if (typeof cross !== "number") {
    throw new HarnessError(`${unetCfgFile}: cross_attention_dim ${JSON.stringify(cross)} is not SD 1.x's (a single number)`, ExitCode.usage);
  }
  const unetConfig: UNetConfig = {
    inChannels: num(unetRaw, "in_channels", unetCfgFile),
    outChannels: num(unetRaw, "out_channels", unetCfgFile, 4),
    sampleSize: num(unetRaw, "sample_size", unetCfgFile, 64),
    crossAttentionDim: cross,
  };
  if (unetConfig.inChannels !== 4 && unetConfig.inChannels !== 9) {
    throw new HarnessError(`${unetCfgFile}: in_channels ${unetConfig.inChannels}; SD 1.x U-Nets take 4 (txt2img) or 9 (inpainting)`, ExitCode.usage);
  }

  // optimum writes the VAE's config into both vae_decoder/ and vae_encoder/
  const vaeCfgFile = fs.existsSync(p("vae_decoder", "config.json")) ? p("vae_decoder", "config.json") : p("vae", "config.json");
  const vaeRaw = readJson(vaeCfgFile, "the VAE's config");
  const blocks = vaeRaw.block_out_channels;
  if (!Array.isArray(blocks) || blocks.length === 0) throw new HarnessError(`${vaeCfgFile}: block_out_channels missing`, ExitCode.usage);
  const vaeConfig: VaeConfig = {
    latentChannels: num(vaeRaw, "latent_channels", vaeCfgFile, 4),
    scalingFactor: num(vaeRaw, "scaling_factor", vaeCfgFile, 0.18215),
    scaleFactor: 2 ** (blocks.length - 1),
    sampleSize: num(vaeRaw, "sample_size", vaeCfgFile, 512),
  };

  const textCfgFile = p("text_encoder", "config.json");
  const textRaw = readJson(textCfgFile, "the text encoder's config");
  const textConfig: TextEncoderConfig = {
    hiddenSize: num(textRaw, "hidden_size", textCfgFile),
    numHiddenLayers: num(textRaw, "num_hidden_layers", textCfgFile),
    maxPositionEmbeddings: num(textRaw, "max_position_embeddings", textCfgFile, 77),
    layerNormEps: num(textRaw, "layer_norm_eps", textCfgFile, 1e-5),
  };
  if (textConfig.hiddenSize !== unetConfig.crossAttentionDim) {
    throw new HarnessError(`${dir}: text encoder hidden_size ${textConfig.hiddenSize} != U-Net cross_attention_dim ${unetConfig.crossAttentionDim}`, ExitCode.usage);
  }

  const schedulerFile = p("scheduler", "scheduler_config.json");
  const schedulerConfig = readJson(schedulerFile, "the scheduler's config");
  requireFile(p("tokenizer", "vocab.json"), "the CLIP tokenizer's vocabulary");
  requireFile(p("tokenizer", "merges.txt"), "the CLIP tokenizer's merges");

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
    isInpaint: unetConfig.inChannels === 9,
  };
}
