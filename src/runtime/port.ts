/**
 * Runtime `port`: the components run in another process, any program that speaks the port
 * protocol (docs/port-protocol.md): OpenVINO, PyTorch at bfloat16, stable-diffusion.cpp, ... The
 * harness starts the command in a process group of its own and exchanges one JSON object per line
 * over its stdin / stdout; tensors travel as safetensors files in a temporary folder the harness
 * owns. Everything the port says is checked (message shapes, output names, dtypes and shapes), and
 * any breach (a crash, a hang past the per-call time bound, a line that is not a protocol message,
 * a wrong tensor, a handshake it does not keep) ends the whole process group and becomes one line
 * naming the operation. The temporary folder goes on every exit path: close(), the CLI's signal
 * cleanup (trackPendingDirectory) and, as a last resort, the process's own exit.
 *
 * A component the port does not run (its handshake says so, with a reason) is loaded as a stand-in
 * whose calls throw NotCoveredError: the runner reports those cases as skipped, "not covered".
 */
import { spawn, ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { HarnessError, ExitCode, oneLine } from "../errors";
import { trackPendingDirectory, untrackPendingDirectory } from "../util/atomic";
import { encodeSafetensors, readSafetensors } from "../tensor/safetensors";
import { formatDims } from "../tensor/tensor";
import { NotCoveredError } from "./types";
import type {
  IOSpec,
  ModuleOutputs,
  ModuleRequest,
  Runtime,
  RuntimeDescription,
  RuntimeSession,
  RuntimeTensor,
  SessionSettings,
} from "./types";

/** The protocol version this harness speaks: 1.1 (1.1 adds the optional `modules` operation). */
const PORT_PROTOCOL = 1;
const PORT_PROTOCOL_MINOR = 1;
export const DEFAULT_PORT_TIMEOUT_S = 600;
/** A protocol line longer than this is not a protocol message (replies are a few hundred bytes). */
const MAX_LINE = 1024 * 1024;
/** stderr lines kept to quote when the port dies */
const STDERR_TAIL = 20;
/** How long a port gets to exit after `shutdown` before its group is killed. */
const SHUTDOWN_GRACE_MS = 3000;

/** The protocol's operations, one per component; the model folder's subfolder names them. */
const PORT_OPERATIONS = ["text_encoder", "unet", "vae_decode", "vae_encode"] as const;
export type PortOperation = (typeof PORT_OPERATIONS)[number];
const FOLDER_TO_OPERATION: Readonly<Record<string, PortOperation>> = {
  text_encoder: "text_encoder",
  unet: "unet",
  vae_decoder: "vae_decode",
  vae_encoder: "vae_encode",
};

/** Element types a port may declare for an input or output. */
const TENSOR_TYPES = new Set(["float32", "float16", "float64", "int64", "int32"]);
/** Element types of a module output (the `modules` operation). */
const MODULE_TYPES = new Set(["float32", "float16", "float64"]);

/** Inputs each operation must take (the pipeline feeds these names), and the output it must give when it is fixed. */
const REQUIRED: Readonly<Record<PortOperation, { inputs: readonly string[]; output?: string }>> = {
  text_encoder: { inputs: ["input_ids"], output: "last_hidden_state" },
  unet: { inputs: ["sample", "timestep", "encoder_hidden_states"] },
  vae_decode: { inputs: ["latent_sample"] },
  vae_encode: { inputs: ["sample"] },
};

/**
 * The inputs and outputs of an operation as protocol 1 defines them, where the port declares
 * none: what a stand-in for an uncovered component shows the pipeline.
 */
const CANONICAL_IO: Readonly<Record<PortOperation, { inputs: IOSpec[]; outputs: IOSpec[] }>> = {
  text_encoder: {
    inputs: [{ name: "input_ids", type: "int32", shape: ["batch", "sequence"] }],
    outputs: [{ name: "last_hidden_state", type: "float32", shape: ["batch", "sequence", "hidden"] }],
  },
  unet: {
    inputs: [
      { name: "sample", type: "float32", shape: ["batch", "channels", "height", "width"] },
      { name: "timestep", type: "float32", shape: [1] },
      { name: "encoder_hidden_states", type: "float32", shape: ["batch", "sequence", "hidden"] },
    ],
    outputs: [{ name: "out_sample", type: "float32", shape: ["batch", 4, "height", "width"] }],
  },
  vae_decode: {
    inputs: [{ name: "latent_sample", type: "float32", shape: ["batch", 4, "height_latent", "width_latent"] }],
    outputs: [{ name: "sample", type: "float32", shape: ["batch", 3, "height", "width"] }],
  },
  vae_encode: {
    inputs: [{ name: "sample", type: "float32", shape: ["batch", 3, "height", "width"] }],
    outputs: [{ name: "latent_parameters", type: "float32", shape: ["batch", 8, "height_latent", "width_latent"] }],
  },
};

export interface PortOptions {
  /** the command line, as --port takes it: a program and its arguments, quoted as in a shell */
  readonly command: string;
  /** time bound of each call (handshake, load, run, release), in milliseconds */
  readonly timeoutMs?: number;
  /** the run's interrupt: a pending call is abandoned and the port's group ended at once */
  readonly signal?: AbortSignal;
  /** where the port's stderr lines go (default: kept only to quote when it fails) */
  readonly log?: (line: string) => void;
  /** the folder the temporary folder is made in (default: the OS's) */
  readonly tmpRoot?: string;
}

/** The port's handshake, as checked. */
export interface PortHello {
  readonly protocol: number;
  readonly name: string;
  readonly version: string;
  readonly device: string;
  readonly precision: string;
  readonly backend: string;
  /** per operation: null when supported, else why not */
  readonly components: Readonly<Record<PortOperation, string | null>>;
  /** the minor version it speaks (0 when its handshake names none) */
  readonly minor: number;
  /** protocol 1.1: the operations whose module outputs it returns (`modules`, for --localize) */
  readonly modules: readonly PortOperation[];
}

/**
 * Split a command line as a POSIX shell would split words: whitespace separates, single quotes
 * keep everything, double quotes keep all but \" and \\, a backslash outside quotes escapes the
 * next character. No expansion of any kind: the port is started without a shell.
 */
export function splitCommand(line: string): string[] {
  const words: string[] = [];
  let cur = "";
  let inWord = false;
  let quote: "'" | '"' | null = null;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quote === "'") {
      if (ch === "'") quote = null;
      else cur += ch;
    } else if (quote === '"') {
      if (ch === '"') quote = null;
      else if (ch === "\\" && (line[i + 1] === '"' || line[i + 1] === "\\")) cur += line[++i];
      else cur += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      inWord = true;
    } else if (ch === "\\" && i + 1 < line.length) {
      cur += line[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(cur);
      cur = "";
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (quote)
    throw new HarnessError(
      `--port: unterminated ${quote === "'" ? "single" : "double"} quote in ${JSON.stringify(oneLine(line, 200))}`,
      ExitCode.usage,
    );
  if (inWord) words.push(cur);
  if (words.length === 0)
    throw new HarnessError("--port: empty command; give the program that speaks the port protocol and its arguments", ExitCode.usage);
  return words;
}

/** `python port.py`, `node node-port.js`, `sd-port`: what names a port before its handshake does. */
function programLabel(argv: readonly string[]): string {
  return argv
    .slice(0, 2)
    .filter((a, i) => i === 0 || !a.startsWith("-"))
    .map((a) => path.basename(a))
    .join(" ");
}

interface Reply {
  readonly id: number;
  readonly ok: boolean;
  readonly error?: string;
  readonly [key: string]: unknown;
}

interface Pending {
  readonly op: string;
  readonly resolve: (r: Reply) => void;
  readonly reject: (e: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** Ports alive in this process: ended, and their folders removed, when the process exits however it exits. */
const LIVE = new Set<PortProcess>();
let exitHooked = false;
function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on("exit", () => {
    for (const p of LIVE) p.kill();
  });
}

/** One started port: its process group, its pending calls, its temporary folder. */
class PortProcess {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buf = "";
  private readonly stderrTail: string[] = [];
  private stderrPartial = "";
  /** why the port can no longer be used (the first failure), or null while it can */
  private dead: string | null = null;
  private exited = false;
  private readonly exitPromise: Promise<void>;
  readonly tmp: string;

  constructor(
    private readonly argv: readonly string[],
    private label: string,
    private readonly opts: PortOptions,
  ) {
    this.tmp = fs.mkdtempSync(path.join(opts.tmpRoot ?? os.tmpdir(), "sd-harness-port-"));
    trackPendingDirectory(this.tmp, "tree");
    hookExit();
    LIVE.add(this);
    this.child = spawn(argv[0], argv.slice(1), {
      // a process group of its own: ended whole (its own children too), and out of reach of the
      // terminal's ^C, which the harness turns into an orderly end
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, SD_HARNESS_PORT_PROTOCOL: String(PORT_PROTOCOL) },
    });
    this.exitPromise = new Promise<void>((resolve) => {
      this.child.once("close", () => resolve());
      this.child.once("error", () => resolve());
    });
    this.child.on("error", (e: NodeJS.ErrnoException) => {
      this.exited = true;
      const why =
        e.code === "ENOENT"
          ? `cannot start ${JSON.stringify(oneLine(argv[0], 200))}: not found`
          : e.code === "EACCES"
            ? `cannot start ${JSON.stringify(oneLine(argv[0], 200))}: permission denied`
            : `cannot start it (${oneLine(e.message, 200)})`;
      this.fail(why);
    });
    this.child.on("exit", (code, signal) => {
      this.exited = true;
      if (!this.dead) this.fail(`the port exited (${signal ? `signal ${signal}` : `code ${code}`})${this.lastWords()}`);
      // what the port started may still hold the group
      this.killGroup();
    });
    this.child.stdin!.on("error", () => {
      /* a closed pipe: the exit event says why */
    });
    this.child.stdout!.setEncoding("utf8");
    this.child.stdout!.on("data", (chunk: string) => this.onStdout(chunk));
    this.child.stderr!.setEncoding("utf8");
    this.child.stderr!.on("data", (chunk: string) => this.onStderr(chunk));
    opts.signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  private readonly onAbort = () => {
    this.fail("interrupted", new HarnessError("interrupted", ExitCode.interrupted));
  };

  setLabel(label: string): void {
    this.label = label;
  }

  get alive(): boolean {
    return this.dead === null;
  }

  private lastWords(): string {
    const last = [...this.stderrTail, this.stderrPartial].filter((l) => l.trim()).pop();
    return last ? `; its last stderr line: ${oneLine(last.trim(), 200)}` : "";
  }

  private onStderr(chunk: string): void {
    const parts = (this.stderrPartial + chunk).split("\n");
    this.stderrPartial = parts.pop() ?? "";
    if (this.stderrPartial.length > 4096) this.stderrPartial = this.stderrPartial.slice(-4096);
    for (const line of parts) {
      this.opts.log?.(`port ${this.label}: ${oneLine(line, 500)}`);
      this.stderrTail.push(line);
      if (this.stderrTail.length > STDERR_TAIL) this.stderrTail.shift();
    }
  }

  private onStdout(chunk: string): void {
    if (this.dead) return;
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      const line = this.buf.slice(0, nl).replace(/\r$/, "");
      this.buf = this.buf.slice(nl + 1);
      if (line.trim() === "") continue;
      this.onLine(line);
      if (this.dead) return;
    }
    if (this.buf.length > MAX_LINE)
      this.fail(`wrote over ${MAX_LINE} bytes on stdout without a newline, not a protocol message (a port logs to stderr)`);
  }

  private onLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      msg = undefined;
    }
    const r = msg as Reply | undefined;
    if (typeof r !== "object" || r === null || Array.isArray(r) || typeof r.id !== "number" || typeof r.ok !== "boolean") {
      this.fail(`wrote a line on stdout that is not a protocol reply: ${JSON.stringify(oneLine(line, 80))} (a port logs to stderr)`);
      return;
    }
    const p = this.pending.get(r.id);
    if (!p) {
      this.fail(`replied to request ${r.id}, which is not pending`);
      return;
    }
    this.pending.delete(r.id);
    clearTimeout(p.timer);
    p.resolve(r);
  }

  /** Send one request and wait for its reply, at most `timeoutMs`; `op` names it in errors. */
  call(msg: Record<string, unknown>, op: string, timeoutMs: number): Promise<Reply> {
    if (this.dead) return Promise.reject(this.error(op, `not running: ${this.dead}`));
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(`${op}: no reply within ${timeoutMs / 1000} s (--port-timeout); its process group was ended`);
      }, timeoutMs);
      this.pending.set(id, { op, resolve, reject, timer });
      this.child.stdin!.write(`${JSON.stringify({ id, ...msg })}\n`);
    });
  }

  /** Throws the first failure's error when the port can no longer be used. */
  check(op: string): void {
    if (this.dead) throw this.error(op, `not running: ${this.dead}`);
  }

  error(op: string, why: string): HarnessError {
    return new HarnessError(oneLine(`port ${this.label}: ${op}: ${why}`, 600), ExitCode.usage);
  }

  /**
   * The port broke the protocol or the run was interrupted: every pending call is rejected (the
   * one in flight names the failure, the rest that it stopped), the group ended, the folder removed.
   */
  fail(why: string, as?: HarnessError): void {
    if (this.dead) return;
    // what later calls quote: the failure with the operation it broke
    const first = [...this.pending.values()][0];
    this.dead = first && !why.startsWith(`${first.op}: `) ? `${first.op}: ${why}` : why;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      const already = why.startsWith(`${p.op}: `);
      p.reject(as ?? this.error(p.op, already ? why.slice(p.op.length + 2) : why));
    }
    this.pending.clear();
    this.kill();
  }

  private killGroup(): void {
    const pid = this.child.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      /* the group is gone */
    }
  }

  /** End the group and remove the folder, synchronously (also run from the process's exit). */
  kill(): void {
    this.killGroup();
    this.opts.signal?.removeEventListener("abort", this.onAbort);
    fs.rmSync(this.tmp, { recursive: true, force: true });
    untrackPendingDirectory(this.tmp);
    LIVE.delete(this);
  }

  /** Ask the port to exit; end its group when it does not within the grace period. */
  async shutdown(timeoutMs: number): Promise<void> {
    if (!this.dead && !this.exited) {
      try {
        await this.call({ op: "shutdown" }, "shutdown", Math.min(timeoutMs, SHUTDOWN_GRACE_MS));
      } catch {
        /* failed or timed out: killed below */
      }
      this.child.stdin!.end();
      await Promise.race([this.exitPromise, new Promise((r) => setTimeout(r, SHUTDOWN_GRACE_MS).unref())]);
    }
    this.dead ??= "closed";
    this.kill();
    if (!this.exited) await Promise.race([this.exitPromise, new Promise((r) => setTimeout(r, SHUTDOWN_GRACE_MS).unref())]);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function str(v: unknown, max = 200): string | null {
  return typeof v === "string" && v.trim() !== "" ? oneLine(v, max) : null;
}

/** The handshake reply, checked field by field; a breach is `why` for the caller's error. */
export function checkHello(r: Record<string, unknown>): PortHello | string {
  if (r.protocol !== PORT_PROTOCOL) return `speaks protocol ${JSON.stringify(r.protocol)}, sd-harness speaks ${PORT_PROTOCOL}`;
  const port = r.port;
  if (!isObject(port)) return 'its handshake has no "port" object';
  const fields: Record<string, string> = {};
  for (const k of ["name", "version", "device", "precision"]) {
    const v = str(port[k]);
    if (v === null) return `its handshake's port.${k} is not a non-empty string`;
    fields[k] = v;
  }
  const comps = r.components;
  if (!isObject(comps)) return 'its handshake has no "components" object';
  for (const k of Object.keys(comps)) {
    if (!(PORT_OPERATIONS as readonly string[]).includes(k))
      return `its handshake names an unknown component ${JSON.stringify(oneLine(k, 40))} (protocol ${PORT_PROTOCOL} has ${PORT_OPERATIONS.join(", ")})`;
  }
  const components = {} as Record<PortOperation, string | null>;
  for (const op of PORT_OPERATIONS) {
    const c = comps[op];
    if (c === undefined) {
      components[op] = "the port's handshake does not list it";
      continue;
    }
    if (!isObject(c) || typeof c.supported !== "boolean") return `its handshake's components.${op} is not {"supported": true|false, ...}`;
    components[op] = c.supported ? null : (str(c.reason, 300) ?? "the port gave no reason");
  }
  const minor = r.minor ?? 0;
  if (!Number.isSafeInteger(minor) || (minor as number) < 0)
    return `its handshake's minor is ${JSON.stringify(oneLine(JSON.stringify(minor), 40))}, not a whole number >= 0`;
  // 1.1: which operations' module outputs it returns; a 1.0 port's extra fields mean nothing yet
  const modules: PortOperation[] = [];
  if ((minor as number) >= 1 && r.modules !== undefined) {
    if (!Array.isArray(r.modules)) return "its handshake's modules is not a list of operations";
    for (const m of r.modules as unknown[]) {
      if (!(PORT_OPERATIONS as readonly unknown[]).includes(m))
        return `its handshake's modules names ${JSON.stringify(oneLine(String(m), 40))}, not an operation (${PORT_OPERATIONS.join(", ")})`;
      if (components[m as PortOperation] !== null) return `its handshake's modules names ${String(m)}, which it does not run`;
      modules.push(m as PortOperation);
    }
  }
  return {
    protocol: PORT_PROTOCOL,
    name: fields.name,
    version: fields.version,
    device: fields.device,
    precision: fields.precision,
    backend: str(port.backend) ?? "port",
    components,
    minor: minor as number,
    modules,
  };
}

/** A load reply's inputs / outputs list, checked; a string says what is wrong. */
function checkSpecs(v: unknown, what: string): IOSpec[] | string {
  if (!Array.isArray(v) || v.length === 0) return `its load reply's ${what} is not a non-empty array`;
  const out: IOSpec[] = [];
  for (const s of v) {
    if (!isObject(s) || str(s.name) === null) return `its load reply's ${what} has an entry without a name`;
    if (typeof s.type !== "string" || !TENSOR_TYPES.has(s.type))
      return `its load reply's ${what} entry ${JSON.stringify(oneLine(String(s.name), 60))} has type ${JSON.stringify(s.type)}; protocol ${PORT_PROTOCOL} allows ${[...TENSOR_TYPES].join(", ")}`;
    if (!Array.isArray(s.shape) || s.shape.some((d) => !(typeof d === "string" || (Number.isSafeInteger(d) && (d as number) >= 0)))) {
      return `its load reply's ${what} entry ${JSON.stringify(oneLine(String(s.name), 60))} has no shape (an array of sizes and dimension names)`;
    }
    out.push({ name: String(s.name), type: s.type, shape: s.shape as (number | string)[] });
  }
  return out;
}

/** 2^(len(block_out_channels) - 1) from the VAE part's config.json (8 for SD 1.x); null when unreadable. */
function vaeScale(modelDir: string, folder: string): number | null {
  try {
    const cfg = JSON.parse(fs.readFileSync(path.join(modelDir, folder, "config.json"), "utf8")) as { block_out_channels?: unknown };
    return Array.isArray(cfg.block_out_channels) && cfg.block_out_channels.length > 0 ? 2 ** (cfg.block_out_channels.length - 1) : null;
  } catch {
    return null;
  }
}

/** The shape an operation's output must have for these feeds; null: any (only what the declaration fixes). */
function expectedDims(
  op: PortOperation,
  feeds: Readonly<Record<string, RuntimeTensor>>,
  scale: number | null,
  latentChannels: number,
): (dims: readonly number[]) => string | null {
  const want = (exp: (number | null)[]) => (dims: readonly number[]) => {
    const ok = dims.length === exp.length && exp.every((e, i) => e === null || e === dims[i]);
    return ok ? null : `[${exp.map((e) => (e === null ? "?" : e)).join(", ")}]`;
  };
  switch (op) {
    case "text_encoder": {
      const [b, n] = feeds.input_ids.dims;
      return want([b, n, null]);
    }
    case "unet": {
      const [b, , h, w] = feeds.sample.dims;
      return want([b, latentChannels, h, w]);
    }
    case "vae_decode": {
      const [b, , h, w] = feeds.latent_sample.dims;
      return want([b, 3, scale === null ? null : h * scale, scale === null ? null : w * scale]);
    }
    case "vae_encode": {
      const [b, , h, w] = feeds.sample.dims;
      return want([b, null, scale === null ? null : h / scale, scale === null ? null : w / scale]);
    }
  }
}

function firstNonFinite(t: RuntimeTensor): number {
  if (!(t.data instanceof Float32Array || t.data instanceof Float64Array)) return -1;
  for (let i = 0; i < t.data.length; i++) if (!Number.isFinite(t.data[i])) return i;
  return -1;
}

class PortSession implements RuntimeSession {
  private released = false;

  constructor(
    private readonly runtime: PortRuntime,
    private readonly proc: PortProcess,
    private readonly op: PortOperation,
    private readonly session: string,
    readonly inputs: readonly IOSpec[],
    readonly outputs: readonly IOSpec[],
    private readonly check: { scale: number | null; latentChannels: number },
  ) {}

  async run(feeds: Readonly<Record<string, RuntimeTensor>>, outputs?: readonly string[]): Promise<Record<string, RuntimeTensor>> {
    const opName = `${this.op} run`;
    if (this.released) throw this.proc.error(opName, "session used after release");
    this.proc.check(opName);
    const wanted = outputs ? [...outputs] : this.outputs.map((o) => o.name);
    for (const name of wanted)
      if (!this.outputs.some((o) => o.name === name))
        throw this.proc.error(
          opName,
          `output ${name} asked for, but the port declared only ${this.outputs.map((o) => o.name).join(", ")} at load`,
        );
    const n = this.runtime.nextFile();
    const inFile = path.join(this.proc.tmp, `${n}-in.safetensors`);
    const outFile = path.join(this.proc.tmp, `${n}-out.safetensors`);
    try {
      fs.writeFileSync(inFile, encodeSafetensors({ ...feeds }));
      const r = await this.proc.call(
        { op: "run", session: this.session, inputs: inFile, output: outFile, outputs: wanted },
        opName,
        this.runtime.timeoutMs,
      );
      if (!r.ok) throw this.proc.error(opName, `the port refused: ${oneLine(String(r.error ?? "no reason given"), 300)}`);
      return this.readOutputs(outFile, wanted, feeds, opName);
    } catch (e) {
      // a reply the harness cannot use is the port's fault as much as a crash: the group goes
      if (this.proc.alive && !(e instanceof HarnessError && /the port refused/.test(e.message)))
        this.proc.fail((e as Error).message.replace(/^port [^:]*: /, ""));
      throw e;
    } finally {
      if (this.proc.alive) {
        fs.rmSync(inFile, { force: true });
        fs.rmSync(outFile, { force: true });
      }
    }
  }

  private readOutputs(
    outFile: string,
    wanted: readonly string[],
    feeds: Readonly<Record<string, RuntimeTensor>>,
    opName: string,
  ): Record<string, RuntimeTensor> {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(outFile);
    } catch {
      throw this.proc.error(opName, `replied ok but wrote no output file ${path.basename(outFile)}`);
    }
    if (!st.isFile()) throw this.proc.error(opName, `its output ${path.basename(outFile)} is not a regular file`);
    let tensors: ReadonlyMap<string, RuntimeTensor>;
    try {
      tensors = readSafetensors(outFile).tensors;
    } catch (e) {
      throw this.proc.error(opName, `its output file is not usable: ${oneLine((e as Error).message.replace(`${outFile}: `, ""), 300)}`);
    }
    const expect = expectedDims(this.op, feeds, this.check.scale, this.check.latentChannels);
    const out: Record<string, RuntimeTensor> = {};
    for (const name of wanted) {
      const t = tensors.get(name);
      if (!t) throw this.proc.error(opName, `its reply lacks output ${name} (it has ${[...tensors.keys()].join(", ") || "none"})`);
      const spec = this.outputs.find((o) => o.name === name)!;
      if (t.dtype !== spec.type) throw this.proc.error(opName, `output ${name} is ${t.dtype}, but the port declared ${spec.type} at load`);
      const wrong = expect(t.dims);
      if (wrong)
        throw this.proc.error(
          opName,
          `output ${name} has shape ${formatDims(t.dims)}, expected ${wrong} for inputs ${Object.entries(feeds)
            .map(([k, v]) => `${k} ${formatDims(v.dims)}`)
            .join(", ")}`,
        );
      const declared = spec.shape;
      if (declared.length !== t.dims.length || declared.some((d, i) => typeof d === "number" && d !== t.dims[i])) {
        throw this.proc.error(
          opName,
          `output ${name} has shape ${formatDims(t.dims)}, but the port declared [${declared.join(", ")}] at load`,
        );
      }
      // NaN / Inf are not a protocol breach: they are the port's numbers, judged like any runtime's
      // (the stage fails with where they first appeared); the log says which call made them
      const bad = firstNonFinite(t);
      if (bad >= 0)
        this.runtime.log?.(
          `port ${this.runtime.label}: ${opName}: output ${name} has a non-finite value at element ${bad} of ${formatDims(t.dims)}`,
        );
      out[name] = t;
    }
    return out;
  }

  /**
   * Protocol 1.1's `modules`: the port runs the component on `feeds` and returns each module's
   * output by module name, or says why it has none. A reply that leaves a module unaccounted for,
   * or returns one of another shape or type, is a breach like a wrong run output: one line naming
   * the operation and the call, and the port's group ended.
   */
  async runModules(
    feeds: Readonly<Record<string, RuntimeTensor>>,
    modules: readonly ModuleRequest[],
    call: string,
  ): Promise<ModuleOutputs> {
    const opName = `${this.op} modules for ${call}`;
    if (this.released) throw this.proc.error(opName, "session used after release");
    this.proc.check(opName);
    const n = this.runtime.nextFile();
    const inFile = path.join(this.proc.tmp, `${n}-in.safetensors`);
    const outFile = path.join(this.proc.tmp, `${n}-modules.safetensors`);
    try {
      fs.writeFileSync(inFile, encodeSafetensors({ ...feeds }));
      const req = modules.map((m) => ({ name: m.name, shape: m.shape, ...(m.tensors ? { tensors: m.tensors } : {}) }));
      const r = await this.proc.call(
        { op: "modules", session: this.session, inputs: inFile, output: outFile, case: call, modules: req },
        opName,
        this.runtime.timeoutMs,
      );
      if (!r.ok) throw this.proc.error(opName, `the port refused: ${oneLine(String(r.error ?? "no reason given"), 300)}`);
      return this.readModules(outFile, modules, r.missing, opName);
    } catch (e) {
      if (this.proc.alive && !(e instanceof HarnessError && /the port refused/.test(e.message)))
        this.proc.fail((e as Error).message.replace(/^port [^:]*: /, ""));
      throw e;
    } finally {
      if (this.proc.alive) {
        fs.rmSync(inFile, { force: true });
        fs.rmSync(outFile, { force: true });
      }
    }
  }

  private readModules(outFile: string, modules: readonly ModuleRequest[], missingField: unknown, opName: string): ModuleOutputs {
    if (missingField !== undefined && !(isObject(missingField) && Object.values(missingField).every((v) => typeof v === "string"))) {
      throw this.proc.error(opName, "its reply's missing is not an object of module name -> reason");
    }
    const missing = new Map<string, string>(
      Object.entries((missingField ?? {}) as Record<string, string>).map(([k, v]) => [k, oneLine(v, 300)]),
    );
    let tensors: ReadonlyMap<string, RuntimeTensor> = new Map();
    if (modules.some((m) => !missing.has(m.name))) {
      if (!fs.existsSync(outFile)) throw this.proc.error(opName, `replied ok but wrote no output file ${path.basename(outFile)}`);
      if (!fs.lstatSync(outFile).isFile()) throw this.proc.error(opName, `its output ${path.basename(outFile)} is not a regular file`);
      try {
        tensors = readSafetensors(outFile).tensors;
      } catch (e) {
        throw this.proc.error(opName, `its output file is not usable: ${oneLine((e as Error).message.replace(`${outFile}: `, ""), 300)}`);
      }
    }
    const values = new Map<string, RuntimeTensor>();
    for (const m of modules) {
      const t = tensors.get(m.name);
      if (t && missing.has(m.name)) throw this.proc.error(opName, `its reply both returns module ${m.name} and says it is missing`);
      if (!t) {
        if (!missing.has(m.name))
          throw this.proc.error(
            opName,
            `its reply has neither module ${m.name} nor a reason in missing (it returned ${tensors.size} of ${modules.length} modules)`,
          );
        continue;
      }
      if (!MODULE_TYPES.has(t.dtype))
        throw this.proc.error(opName, `module ${m.name} is ${t.dtype}; a module output is ${[...MODULE_TYPES].join(", ")}`);
      if (t.dims.length !== m.shape.length || t.dims.some((d, i) => d !== m.shape[i]))
        throw this.proc.error(opName, `module ${m.name} has shape ${formatDims(t.dims)}, the module's output is ${formatDims(m.shape)}`);
      values.set(m.name, t);
    }
    return { values, missing };
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (!this.proc.alive) return;
    const r = await this.proc
      .call({ op: "release", session: this.session }, `${this.op} release`, this.runtime.timeoutMs)
      .catch(() => null);
    if (r && !r.ok) this.runtime.log?.(`port ${this.runtime.label}: ${this.op} release: ${oneLine(String(r.error ?? "refused"), 200)}`);
  }
}

