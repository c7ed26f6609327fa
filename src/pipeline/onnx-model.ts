/**
 * One onnxruntime-node session per component, created with deliberate options, and checked
 * against the input names and ranks SD 1.x's components have, so that a wrong folder fails at
 * load time with a sentence rather than mid-run with an ORT stack.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as ort from "./ort";
import { HarnessError, ExitCode } from "../errors";
import { tooManyThreads } from "../util/threads";
import { F32, f32 } from "../tensor/tensor";

export interface SessionSettings {
  /** intra-op threads; 0 lets ORT choose (one per physical core) */
  readonly threads?: number;
  readonly graphOptimizationLevel?: "disabled" | "basic" | "extended" | "all";
  /** ORT's memory-pattern planner: fastest for fixed shapes, which a generation has */
  readonly enableMemPattern?: boolean;
  /**
   * ORT's CPU arena keeps the largest activations it ever held. Off by default: at SD 1.5 size
   * (512x512, 2 threads) it took peak RSS from 11.2 GB to 6.8-7.3 GB with the same steady-state
   * step time; the cost is a slower first U-Net call per session (~18 s vs ~13 s). bench/RESULTS.md.
   */
  readonly enableCpuMemArena?: boolean;
}

export interface InputSpec {
  readonly name: string;
  readonly type: string;
  readonly shape: readonly (number | string)[];
}

export type ComponentKind = "text_encoder" | "unet" | "vae_decoder" | "vae_encoder";

const EXPECTED: Record<ComponentKind, { inputs: Record<string, number>; hint: string }> = {
  text_encoder: { inputs: { input_ids: 2 }, hint: "a CLIP text encoder taking input_ids [batch, 77]" },
  unet: { inputs: { sample: 4, timestep: -1, encoder_hidden_states: 3 }, hint: "an SD 1.x U-Net taking sample, timestep, encoder_hidden_states" },
  vae_decoder: { inputs: { latent_sample: 4 }, hint: "a VAE decoder taking latent_sample [batch, 4, h, w]" },
  vae_encoder: { inputs: { sample: 4 }, hint: "a VAE encoder taking sample [batch, 3, H, W]" },
};

/**
 * Wall time spent inside onnxruntime in this process: creating sessions and running them. What a
 * conformance run spends outside it (reading references, metrics, the schedulers, writing reports)
 * is the harness's own overhead, which the report states.
 */
export const ORT_CLOCK = { createMs: 0, runMs: 0, runs: 0 };

export class OnnxComponent {
  private constructor(
    readonly kind: ComponentKind,
    readonly file: string,
    private session: ort.InferenceSession | null,
    readonly inputs: ReadonlyMap<string, InputSpec>,
    readonly outputNames: readonly string[],
  ) {}

