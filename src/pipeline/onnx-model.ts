/**
 * One session per component, created by the chosen runtime (src/runtime/; onnxruntime-node unless
 * told otherwise), and checked against the input names and ranks SD 1.x's components have, so
 * that a wrong folder fails at load time with a sentence rather than mid-run with a runtime's stack.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { HarnessError, ExitCode } from "../errors";
import { tooManyThreads } from "../util/threads";
import { defaultRuntime } from "../runtime/index";
import { NotCoveredError } from "../runtime/types";
import type { Runtime, RuntimeSession, RuntimeTensor, SessionSettings as RuntimeSettings } from "../runtime/types";

export interface SessionSettings extends RuntimeSettings {
  /** the runtime that loads and runs the components (default: ort-node) */
  readonly runtime?: Runtime;
}

export interface InputSpec {
  readonly name: string;
  readonly type: string;
  readonly shape: readonly (number | string)[];
}

export type { ComponentKind } from "./components";
import type { ComponentKind } from "./components";

const EXPECTED: Record<ComponentKind, { inputs: Record<string, number>; hint: string }> = {
  text_encoder: { inputs: { input_ids: 2 }, hint: "a CLIP text encoder taking input_ids [batch, 77]" },
  unet: {
    inputs: { sample: 4, timestep: -1, encoder_hidden_states: 3 },
    hint: "an SD 1.x U-Net taking sample, timestep, encoder_hidden_states",
  },
  vae_decoder: { inputs: { latent_sample: 4 }, hint: "a VAE decoder taking latent_sample [batch, 4, h, w]" },
  vae_encoder: { inputs: { sample: 4 }, hint: "a VAE encoder taking sample [batch, 3, H, W]" },
};

/**
 * Wall time spent inside the runtime (onnxruntime) in this process: creating sessions and running them. What a
 * conformance run spends outside it (reading references, metrics, the schedulers, writing reports)
 * is the harness's own overhead, which the report states.
 */
export const ORT_CLOCK = { createMs: 0, runMs: 0, runs: 0 };

export class OnnxComponent {
  private constructor(
    readonly kind: ComponentKind,
    readonly file: string,
    private session: RuntimeSession | null,
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
    if (!stat.isFile())
      throw new HarnessError(`${file}: not a regular file (the ${kind.replace("_", " ")} must be an ONNX file)`, ExitCode.usage);
    if (stat.size === 0) throw new HarnessError(`${file}: empty file (0 bytes), not an ONNX model`, ExitCode.usage);
    const runtime = settings.runtime ?? defaultRuntime();
    let session: RuntimeSession;
    const t0 = process.hrtime.bigint();
    try {
      session = await runtime.load(file, settings);
      ORT_CLOCK.createMs += Number(process.hrtime.bigint() - t0) / 1e6;
    } catch (e) {
      if (e instanceof HarnessError) throw e;
      const msg = String((e as Error).message ?? e).split("\n")[0];
      const data = path.join(path.dirname(file), "model.onnx_data");
      if (
        /onnx_data|external/i.test(msg) ||
        (/ failed|not exist|out of bounds|No such file/i.test(msg) && fs.existsSync(data) === false && /data/i.test(msg))
      ) {
        throw new HarnessError(`${file}: its external weights cannot be loaded (${msg.slice(0, 160)})`, ExitCode.usage);
      }
      throw new HarnessError(`${file}: not a loadable ONNX model (${msg.slice(0, 200)})`, ExitCode.usage);
    }
    const inputs = new Map<string, InputSpec>();
    for (const m of session.inputs) inputs.set(m.name, m);
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
    return new OnnxComponent(
      kind,
      file,
      session,
      inputs,
      session.outputs.map((o) => o.name),
    );
  }

  inputType(name: string): string {
    return this.inputs.get(name)?.type ?? "float32";
  }

  get released(): boolean {
    return this.session === null;
  }

  async run(feeds: Record<string, RuntimeTensor>, outputs?: readonly string[]): Promise<Record<string, RuntimeTensor>> {
    if (!this.session) throw new Error(`${this.kind} session used after release`);
    const t0 = process.hrtime.bigint();
    try {
      const result = await this.session.run(feeds, outputs);
      ORT_CLOCK.runMs += Number(process.hrtime.bigint() - t0) / 1e6;
      ORT_CLOCK.runs++;
      return result;
    } catch (e) {
      // a runtime's own one-line errors (a port naming its operation) and "not covered" pass as they are
      if (e instanceof HarnessError || e instanceof NotCoveredError) throw e;
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