/** A component the port does not run: the pipeline may load it; running it says why not. */
class UncoveredSession implements RuntimeSession {
  readonly inputs: readonly IOSpec[];
  readonly outputs: readonly IOSpec[];

  constructor(
    private readonly why: string,
    op: PortOperation,
  ) {
    this.inputs = CANONICAL_IO[op].inputs;
    this.outputs = CANONICAL_IO[op].outputs;
  }

  async run(): Promise<Record<string, RuntimeTensor>> {
    throw new NotCoveredError(this.why);
  }

  async release(): Promise<void> {}
}

export class PortRuntime implements Runtime {
  readonly name = "port";
  readonly timeoutMs: number;
  readonly log?: (line: string) => void;
  private readonly argv: string[];
  private proc: PortProcess | null = null;
  private starting: Promise<PortHello> | null = null;
  private hello: PortHello | null = null;
  private threads = 0;
  private fileCounter = 0;
  private readonly precisions = new Map<string, string>();

  constructor(private readonly opts: PortOptions) {
    this.argv = splitCommand(opts.command);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_PORT_TIMEOUT_S * 1000;
    this.log = opts.log;
  }

  /** The port's name once it said it, else its program's file name (and its script's, for an interpreter). */
  get label(): string {
    return this.hello?.name ?? programLabel(this.argv);
  }

