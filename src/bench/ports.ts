/**
 * The benchmark's worker for ports: speed beside fidelity at SD 1.5 size. For each backend -- ort-node
 * in process, and the adapters under ports/ through the port protocol (src/runtime/port.ts) -- it
 * first runs `sd-harness conformance` on the bundled tiny set through the same runtime or adapter
 * (the verdict), then times one U-Net call with CFG (batch 2) and one VAE decode at --size on the
 * random-weight SD 1.5 (src/bench/run.ts builds it). Spawned by bench/run (--only ports); writes
 * one JSON object to --out.
 *
 *   node dist/bench/ports.js --model ONNX_DIR --pytorch PT_DIR [--threads 2 --size 512 --repeats 3]
 *                            [--backends ort-node,openvino-f32,torch-bf16@64:unet,...] [--no-verdict]
 *
 * A backend given as KEY@SIZE is timed at SIZE instead of --size, and KEY@SIZE:unet on the U-Net
 * alone: PyTorch bfloat16 on a CPU without bf16 instructions (AVX2) is too slow for 512x512 here.
 *
 * A port's time includes the protocol (inputs and outputs as safetensors files in a temporary
 * folder, a few MB at 512x512); the onnxruntime-port row, ort-node's own engine behind the
 * protocol, shows what that costs. Contention: each call records the cores the rest of the
 * machine used meanwhile (all CPUs' busy time minus this process and its children, the port).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import yargs from "yargs";
import { createRuntime } from "../runtime/index";
import { PortRuntime } from "../runtime/port";
import type { Runtime, RuntimeSession, RuntimeTensor, SessionSettings } from "../runtime/types";
import { fromF32 } from "../tensor/float16";
import { f32 } from "../tensor/tensor";
import { TorchGenerator } from "../rng/torch-generator";

const ROOT = path.resolve(__dirname, "..", "..");
const PY = path.join(ROOT, ".venv", "bin", "python");
const BIN = path.join(ROOT, "bin", "sd-harness.js");
const TINY_PT = path.join(ROOT, "fixtures", "models", "tiny-sd");
const TINY_PT_INPAINT = path.join(ROOT, "fixtures", "models", "tiny-sd-inpaint");
/**
 * The verdict's cases: one of every model stage of the bundled set (the U-Net's txt2img and
 * inpainting first steps) -- 7 cases. The whole set (--verdict-cases all) is ~75 s through ort-node
 * but took PyTorch bfloat16 over 20 min on this shared 2-core machine without finishing.
 */
const VERDICT_CASES = [
  "text_encoder:batch2",
  "unet:txt2img-pndm-64x64-step00",
  "unet:inpaint-pndm-64x64-step00",
  "vae_*:64x64",
  "end_to_end:txt2img-pndm-64x64",
];

interface Backend {
  readonly key: string;
  readonly label: string;
  /** the port command at SD 1.5 size, or null for ort-node in process */
  readonly port: ((ptDir: string) => string) | null;
  /** the same adapter on the bundled tiny set (the diffusers adapter loads the tiny PyTorch folders) */
  readonly tinyPort: string | null;
  /** tolerance profile its verdict is judged against */
  readonly profile: string;
}

const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
const adapter = (name: string, ...args: string[]) => [PY, path.join(ROOT, "ports", name, "port.py"), ...args].map(q).join(" ");
const diffusers = (dtype: string) => (pt: string, inpaint?: string) =>
  adapter("diffusers", "--model", pt, ...(inpaint ? ["--inpaint-model", inpaint] : []), "--dtype", dtype);

export const BACKENDS: readonly Backend[] = [
  { key: "ort-node", label: "ort-node (in process)", port: null, tinyPort: null, profile: "fp32" },
  {
    key: "onnxruntime-port",
    label: "onnxruntime (Python) through the port",
    port: () => adapter("onnxruntime"),
    tinyPort: adapter("onnxruntime"),
    profile: "fp32",
  },
  {
    key: "openvino-f32",
    label: "OpenVINO --precision f32",
    port: () => adapter("openvino", "--precision", "f32"),
    tinyPort: adapter("openvino", "--precision", "f32"),
    profile: "fp32",
  },
  {
    key: "openvino-default",
    label: "OpenVINO, its default precision",
    port: () => adapter("openvino"),
    tinyPort: adapter("openvino"),
    profile: "fp32",
  },
  {
    key: "torch-f32",
    label: "PyTorch float32 (ports/diffusers)",
    port: (pt) => diffusers("float32")(pt),
    tinyPort: diffusers("float32")(TINY_PT, TINY_PT_INPAINT),
    profile: "fp32",
  },
  {
    key: "torch-bf16",
    label: "PyTorch bfloat16 (ports/diffusers)",
    port: (pt) => diffusers("bfloat16")(pt),
    tinyPort: diffusers("bfloat16")(TINY_PT, TINY_PT_INPAINT),
    profile: "bf16",
  },
];