  static async load(kind: ComponentKind, file: string, settings: SessionSettings = {}): Promise<OnnxComponent> {
    const threads = settings.threads ?? 0;
    const tooMany = Number.isInteger(threads) && threads >= 0 ? tooManyThreads(threads) : `${threads} is not a whole number >= 0`;
    if (tooMany) throw new HarnessError(`threads: ${tooMany}`, ExitCode.usage);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(file);
    } catch {
      throw new HarnessError(`${file}: missing (the ${kind.replace("_", " ")})`, ExitCode.usage);
    }
    // a FIFO, /dev/zero or a folder would block or feed ORT's parser without end
    if (!stat.isFile()) throw new HarnessError(`${file}: not a regular file (the ${kind.replace("_", " ")} must be an ONNX file)`, ExitCode.usage);
    if (stat.size === 0) throw new HarnessError(`${file}: empty file (0 bytes), not an ONNX model`, ExitCode.usage);
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders: ["cpu"],
      graphOptimizationLevel: settings.graphOptimizationLevel ?? "all",
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      enableMemPattern: settings.enableMemPattern ?? true,
      enableCpuMemArena: settings.enableCpuMemArena ?? false,
      // ORT's own error lines would bypass the CLI's one-line errors; its failures reach us as exceptions
      logSeverityLevel: 4,
    };
    let session: ort.InferenceSession;
    const t0 = process.hrtime.bigint();
    try {
      // Loading by path lets ORT find external weights (model.onnx_data) beside the model.
      session = await ort.InferenceSession.create(file, options);
      ORT_CLOCK.createMs += Number(process.hrtime.bigint() - t0) / 1e6;
    } catch (e) {
      const msg = String((e as Error).message ?? e).split("\n")[0];
      const data = path.join(path.dirname(file), "model.onnx_data");
      if (/onnx_data|external/i.test(msg) || (/ failed|not exist|out of bounds|No such file/i.test(msg) && fs.existsSync(data) === false && /data/i.test(msg))) {
        throw new HarnessError(`${file}: its external weights cannot be loaded (${msg.slice(0, 160)})`, ExitCode.usage);
      }
      throw new HarnessError(`${file}: not a loadable ONNX model (${msg.slice(0, 200)})`, ExitCode.usage);
    }
    const inputs = new Map<string, InputSpec>();
    for (const m of session.inputMetadata) {
      const shape = m.isTensor ? (m.shape as (number | string)[]) : [];
      inputs.set(m.name, { name: m.name, type: m.isTensor ? String(m.type) : "non-tensor", shape });
    }
    const expected = EXPECTED[kind];
    for (const [name, rank] of Object.entries(expected.inputs)) {
      const spec = inputs.get(name);
      if (!spec) {
        await session.release();
        throw new HarnessError(`${file}: has inputs [${[...inputs.keys()].join(", ")}], expected ${expected.hint}`, ExitCode.usage);
      }
      if (rank > 0 && spec.shape.length !== rank) {
        await session.release();
        throw new HarnessError(`${file}: input ${name} has rank ${spec.shape.length}, expected ${rank} (${expected.hint})`, ExitCode.usage);
      }
    }
    if (kind === "unet" && inputs.has("text_embeds")) {
      await session.release();
      throw new HarnessError(`${file}: takes text_embeds / time_ids, an SDXL U-Net; sd-harness runs SD 1.x`, ExitCode.usage);
    }
    return new OnnxComponent(kind, file, session, inputs, session.outputNames);
  }

  inputType(name: string): string {
    return this.inputs.get(name)?.type ?? "float32";
  }

  get released(): boolean {
    return this.session === null;
  }

  async run(feeds: Record<string, ort.Tensor>, outputs?: readonly string[]): Promise<Record<string, ort.Tensor>> {
    if (!this.session) throw new Error(`${this.kind} session used after release`);
    const t0 = process.hrtime.bigint();
    try {
      const result = outputs ? await this.session.run(feeds, [...outputs]) : await this.session.run(feeds);
      ORT_CLOCK.runMs += Number(process.hrtime.bigint() - t0) / 1e6;
      ORT_CLOCK.runs++;
      return result as Record<string, ort.Tensor>;
    } catch (e) {
      const msg = String((e as Error).message ?? e).split("\n")[0];
      throw new HarnessError(`${this.file}: inference failed (${msg.slice(0, 240)})`, ExitCode.usage);
    }
  }

  async release(): Promise<void> {
    if (this.session) {
      const s = this.session;
      this.session = null;
      await s.release();
    }
  }
}

/** Float32 view of an ORT output (float16 outputs are widened). */
export function toF32(t: ort.Tensor): F32 {
  if (t.type === "float32") return f32(t.data as Float32Array, t.dims);
  if (t.type === "float16") {
    const src = t.data as Uint16Array;
    const out = new Float32Array(src.length);
    for (let i = 0; i < src.length; i++) out[i] = halfToFloat(src[i]);
    return f32(out, t.dims);
  }
  throw new HarnessError(`unexpected output type ${t.type}`, ExitCode.usage);
}

/** A float32 tensor as the input type the session declares (float16 inputs are narrowed). */
export function fromF32(t: F32, type: string): ort.Tensor {
  if (type === "float16") {
    const out = new Uint16Array(t.data.length);
    for (let i = 0; i < out.length; i++) out[i] = floatToHalf(t.data[i]);
    return new ort.Tensor("float16", out, t.dims);
  }
  return new ort.Tensor("float32", t.data, t.dims);
}

export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** float32 -> IEEE half, round to nearest even (numpy's astype(float16)). */
export function floatToHalf(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}