  nextFile(): number {
    return ++this.fileCounter;
  }

  /** The handshake (starting the port on first use). */
  async handshake(): Promise<PortHello> {
    if (this.hello && this.proc?.alive) return this.hello;
    if (this.proc && !this.proc.alive) {
      // a port that failed is not restarted behind the user's back: every later call names the first failure
      return Promise.reject(this.proc.error("call", "not running (it failed earlier in this run; see the first error)"));
    }
    this.starting ??= (async () => {
      const proc = new PortProcess(this.argv, programLabel(this.argv), this.opts);
      this.proc = proc;
      const r = await proc.call(
        { op: "hello", protocol: PORT_PROTOCOL, minor: PORT_PROTOCOL_MINOR, harness: { name: "sd-harness" }, tmp: proc.tmp },
        "handshake",
        this.timeoutMs,
      );
      if (!r.ok) {
        proc.fail(`handshake: the port refused: ${oneLine(String(r.error ?? "no reason given"), 300)}`);
        throw proc.error("handshake", `the port refused: ${oneLine(String(r.error ?? "no reason given"), 300)}`);
      }
      const hello = checkHello(r);
      if (typeof hello === "string") {
        proc.fail(`handshake: ${hello}`);
        throw proc.error("handshake", hello);
      }
      proc.setLabel(hello.name);
      this.hello = hello;
      return hello;
    })();
    return this.starting;
  }