/** One row to time: a backend, at a size, on some stages. */
interface Row {
  readonly backend: Backend;
  readonly size: number;
  readonly stages: readonly string[];
}

const STAGES = ["unet_step_cfg", "vae_decode"];

/** PyTorch bfloat16 at 64x64 on the U-Net alone, beside float32 at the same size: see the file comment. */
const DEFAULT_ROWS = "ort-node,onnxruntime-port,openvino-f32,openvino-default,torch-f32,torch-bf16@64:unet,torch-f32@64:unet";

interface Args {
  model: string;
  pytorch: string;
  out: string | null;
  threads: number;
  size: number;
  repeats: number;
  rows: readonly Row[];
  verdict: boolean;
  /** --only patterns of the verdict, or null: the whole set */
  verdictCases: readonly string[] | null;
}

function parseArgs(argv: string[]): Args {
  const a = yargs(argv)
    .scriptName("ports")
    .usage(
      "node dist/bench/ports.js --model ONNX_DIR --pytorch PT_DIR [options]\n\nThe benchmark's worker for ports (spawned by src/bench/run.ts --only ports); writes one JSON object to --out.",
    )
    .option("model", { type: "string", demandOption: true, describe: "SD 1.5 ONNX folder" })
    .option("pytorch", { type: "string", demandOption: true, describe: "the same model's diffusers folder (ports/diffusers)" })
    .option("out", { type: "string", describe: "the JSON result (default: stdout)" })
    .option("threads", { type: "number", default: 2, describe: "threads of every backend" })
    .option("size", { type: "number", default: 512, describe: "image width and height" })
    .option("repeats", { type: "number", default: 3, describe: "calls per stage (the first is the cold one)" })
    .option("backends", {
      type: "string",
      default: DEFAULT_ROWS,
      describe: `which: ${BACKENDS.map((b) => b.key).join(", ")}, each optionally @SIZE or @SIZE:unet`,
    })
    .option("verdict", {
      type: "boolean",
      default: true,
      describe: "run the bundled set's conformance through each backend (--no-verdict: do not)",
    })
    .option("verdict-cases", {
      type: "string",
      default: VERDICT_CASES.join(","),
      describe: "the verdict's cases (--only patterns, comma-separated), or all",
    })
    .strict()
    .help()
    .parseSync();
  const rows = a.backends.split(",").map((spec): Row => {
    const m = /^([a-z0-9-]+)(?:@(\d+)(?::(unet|vae))?)?$/.exec(spec.trim());
    const b = m ? BACKENDS.find((x) => x.key === m[1]) : undefined;
    if (!m || !b)
      throw new Error(`--backends: unknown ${spec} (${BACKENDS.map((x) => x.key).join(", ")}, each optionally @SIZE or @SIZE:unet / :vae)`);
    const size = m[2] ? Number(m[2]) : a.size;
    if (size % 64 !== 0 || size === 0) throw new Error(`--backends ${spec}: the size must be a multiple of 64`);
    return { backend: b, size, stages: m[3] === "unet" ? ["unet_step_cfg"] : m[3] === "vae" ? ["vae_decode"] : STAGES };
  });
  const vc = a["verdict-cases"].trim();
  return {
    model: a.model,
    pytorch: a.pytorch,
    out: a.out ?? null,
    threads: a.threads,
    size: a.size,
    repeats: a.repeats,
    rows,
    verdict: a.verdict,
    verdictCases: vc === "all" ? null : vc.split(",").map((x) => x.trim()),
  };
}

function log(msg: string): void {
  process.stderr.write(`[ports] ${msg}\n`);
}

// ---- contention: this process and its children (the port) against the whole machine -----------

const TICK = 100; // USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s on Linux

/** This process's and its direct children's CPU seconds, and the children's peak RSS (VmHWM). */
function tree(): { cpuS: number; childPeak: number } {
  let cpuS = 0;
  let childPeak = 0;
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const pid = Number(d);
      const ppid = Number(f[1]);
      if (pid !== process.pid && ppid !== process.pid) continue;
      cpuS += (Number(f[11]) + Number(f[12])) / TICK;
      if (pid !== process.pid) {
        const m = fs.readFileSync(`/proc/${d}/status`, "utf8").match(/^VmHWM:\s+(\d+) kB/m);
        if (m) childPeak = Math.max(childPeak, Number(m[1]) * 1024);
      }
    } catch {
      /* gone meanwhile */
    }
  }
  return { cpuS, childPeak };
}