  async load(file: string, settings: SessionSettings): Promise<RuntimeSession> {
    this.threads = settings.threads ?? 0;
    const folder = path.basename(path.dirname(file));
    const op = FOLDER_TO_OPERATION[folder];
    if (!op)
      throw new HarnessError(
        `${file}: the port runtime needs the component's folder (text_encoder, unet, vae_decoder, vae_encoder) to name the operation; ${JSON.stringify(folder)} is none of them`,
        ExitCode.usage,
      );
    const hello = await this.handshake();
    const proc = this.proc!;
    const uncovered = hello.components[op];
    if (uncovered !== null) return new UncoveredSession(`not covered: port ${hello.name} does not run ${op}: ${uncovered}`, op);
    const modelDir = path.dirname(path.dirname(file));
    const opName = `${op} load`;
    const r = await proc.call(
      { op: "load", component: op, model_dir: path.resolve(modelDir), file: path.resolve(file), threads: this.threads },
      opName,
      this.timeoutMs,
    );
    if (!r.ok) {
      const why = `refused (${oneLine(String(r.error ?? "no reason given"), 300)}), although its handshake lists ${op} as supported`;
      proc.fail(`${opName}: ${why}`);
      throw proc.error(opName, why);
    }
    const failOn = (why: string): never => {
      proc.fail(`${opName}: ${why}`);
      throw proc.error(opName, why);
    };
    const session = str(r.session);
    if (session === null) failOn("its load reply has no session id");
    const inputs = checkSpecs(r.inputs, "inputs");
    if (typeof inputs === "string") return failOn(inputs);
    const outputs = checkSpecs(r.outputs, "outputs");
    if (typeof outputs === "string") return failOn(outputs);
    const req = REQUIRED[op];
    for (const name of req.inputs)
      if (!inputs.some((i) => i.name === name))
        failOn(
          `it declares inputs [${inputs.map((i) => i.name).join(", ")}], protocol ${PORT_PROTOCOL}'s ${op} takes ${req.inputs.join(", ")}`,
        );
    if (req.output && !outputs.some((o) => o.name === req.output))
      failOn(`it declares outputs [${outputs.map((o) => o.name).join(", ")}], protocol ${PORT_PROTOCOL}'s ${op} gives ${req.output}`);
    const precision = str(r.precision);
    if (precision) this.precisions.set(op, precision);
    const latentChannels = (() => {
      try {
        const cfg = JSON.parse(fs.readFileSync(path.join(modelDir, "unet", "config.json"), "utf8")) as { out_channels?: unknown };
        return typeof cfg.out_channels === "number" ? cfg.out_channels : 4;
      } catch {
        return 4;
      }
    })();
    const scale = vaeScale(modelDir, op === "vae_encode" ? "vae_encoder" : "vae_decoder");
    return new PortSession(this, proc, op, session!, inputs, outputs, { scale, latentChannels });
  }