function procStat(): { busy: number; total: number } | null {
  try {
    const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.reduce((x, y) => x + y, 0);
    return { busy: total - f[3] - (f[4] ?? 0), total };
  } catch {
    return null;
  }
}

interface Timed {
  wall_s: number[];
  cpu_s: number[];
  others_cores: (number | null)[];
  loadavg_before: number;
  loadavg_after: number;
}

async function timed(name: string, n: number, fn: () => Promise<unknown>): Promise<Timed> {
  const t: Timed = { wall_s: [], cpu_s: [], others_cores: [], loadavg_before: os.loadavg()[0], loadavg_after: 0 };
  for (let i = 0; i < n; i++) {
    const s0 = procStat();
    const c0 = tree().cpuS;
    const w0 = process.hrtime.bigint();
    await fn();
    const wall = Number(process.hrtime.bigint() - w0) / 1e9;
    const cpu = tree().cpuS - c0;
    const s1 = procStat();
    const others =
      s0 && s1 && s1.total > s0.total ? Math.max(0, ((s1.busy - s0.busy) / (s1.total - s0.total)) * os.cpus().length - cpu / wall) : null;
    t.wall_s.push(wall);
    t.cpu_s.push(cpu);
    t.others_cores.push(others);
    log(`${name} ${i + 1}/${n}: ${wall.toFixed(2)} s (cpu ${(cpu / wall).toFixed(2)} cores, others ${others?.toFixed(2) ?? "?"})`);
  }
  t.loadavg_after = os.loadavg()[0];
  return t;
}

// ---- inputs --------------------------------------------------------------------------------------

function normal(dims: number[], seed: number): Float32Array {
  return new TorchGenerator(seed).randn(dims);
}

/** A feed typed as the session declares it: float32 or float16; the timestep as its declared type and rank. */
function feed(s: RuntimeSession, name: string, dims: number[], seed: number): RuntimeTensor {
  const spec = s.inputs.find((i) => i.name === name);
  if (name === "timestep") {
    const shape = spec && spec.shape.length === 0 ? [] : [1];
    if (spec?.type === "int64") return { dtype: "int64", dims: shape, data: BigInt64Array.of(981n) };
    return fromF32(f32(Float32Array.of(981), shape), spec?.type ?? "float32");
  }
  return fromF32(f32(normal(dims, seed), dims), spec?.type ?? "float32");
}

// ---- one backend ---------------------------------------------------------------------------------

interface Verdict {
  readonly set: string;
  readonly profile: string;
  /** the --only patterns judged (null: every case) */
  readonly cases: readonly string[] | null;
  readonly verdict: string;
  readonly counts: Readonly<Record<string, number>>;
  readonly runtime: string;
  readonly seconds: number;
  readonly error?: string;
}