  /**
   * --localize goes through the port's `modules` operation (protocol 1.1): a port that does not
   * announce it for this component localizes nothing there, which the report's coverage says.
   */
  async modulesNotCovered(file: string): Promise<string | null> {
    const op = FOLDER_TO_OPERATION[path.basename(path.dirname(file))];
    const hello = await this.handshake();
    if (!op) return `${file} is in none of the component folders`;
    if (hello.components[op] !== null) return `it does not run ${op}: ${hello.components[op]}`;
    if (hello.minor < 1)
      return `it speaks protocol ${hello.protocol}.${hello.minor}; the modules operation came in ${PORT_PROTOCOL}.${PORT_PROTOCOL_MINOR}`;
    if (!hello.modules.includes(op))
      return `its handshake lists modules for ${hello.modules.length ? hello.modules.join(", ") : "no operation"}, not ${op}`;
    return null;
  }

  /** Stages that run no component judge sd-harness's own code, not the port's: not covered by a port. */
  notCovered(components: readonly string[]): string | null {
    if (components.length > 0) return null;
    return `not covered: this stage runs sd-harness's own code, not the port's (protocol ${PORT_PROTOCOL} exchanges component calls only)`;
  }

  describe(): RuntimeDescription {
    const h = this.hello;
    const precisions = [...new Set(this.precisions.values())];
    const loaded = precisions.length === 1 ? precisions[0] : [...this.precisions].map(([k, v]) => `${k} ${v}`).join(", ");
    // what the components run in, and what the handshake said where that differs (a request the device could not honour)
    const precision =
      precisions.length === 0
        ? (h?.precision ?? "unknown")
        : h && h.precision !== loaded
          ? `${loaded} (handshake: ${h.precision})`
          : loaded;
    return {
      runtime: this.name,
      package: h?.name ?? programLabel(this.argv),
      version: h?.version ?? "unknown",
      executionProvider: `${h?.backend ?? "port"}, precision ${precision}`,
      device: h?.device ?? "unknown",
      threads: this.threads,
    };
  }

  async close(): Promise<void> {
    const p = this.proc;
    this.proc = null;
    this.starting = null;
    // the handshake stays: reports describe the port after it has gone
    await p?.shutdown(this.timeoutMs);
  }
}