/** The bundled set (fixtures/references/tiny-sd/cpu, tiny-sd-onnx) through the backend, in a child process. */
function verdictOf(b: Backend, threads: number, cases: readonly string[] | null): Verdict {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), `sdh-bench-verdict-${b.key}-`));
  const t0 = Date.now();
  try {
    const how = b.tinyPort ? ["--port", b.tinyPort] : ["--runtime", "ort-node"];
    const only = (cases ?? []).flatMap((c) => ["--only", c]);
    const r = spawnSync(
      process.execPath,
      [BIN, "conformance", ...how, "--profile", b.profile, ...only, "--threads", String(threads), "--quiet", "--out", out],
      { cwd: ROOT, encoding: "utf8", maxBuffer: 64 << 20 },
    );
    const seconds = (Date.now() - t0) / 1000;
    const file = path.join(out, "report.json");
    if (!fs.existsSync(file))
      return {
        set: "bundled tiny set",
        profile: b.profile,
        cases,
        verdict: "error",
        counts: {},
        runtime: "",
        seconds,
        error: (r.stderr || "").trim().split("\n").pop() ?? `exit ${r.status}`,
      };
    const rep = JSON.parse(fs.readFileSync(file, "utf8"));
    const s = rep.summary;
    const m = rep.models?.[0];
    const rt = m?.runtime;
    return {
      set: `${path.relative(ROOT, rep.references?.dir ?? "fixtures/references/tiny-sd/cpu")} on ${path.relative(ROOT, m?.dir ?? "")}`,
      profile: b.profile,
      cases,
      verdict: s.verdict,
      counts: { pass: s.pass, fail: s.fail, xfail: s.xfail, xpass: s.xpass, error: s.error, skip: s.skip },
      runtime: rt ? `${rt.package} ${rt.version}, ${rt.executionProvider}` : "",
      seconds,
    };
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

async function measure(row: Row, args: Args): Promise<Record<string, unknown>> {
  const b = row.backend;
  const runtime: Runtime = b.port
    ? new PortRuntime({ command: b.port(args.pytorch), timeoutMs: 3600_000, log: (l) => log(l) })
    : createRuntime("ort-node");
  // ours' session options (src/bench/run.ts OURS_SESSION); a port takes the thread count alone
  const settings: SessionSettings = {
    threads: args.threads,
    graphOptimizationLevel: "all",
    enableMemPattern: true,
    enableCpuMemArena: false,
  };
  const h = row.size / 8;
  const out: Record<string, unknown> = { key: b.key, label: b.label, size: row.size, command: b.port ? b.port(args.pytorch) : null };
  let peak = 0;
  try {
    for (const [stage, folder, run] of [
      [
        "unet_step_cfg",
        "unet",
        (s: RuntimeSession) =>
          s.run({
            sample: feed(s, "sample", [2, 4, h, h], 1),
            timestep: feed(s, "timestep", [1], 0),
            encoder_hidden_states: feed(s, "encoder_hidden_states", [2, 77, 768], 2),
          }),
      ],
      ["vae_decode", "vae_decoder", (s: RuntimeSession) => s.run({ latent_sample: feed(s, "latent_sample", [1, 4, h, h], 3) })],
    ] as const) {
      if (!row.stages.includes(stage)) continue;
      const l0 = process.hrtime.bigint();
      const s = await runtime.load(path.join(args.model, folder, "model.onnx"), settings);
      const loadS = Number(process.hrtime.bigint() - l0) / 1e9;
      log(`${b.key}: ${folder} loaded in ${loadS.toFixed(1)} s`);
      try {
        out[stage] = { load_s: loadS, ...(await timed(`${b.key} ${stage}`, args.repeats, () => run(s))) };
      } finally {
        peak = Math.max(peak, tree().childPeak);
        await s.release();
      }
    }
    const d = runtime.describe();
    out.runtime = { package: d.package, version: d.version, executionProvider: d.executionProvider, device: d.device, threads: d.threads };
  } catch (e) {
    out.error = String((e as Error).message ?? e).split("\n")[0];
    log(`${b.key}: ${out.error}`);
  } finally {
    await runtime.close();
  }
  out.peak_rss_bytes = b.port ? peak : process.resourceUsage().maxRSS * 1024;
  return out;
}

/** The CPU (as /proc/cpuinfo names it), its SIMD, the logical CPUs and RAM: every figure is tied to them. */
function machine(): Record<string, unknown> {
  let cpu = os.cpus()[0]?.model ?? "unknown";
  let simd = "";
  try {
    const info = fs.readFileSync("/proc/cpuinfo", "utf8");
    cpu = info.match(/^model name\s*:\s*(.+)$/m)?.[1] ?? cpu;
    const flags = (info.match(/^flags\s*:\s*(.+)$/m)?.[1] ?? "").split(" ");
    simd = ["avx512f", "avx2", "fma", "avx512_vnni", "avx512_bf16", "amx_tile"].filter((f) => flags.includes(f)).join(" ");
  } catch {
    /* not Linux */
  }
  return { cpu_model: cpu, logical_cpus: os.cpus().length, simd, ram_bytes: os.totalmem() };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const loadavg0 = os.loadavg();
  const rows: Record<string, unknown>[] = [];
  const result = () => ({
    backend: "ports",
    machine: machine(),
    loadavg: loadavg0,
    threads: args.threads,
    size: args.size,
    repeats: args.repeats,
    node: process.version,
    rows,
  });
  const judged = new Map<string, Verdict>();
  for (const row of args.rows) {
    const b = row.backend;
    let verdict: Verdict | null = judged.get(b.key) ?? null;
    if (args.verdict && !verdict) {
      log(`${b.key}: conformance on the bundled set (${b.profile})`);
      verdict = verdictOf(b, args.threads, args.verdictCases);
      log(
        `${b.key}: ${verdict.verdict} ${JSON.stringify(verdict.counts)} in ${verdict.seconds.toFixed(0)} s${verdict.error ? `: ${verdict.error}` : ""}`,
      );
      judged.set(b.key, verdict);
    }
    // ort-node's peak RSS is this process's: right when it is measured first (BACKENDS' order)
    rows.push({ ...(await measure(row, args)), verdict });
    // written after every row: a run cut short keeps the rows it measured (bench --report-only renders them)
    if (args.out) fs.writeFileSync(args.out, JSON.stringify(result(), null, 1));
  }
  if (!args.out) process.stdout.write(JSON.stringify(result(), null, 1) + "\n");
}

main().catch((e) => {
  process.stderr.write(`ports: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
