/**
 * `npm run bench`: SD 1.5 at real size (random weights) -- our pipeline against diffusers'
 * StableDiffusionPipeline (PyTorch fp32, CPU) and diffusers' OnnxStableDiffusionPipeline (Python
 * onnxruntime) on the same ONNX files, same machine, same thread count, 512x512; in one run.
 *
 *   npm run bench -- [--threads 2] [--steps 2] [--repeats 2] [--stage-repeats 3] [--size 512]
 *                    [--leak-gens 10] [--leak-steps 1] [--leak-size 256] [--with-options]
 *                    [--only flops,ours,torch,ort,leak,lowmem,options,variants,ports] [--no-wait] [--max-wait 300]
 *                    [--settings a,b,c,d,e,f] [--report-only] [--out-dir bench]
 *   npm run bench -- --runtime NAME [--size 512] [--stage-repeats 3] [--no-wait]
 *
 * Phases, one process each and never two at once (each has its own peak RSS): FLOPs and peak
 * sgemm (scripts/bench_flops.py); ours (src/bench/ours.ts --mode main); PyTorch and Python ORT
 * (scripts/bench_python.py); ours' leak check (LEAK_GENS generations in one process, at LEAK_SIZE to
 * keep the run short); ours with lowMemory (one txt2img); with --with-options (or --only options)
 * ours under four ORT session-option settings; with --only ports, speed beside fidelity of the port
 * adapters (src/bench/ports.ts: ort-node, OpenVINO f32 and default, PyTorch float32 and bfloat16
 * through ports/, each timed on one U-Net call and one VAE decode and judged on the bundled set).
 * A run of only options / variants / ports keeps the other sections of the previous results.json.
 * The defaults keep a run near 20 minutes on a quiet
 * 2-core machine (a U-Net call with CFG at 512x512 is ~1.6 TFLOP). Before each phase it
 * waits (up to --max-wait s) for the CPUs to be idle, because other processes on a 2-core machine
 * change the figures; every measurement also records its CPU utilisation so contention shows.
 * --runtime NAME runs only the components on that runtime (ours.ts --mode runtime: text encoder,
 * VAE decode, VAE encode, U-Net where it fits) and adds its rows to the "Other runtimes" section of
 * the previous results.json / RESULTS.md, leaving every other figure as it was.
 * Raw phase outputs go to <model dir>/bench-raw-<size>/ (--report-only re-renders from them);
 * results to bench/results.json and bench/RESULTS.md.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import yargs from "yargs";

const ROOT = path.resolve(__dirname, "..", "..");

interface Args {
  threads: number;
  size: number;
  steps: number;
  repeats: number;
  stageRepeats: number;
  leakGens: number;
  leakSteps: number;
  leakSize: number;
  /** option settings to run (their letters), all when null */
  settings: Set<string> | null;
  only: Set<string>;
  wait: boolean;
  maxWait: number;
  reportOnly: boolean;
  outDir: string;
  /** --port-backends: the ports phase's rows (src/bench/ports.ts --backends), its default when null */
  portBackends: string | null;
  /** measure the components on this runtime only (ours.ts --mode runtime) */
  runtime: string | null;
}

/**
 * Ours' ORT session options, chosen by the --with-options sweep (bench/RESULTS.md, "ORT session
 * options"): graph optimisation "all" (NCHWc convolutions; "extended" loads faster but runs no
 * faster), the memory-pattern planner on, the CPU arena OFF -- at 512x512 the arena keeps the
 * U-Net's ~6 GB of activations after the call (peak 11.2 GB -> 6.8 GB without it, RSS between
 * generations back to the weights' 4.5 GB) for no measurable speed difference.
 */
const OURS_SESSION = ["--gol", "all", "--mem-pattern", "1", "--arena", "0"];

const PHASES = ["flops", "ours", "torch", "ort", "leak", "lowmem", "options", "variants", "ports"];
/** phases a plain `npm run bench` leaves out; a run of only these keeps the rest of the previous results */
const EXTRA_PHASES = ["options", "variants", "ports"];
const DEFAULT_PHASES = PHASES.filter((p) => !EXTRA_PHASES.includes(p));
/** --only variants: the U-Net alone of each variant folder present, one process each, with ours'
 *  session options. scripts/quantize.py makes the precision variants (<cache>/onnx-fp16, onnx-int8),
 *  scripts/optimize.py the float32 rewrites (onnx-gn: its default passes; onnx-opt: --passes
 *  groupnorm,attention --components unet). */
const VARIANTS: [string, string][] = [
  ["fp32", "onnx"],
  ["fp16", "onnx-fp16"],
  ["int8-dynamic", "onnx-int8"],
  ["fp32-groupnorm", "onnx-gn"],
  ["fp32-groupnorm-attention", "onnx-opt"],
];

/** A comma-separated list flag as a set of trimmed items. */
const list = (v: string): Set<string> => new Set(v.split(",").map((x) => x.trim()));

function parseArgs(argv: string[]): Args {
  const whole = {
    type: "number",
    coerce: (n: number) => {
      if (!Number.isInteger(n) || n < 0) throw new Error(`expected a whole number, got ${n}`);
      return n;
    },
  } as const;
  const a = yargs(argv)
    .scriptName("npm run bench --")
    .usage(
      "$0 [options]\n\nSD 1.5 at real size (random weights): our pipeline against diffusers' PyTorch and ONNX pipelines, same machine and threads; phases and defaults in src/bench/run.ts's file comment.",
    )
    .option("threads", { ...whole, default: 2, describe: "ONNX Runtime and PyTorch threads" })
    .option("size", { ...whole, default: 512, describe: "image size (a multiple of 64)" })
    .option("steps", { ...whole, default: 2, describe: "denoising steps per txt2img" })
    .option("repeats", { ...whole, default: 2, describe: "txt2img runs per phase" })
    .option("stage-repeats", { ...whole, default: 3, describe: "calls per stage" })
    .option("leak-gens", { ...whole, default: 10, describe: "generations of the leak check" })
    .option("leak-steps", { ...whole, default: 1, describe: "steps per leak-check generation" })
    .option("leak-size", { ...whole, default: 256, describe: "image size of the leak check (a multiple of 64)" })
    .option("with-options", { type: "boolean", default: false, describe: "also run the ORT session-option sweep (the options phase)" })
    .option("settings", { type: "string", describe: "session-option settings to sweep, by letter (a,b,c,d,e,f; default all)" })
    .option("max-wait", { ...whole, default: 300, describe: "seconds to wait for idle CPUs before each phase" })
    .option("only", { type: "string", default: DEFAULT_PHASES.join(","), describe: `phases to run: ${PHASES.join(", ")}` })
    .option("wait", { type: "boolean", default: true, describe: "wait for idle CPUs before each phase (--no-wait: do not)" })
    .option("report-only", { type: "boolean", default: false, describe: "re-render bench/RESULTS.md from the raw phase outputs" })
    .option("out-dir", { type: "string", default: path.join(ROOT, "bench"), describe: "where results.json and RESULTS.md go" })
    .option("port-backends", {
      type: "string",
      describe: "the ports phase's rows (src/bench/ports.ts --backends; default: all its backends)",
    })
    .option("runtime", {
      type: "string",
      describe:
        "measure each component on this runtime (ort-wasm, chromium-wasm, chromium-webgpu, ...) and add its rows to the previous results; nothing else runs",
    })
    .strict()
    .help()
    .alias("h", "help")
    .parseSync();
  const only = list(a.only);
  if (a["with-options"]) only.add("options");
  for (const p of only) if (!PHASES.includes(p)) throw new Error(`--only: unknown phase ${p} (${PHASES.join(", ")})`);
  const out: Args = {
    threads: a.threads,
    size: a.size,
    steps: a.steps,
    repeats: a.repeats,
    stageRepeats: a["stage-repeats"],
    leakGens: a["leak-gens"],
    leakSteps: a["leak-steps"],
    leakSize: a["leak-size"],
    settings: a.settings === undefined ? null : list(a.settings),
    only,
    wait: a.wait,
    maxWait: a["max-wait"],
    reportOnly: a["report-only"],
    outDir: path.resolve(a["out-dir"]),
    portBackends: a["port-backends"] ?? null,
    runtime: a.runtime ?? null,
  };
  for (const [k, x] of [
    ["--size", out.size],
    ["--leak-size", out.leakSize],
  ] as const)
    if (x % 64 !== 0 || x === 0) throw new Error(`${k} ${x}: must be a multiple of 64`);
  if (out.steps < 1 || out.repeats < 1 || out.stageRepeats < 1)
    throw new Error("--steps, --repeats and --stage-repeats must be at least 1");
  return out;
}

function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

class BenchError extends Error {}

// ---- environment -----------------------------------------------------------------------------

function python(): string {
  const py = path.join(ROOT, ".venv", "bin", "python");
  if (!fs.existsSync(py))
    throw new BenchError(`${py} not found: run scripts/setup.sh first (it creates .venv with torch, diffusers and onnxruntime)`);
  return py;
}

function cacheRoot(): string {
  return path.join(process.env.SD_HARNESS_CACHE || path.join(os.homedir(), ".cache", "sd-harness"), "sd15-random");
}

function ensureModel(py: string): void {
  const marker = (d: string) => fs.existsSync(path.join(cacheRoot(), d, ".complete"));
  if (marker("pytorch") && marker("onnx")) {
    log(`model: ${cacheRoot()} (built earlier)`);
    return;
  }
  log(`building SD 1.5 with random weights in ${cacheRoot()} (a few minutes, ~8 GB disk, ~9 GB peak RAM)`);
  const r = spawnSync(py, [path.join(ROOT, "scripts", "make_random_sd15.py"), "--out", cacheRoot()], {
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (r.status !== 0) throw new BenchError(`scripts/make_random_sd15.py failed (exit ${r.status ?? r.signal})`);
}

/** Fraction of all CPUs busy over `ms`, from /proc/stat (null where there is none). */
function cpuBusy(ms: number): number | null {
  const read = () => {
    try {
      const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
      const idle = f[3] + (f[4] ?? 0);
      return { idle, total: f.reduce((s, x) => s + x, 0) };
    } catch {
      return null;
    }
  };
  const a = read();
  if (!a) return null;
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  const b = read();
  if (!b || b.total === a.total) return null;
  return 1 - (b.idle - a.idle) / (b.total - a.total);
}

/** Wait until other processes leave the CPUs (mostly) idle, up to maxWait seconds. */
function waitQuiet(args: Args, phase: string): { busy_before: number | null; waited_s: number } {
  const t0 = Date.now();
  let busy = cpuBusy(2000);
  if (!args.wait) return { busy_before: busy, waited_s: 0 };
  while (busy !== null && busy > QUIET / os.cpus().length && (Date.now() - t0) / 1000 < args.maxWait) {
    log(`${phase}: CPUs ${(busy * 100).toFixed(0)}% busy with other work; waiting for them to settle`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 8000);
    busy = cpuBusy(2000);
  }
  return { busy_before: busy, waited_s: (Date.now() - t0) / 1000 };
}

function runPhase(args: Args, name: string, cmd: string, argv: string[], raw: string): void {
  const quiet = waitQuiet(args, name);
  log(`${name}: ${path.basename(cmd)} ${argv.map((s) => (s.includes(" ") ? JSON.stringify(s) : s)).join(" ")}`);
  const t0 = Date.now();
  const out = path.join(raw, `${name}.json`);
  fs.rmSync(out, { force: true });
  const env = {
    ...process.env,
    OMP_NUM_THREADS: String(args.threads),
    OPENBLAS_NUM_THREADS: String(args.threads),
    MKL_NUM_THREADS: String(args.threads),
    BENCH_THREADS: String(args.threads),
    TOKENIZERS_PARALLELISM: "false",
  };
  const r = spawnSync(cmd, [...argv, "--out", out], { stdio: ["ignore", "inherit", "inherit"], env, cwd: ROOT });
  if (r.status !== 0 || !fs.existsSync(out)) throw new BenchError(`${name} failed (exit ${r.status ?? r.signal}); see the output above`);
  const data = JSON.parse(fs.readFileSync(out, "utf8"));
  data.phase = { ...quiet, seconds: (Date.now() - t0) / 1000, busy_after: cpuBusy(1000) };
  fs.writeFileSync(out, JSON.stringify(data));
  log(`${name}: done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

// ---- statistics ------------------------------------------------------------------------------

interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
}

function stat(xs: readonly number[]): Stat | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return { median: s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2, min: s[0], max: s[s.length - 1], n: s.length };
}

interface TimedRaw {
  wall_s: number[];
  cpu_s: number[];
  others_cores?: (number | null)[];
}
interface E2eRaw {
  wall_s: number;
  cpu_s: number;
  others_cores?: number | null;
  unet_calls: number;
  step_s: number[];
  after_last_step_s: number | null;
  first_step_end_s: number | null;
  rss_after?: number;
}

/** Other processes' cores below which a call counts as uncontended (as in the workers). */
const QUIET = 0.15;
const isClean = (o: number | null | undefined) => o != null && o < QUIET;

/** Median / min / max over the calls after the first, uncontended ones only when there are any
 *  (else all of them, marked contended). */
function stageSummary(t: TimedRaw | undefined) {
  if (!t) return null;
  const idx = t.wall_s.length > 1 ? t.wall_s.map((_, i) => i).slice(1) : [0];
  const clean = idx.filter((i) => isClean(t.others_cores?.[i]));
  const use = clean.length ? clean : idx;
  const wall = use.map((i) => t.wall_s[i]);
  const util = use.reduce((a, i) => a + t.cpu_s[i], 0) / wall.reduce((a, b) => a + b, 0);
  return {
    cold_s: t.wall_s[0],
    ...stat(wall)!,
    n_calls: idx.length,
    n_uncontended: clean.length,
    cpu_cores: round(util, 2),
    contended: clean.length === 0,
  };
}

function e2eSummary(all: E2eRaw[] | undefined, steps: number) {
  if (!all || all.length === 0) return null;
  const cleanRuns = all.filter((r) => isClean(r.others_cores));
  const runs = cleanRuns.length ? cleanRuns : all;
  const wall = stat(runs.map((r) => r.wall_s))!;
  const stepS = stat(runs.flatMap((r) => r.step_s));
  const calls = runs[0].unet_calls;
  const decode = stat(runs.map((r) => r.after_last_step_s ?? NaN).filter(Number.isFinite));
  const perCall = stepS?.median ?? NaN;
  // PNDM (SD 1.5's scheduler) makes steps + 1 U-Net calls; the extrapolation keeps that offset.
  const calls20 = 20 + (calls - steps);
  const est20 = wall.median + (calls20 - calls) * perCall;
  const util = runs.reduce((a, r) => a + r.cpu_s, 0) / runs.reduce((a, r) => a + r.wall_s, 0);
  return {
    steps,
    unet_calls: calls,
    wall_s: wall,
    s_per_unet_call: stepS,
    after_last_step_s: decode,
    est_20_steps_s: Number.isFinite(est20) ? est20 : null,
    est_20_steps_unet_calls: calls20,
    n_runs: all.length,
    n_uncontended: cleanRuns.length,
    cpu_cores: round(util, 2),
    contended: cleanRuns.length === 0,
  };
}

function round(x: number, d = 3): number {
  const p = 10 ** d;
  return Math.round(x * p) / p;
}

const STAGES = ["text_encoder", "unet_step_cfg", "vae_decode", "vae_encode"] as const;

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function readRaw(raw: string, name: string): Json | null {
  const f = path.join(raw, `${name}.json`);
  return fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, "utf8")) : null;
}

function backendSummary(r: Json | null, args: Args) {
  if (!r) return null;
  const stages: Json = {};
  for (const s of STAGES) stages[s] = stageSummary(r.stages?.[s]);
  // The U-Net's figure pools every warm call: the isolated ones and those inside txt2img (the
  // loop adds a concat, the guidance mix and a scheduler step, milliseconds next to seconds).
  const iso = stages.unet_step_cfg;
  const e2eRuns = (r.e2e ?? []) as E2eRaw[];
  if (iso) {
    const t = r.stages.unet_step_cfg as TimedRaw;
    const isoIdx = t.wall_s.map((_, i) => i).slice(1);
    const isoClean = isoIdx.filter((i) => isClean(t.others_cores?.[i]));
    const loopClean = e2eRuns.filter((x) => isClean(x.others_cores));
    const pooled = [
      ...(isoClean.length ? isoClean : isoIdx).map((i) => t.wall_s[i]),
      ...(loopClean.length ? loopClean : e2eRuns).flatMap((x) => x.step_s),
    ];
    stages.unet_step_cfg = {
      ...iso,
      isolated: stat((isoClean.length ? isoClean : isoIdx).map((i) => t.wall_s[i])),
      ...stat(pooled)!,
      pooled_with_txt2img_loop: true,
      contended: isoClean.length === 0 && loopClean.length === 0,
    };
  }
  return {
    load_s: r.load_s,
    stages,
    e2e: e2eSummary(r.e2e, r.steps ?? args.steps),
    peak_rss_bytes: r.peak_rss,
    rss_after_load_bytes: r.rss_after_load ?? null,
    phase: r.phase ?? null,
    attention_processor: r.attention_processor ?? undefined,
  };
}

function machine(): Json {
  let model = os.cpus()[0]?.model ?? "unknown";
  try {
    const m = fs.readFileSync("/proc/cpuinfo", "utf8").match(/^model name\s*:\s*(.+)$/m);
    if (m) model = m[1];
  } catch {
    /* not Linux */
  }
  let flags = "";
  try {
    const m = fs.readFileSync("/proc/cpuinfo", "utf8").match(/^flags\s*:\s*(.+)$/m);
    if (m)
      flags = ["avx512f", "avx2", "fma", "avx512_vnni", "avx512_bf16", "amx_tile"].filter((f) => m[1].split(" ").includes(f)).join(" ");
  } catch {
    /* not Linux */
  }
  return {
    cpu_model: model,
    logical_cpus: os.cpus().length,
    simd: flags,
    ram_bytes: os.totalmem(),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
  };
}

// ---- report ----------------------------------------------------------------------------------

/** The ports phase (src/bench/ports.ts): per backend its verdict on the bundled set, its precision, and its times. */
function portsSummary(r: Json | null): Json | null {
  if (!r) return null;
  return {
    machine: r.machine ?? null,
    loadavg: r.loadavg ?? null,
    threads: r.threads,
    size: r.size,
    repeats: r.repeats,
    phase: r.phase ?? null,
    rows: (r.rows as Json[]).map((x) => ({
      key: x.key,
      label: x.label,
      size: x.size ?? r.size,
      command: x.command,
      runtime: x.runtime ?? null,
      error: x.error ?? null,
      verdict: x.verdict ?? null,
      unet_step_cfg: stageSummary(x.unet_step_cfg),
      unet_load_s: x.unet_step_cfg?.load_s ?? null,
      vae_decode: stageSummary(x.vae_decode),
      vae_load_s: x.vae_decode?.load_s ?? null,
      peak_rss_bytes: x.peak_rss_bytes ?? null,
    })),
  };
}

function buildResults(args: Args, raw: string, meta: Json): Json {
  const ours = readRaw(raw, "ours");
  const torch = readRaw(raw, "torch");
  const ort = readRaw(raw, "ort");
  const low = readRaw(raw, "lowmem");
  const leakRaw = readRaw(raw, "leak");
  const flops = readRaw(raw, "flops");
  const b = { ours: backendSummary(ours, args), pytorch: backendSummary(torch, args), python_ort: backendSummary(ort, args) };

  const ratio = (a: number | undefined | null, c: number | undefined | null) => (a && c ? round(a / c, 3) : null);
  const ratios: Json = {};
  for (const [key, other] of [
    ["ours_over_pytorch", b.pytorch],
    ["ours_over_python_ort", b.python_ort],
  ] as const) {
    if (!b.ours || !other) continue;
    const r: Json = {};
    for (const s of STAGES) r[s] = ratio(b.ours.stages[s]?.median, other.stages[s]?.median);
    r.e2e_wall = ratio(b.ours.e2e?.wall_s.median, other.e2e?.wall_s.median);
    r.s_per_unet_call = ratio(b.ours.e2e?.s_per_unet_call?.median, other.e2e?.s_per_unet_call?.median);
    r.est_20_steps = ratio(b.ours.e2e?.est_20_steps_s, other.e2e?.est_20_steps_s);
    r.peak_rss = ratio(b.ours.peak_rss_bytes, other.peak_rss_bytes);
    r.load = ratio(b.ours.load_s, other.load_s);
    ratios[key] = r;
  }

  let efficiency: Json | null = null;
  if (flops?.unet && flops?.peak) {
    const peak = flops.peak.peak_flops_per_s as number;
    efficiency = { unet_flops_per_step_cfg: flops.unet.flops, peak_flops_per_s: peak, peak_source: flops.peak.peak_source };
    for (const [k, v] of Object.entries(b)) {
      const s = v?.stages.unet_step_cfg?.median;
      if (s) efficiency[k] = { achieved_flops_per_s: flops.unet.flops / s, share_of_peak: round(flops.unet.flops / s / peak, 3) };
    }
  }

  const leak = leakRaw?.leak as { generation: number; steps: number; wall_s: number; rss_after: number }[] | undefined;
  const memory: Json = {
    ours_peak_rss_bytes: ours?.peak_rss ?? null,
    ours_rss_after_each_txt2img_bytes: (ours?.e2e as E2eRaw[] | undefined)?.map((r) => r.rss_after ?? null) ?? null,
    ours_rss_after_load_bytes: ours?.rss_after_load ?? null,
    ours_low_memory_peak_rss_bytes: low?.peak_rss ?? null,
    ours_low_memory_txt2img_s: low?.e2e?.[0]?.wall_s ?? null,
    ours_low_memory_steps: low?.steps ?? null,
    pytorch_peak_rss_bytes: torch?.peak_rss ?? null,
    python_ort_peak_rss_bytes: ort?.peak_rss ?? null,
    leak_check: leak
      ? {
          size: leakRaw?.size ?? null,
          peak_rss_bytes: leakRaw?.peak_rss ?? null,
          generations: leak,
          rss_growth_gen2_to_last_bytes: leak.length > 1 ? leak[leak.length - 1].rss_after - leak[1].rss_after : null,
          rss_growth_gen1_to_last_bytes: leak.length > 0 ? leak[leak.length - 1].rss_after - leak[0].rss_after : null,
        }
      : null,
  };

  const options: Json[] = [];
  for (const f of fs.existsSync(raw)
    ? fs
        .readdirSync(raw)
        .filter((n) => n.startsWith("options-"))
        .sort()
    : []) {
    const o = JSON.parse(fs.readFileSync(path.join(raw, f), "utf8"));
    options.push({
      name: f.replace(/^options-|\.json$/g, ""),
      measured: fs.statSync(path.join(raw, f)).mtime.toISOString(),
      session_options: o.session_options,
      load_s: o.load_s,
      unet: stageSummary(o.stages?.unet_step_cfg),
      vae_decode: stageSummary(o.stages?.vae_decode),
      peak_rss_bytes: o.peak_rss,
      rss_end_bytes: o.rss_end,
    });
  }

  const variants: Json[] = [];
  for (const [name] of VARIANTS) {
    const o = readRaw(raw, `variant-${name}`);
    if (!o) continue;
    const file = o.unet_file as string | undefined;
    const bytes = (f: string) => (fs.existsSync(f) ? fs.statSync(f).size : 0);
    variants.push({
      name,
      measured: fs.statSync(path.join(raw, `variant-${name}.json`)).mtime.toISOString(),
      session_options: o.session_options,
      unet_file_bytes: file ? bytes(file) + bytes(path.join(path.dirname(file), "model.onnx_data")) : null,
      load_s: o.load_s,
      unet: stageSummary(o.stages?.unet_step_cfg),
      peak_rss_bytes: o.peak_rss,
      rss_after_load_bytes: o.rss_after_load,
      busy_before: o.phase?.busy_before ?? null,
    });
  }

  return {
    generated: new Date().toISOString(),
    machine: meta.machine,
    config: {
      threads: args.threads,
      width: args.size,
      height: args.size,
      steps: args.steps,
      repeats: args.repeats,
      stage_repeats: args.stageRepeats,
      leak_generations: args.leakGens,
      leak_steps: args.leakSteps,
      leak_size: args.leakSize,
      prompt: "a photograph of an astronaut riding a horse",
      guidance_scale: 7.5,
      scheduler: "PNDMScheduler (SD 1.5's)",
      model: "SD 1.5 architecture, random weights (scripts/make_random_sd15.py), fp32",
      ours_session_options: ours?.session_options ?? null,
    },
    versions: {
      node: ours?.node ?? process.version,
      onnxruntime_node: ours?.onnxruntime_node ?? null,
      ...(torch?.versions ?? ort?.versions ?? {}),
    },
    backends: b,
    ratios,
    flops: flops
      ? {
          unet_step_cfg: flops.unet?.flops,
          unet_by_op: flops.unet?.by_op,
          unet_attention_matmul: flops.unet?.attention_matmul_flops,
          vae_decode: flops.vae_decoder?.flops,
          vae_encode: flops.vae_encoder?.flops,
          text_encoder_batch2: flops.text_encoder?.flops,
          unresolved_nodes: (flops.unet?.unresolved_nodes?.length ?? 0) + (flops.vae_decoder?.unresolved_nodes?.length ?? 0),
          shapes_from_onnx_inference: flops.unet?.shapes_from_onnx_inference,
          shapes_filled_by_ort_symbolic_inference: flops.unet?.shapes_filled_by_ort_symbolic_inference,
          peak_sgemm: flops.peak ?? null,
        }
      : null,
    unet_efficiency: efficiency,
    memory,
    session_options_sweep: options,
    precision_variants: variants,
    phases: Object.fromEntries(PHASES.flatMap((p) => (EXTRA_PHASES.includes(p) ? [] : [[p, readRaw(raw, p)?.phase ?? null]]))),
    ports: portsSummary(readRaw(raw, "ports")),
    wall_s: meta.wall_s ?? null,
  };
}

const gb = (x: number | null | undefined) => (x == null ? "–" : `${(x / 1e9).toFixed(2)} GB`);
const sec = (x: number | null | undefined, d = 2) => (x == null || !Number.isFinite(x) ? "–" : `${x.toFixed(d)} s`);
const rt = (x: number | null | undefined) => (x == null ? "–" : `${x.toFixed(2)}×`);
const spread = (s: Json | null | undefined, d = 2) =>
  s ? `${sec(s.median, d)} (${s.min.toFixed(d)}–${s.max.toFixed(d)}, n=${s.n})${s.contended ? " ⚠" : ""}` : "–";
const SIZE_LABELS = (c: Json): Record<string, string> => ({
  text_encoder: "text encoder (batch 2)",
  unet_step_cfg: `U-Net, one step with CFG (batch 2, ${c.height / 8}×${c.width / 8} latents)`,
  vae_decode: `VAE decode (1×4×${c.height / 8}×${c.width / 8})`,
  vae_encode: `VAE encode (1×3×${c.height}×${c.width})`,
});

function renderMarkdown(r: Json): string {
  const L: string[] = [];
  const m = r.machine;
  const c = r.config;
  const v = r.versions;
  L.push(`# Benchmark: SD 1.5 at ${c.width}×${c.height} on the CPU`, "");
  L.push("Generated by `npm run bench` (src/bench/run.ts); raw numbers in `bench/results.json`. Do not edit by hand —");
  L.push("the **Notes** section at the end is kept from the previous file.", "");
  L.push(
    `- **Machine:** ${m.cpu_model}, ${m.logical_cpus} logical CPUs (${m.simd}), ${(m.ram_bytes / 2 ** 30).toFixed(1)} GiB RAM, ${m.os}`,
  );
  L.push(
    `- **Threads:** ${c.threads} for every backend (ORT intra-op ${c.threads}, inter-op 1, sequential; torch.set_num_threads(${c.threads}))`,
  );
  L.push(`- **Model:** ${c.model}; ${c.width}×${c.height}; ${c.scheduler}; guidance ${c.guidance_scale}`);
  L.push(
    `- **Versions:** Node ${v.node}, onnxruntime-node ${v.onnxruntime_node}; Python ${v.python}, onnxruntime ${v.onnxruntime}, torch ${v.torch}, diffusers ${v.diffusers}, transformers ${v.transformers}, onnx ${v.onnx}, numpy ${v.numpy}`,
  );
  L.push(
    `- **Ours' session options:** ${JSON.stringify(c.ours_session_options)} (chosen by the sweep below); (b) runs ORT's defaults (graph optimisation all, memory pattern on, arena on), which is sweep setting a.`,
  );
  L.push(`- **Generated:** ${r.generated}; the whole run took ${r.wall_s ? (r.wall_s / 60).toFixed(1) + " min" : "–"}`);
  L.push("");
  L.push('Times are medians over the calls after the first (min–max, n); the first ("cold") call is listed apart. The U-Net row');
  L.push("pools the isolated calls with the U-Net calls inside the txt2img runs below (same shapes; the loop adds milliseconds).");
  L.push(`Other processes share this machine: each call records the CPU time the rest of the machine used meanwhile, and only`);
  L.push(`calls during which that stayed under ${QUIET} cores count (a stage gets up to 2 extra calls to find one). ⚠ marks a figure`);
  L.push("with no uncontended call, computed from contended ones: read it as an upper bound.");
  L.push("");
  const B = r.backends;
  const names: [string, string][] = [
    ["ours", "ours (Node, onnxruntime-node)"],
    ["pytorch", "(a) diffusers, PyTorch fp32"],
    ["python_ort", "(b) diffusers ONNX pipeline, Python ORT"],
  ];
  L.push("## Per stage", "");
  L.push(`| stage | ${names.map((n) => n[1]).join(" | ")} | ours/(a) | ours/(b) |`);
  L.push(`|---|${names.map(() => "---").join("|")}|---|---|`);
  const label = SIZE_LABELS(c);
  for (const s of STAGES) {
    L.push(
      `| ${label[s]} | ${names.map(([k]) => spread(B[k]?.stages?.[s], s === "text_encoder" ? 3 : 2)).join(" | ")} | ${rt(r.ratios.ours_over_pytorch?.[s])} | ${rt(r.ratios.ours_over_python_ort?.[s])} |`,
    );
  }
  L.push(`| U-Net, isolated calls only | ${names.map(([k]) => spread(B[k]?.stages?.unet_step_cfg?.isolated)).join(" | ")} | | |`);
  L.push(`| U-Net, cold first call | ${names.map(([k]) => sec(B[k]?.stages?.unet_step_cfg?.cold_s)).join(" | ")} | | |`);
  L.push(
    `| load (sessions / weights) | ${names.map(([k]) => sec(B[k]?.load_s, 1)).join(" | ")} | ${rt(r.ratios.ours_over_pytorch?.load)} | ${rt(r.ratios.ours_over_python_ort?.load)} |`,
  );
  L.push("");
  L.push("## End to end (txt2img)", "");
  const e = (k: string) => B[k]?.e2e;
  L.push(`| | ${names.map((n) => n[1]).join(" | ")} | ours/(a) | ours/(b) |`);
  L.push(`|---|${names.map(() => "---").join("|")}|---|---|`);
  L.push(
    `| ${c.steps} steps (${e("ours")?.unet_calls ?? "?"} U-Net calls), wall | ${names.map(([k]) => spread(e(k)?.wall_s, 1)).join(" | ")} | ${rt(r.ratios.ours_over_pytorch?.e2e_wall)} | ${rt(r.ratios.ours_over_python_ort?.e2e_wall)} |`,
  );
  L.push(
    `| s per U-Net call in the loop | ${names.map(([k]) => spread(e(k)?.s_per_unet_call)).join(" | ")} | ${rt(r.ratios.ours_over_pytorch?.s_per_unet_call)} | ${rt(r.ratios.ours_over_python_ort?.s_per_unet_call)} |`,
  );
  L.push(`| decode + postprocess after the last step | ${names.map(([k]) => sec(e(k)?.after_last_step_s?.median)).join(" | ")} | | |`);
  L.push(
    `| 20 steps (${e("ours")?.est_20_steps_unet_calls ?? "?"} U-Net calls), extrapolated | ${names.map(([k]) => sec(e(k)?.est_20_steps_s, 0)).join(" | ")} | ${rt(r.ratios.ours_over_pytorch?.est_20_steps)} | ${rt(r.ratios.ours_over_python_ort?.est_20_steps)} |`,
  );
  L.push(
    `| uncontended runs / runs; CPU cores used | ${names.map(([k]) => (e(k) ? `${e(k).n_uncontended}/${e(k).n_runs}; ${e(k).cpu_cores}${e(k).contended ? " ⚠" : ""}` : "–")).join(" | ")} | | |`,
  );
  L.push("");
  L.push("The extrapolation: the measured run plus (calls at 20 steps − calls measured) × the median s per U-Net call.");
  L.push("SD 1.5's PNDM (PLMS) makes one more U-Net call than steps.");
  L.push("");
  const M = r.memory;
  L.push("## Memory", "");
  L.push(`| | ${names.map((n) => n[1]).join(" | ")} |`);
  L.push(`|---|${names.map(() => "---").join("|")}|`);
  L.push(
    `| peak RSS of the process | ${gb(M.ours_peak_rss_bytes)} | ${gb(M.pytorch_peak_rss_bytes)} | ${gb(M.python_ort_peak_rss_bytes)} |`,
  );
  L.push(`| RSS after load | ${names.map(([k]) => gb(B[k]?.rss_after_load_bytes)).join(" | ")} |`);
  L.push("");
  L.push(
    `- Ours, low-memory mode (\`lowMemory: true\`, each component loaded only while used): peak RSS **${gb(M.ours_low_memory_peak_rss_bytes)}**, one txt2img of ${M.ours_low_memory_steps} steps in ${sec(M.ours_low_memory_txt2img_s, 1)} (session creation included).`,
  );
  if (M.leak_check) {
    const g = M.leak_check.generations as Json[];
    L.push(
      `- Leak check, ${g.length} txt2img generations of ${g[0]?.steps} step(s) at ${M.leak_check.size}×${M.leak_check.size} in one process, RSS after each (after a full GC): ${g.map((x) => (x.rss_after / 1e9).toFixed(2)).join(", ")} GB; growth from generation 2 to ${g.length}: **${((M.leak_check.rss_growth_gen2_to_last_bytes ?? 0) / 1e6).toFixed(0)} MB** (peak ${gb(M.leak_check.peak_rss_bytes)}).`,
    );
  }
  if (M.ours_rss_after_each_txt2img_bytes) {
    L.push(
      `- Ours at ${c.width}×${c.height}, RSS after each timed txt2img in the main process: ${(M.ours_rss_after_each_txt2img_bytes as number[]).map((x) => (x / 1e9).toFixed(2)).join(", ")} GB.`,
    );
  }
  L.push("");
  const F = r.flops;
  if (F) {
    L.push("## U-Net arithmetic and the machine's peak", "");
    L.push(
      `- U-Net FLOPs per step with CFG (batch 2, ${c.height / 8}×${c.width / 8} latents), counted from the ONNX graph (Conv, MatMul, Gemm; 2 FLOPs per multiply-add): **${(F.unet_step_cfg / 1e12).toFixed(3)} TFLOP** (Conv ${(F.unet_by_op.Conv / 1e12).toFixed(3)}, MatMul ${((F.unet_by_op.MatMul ?? 0) / 1e12).toFixed(3)} of which attention Q·Kᵀ and P·V ${(F.unet_attention_matmul / 1e12).toFixed(3)}, Gemm ${((F.unet_by_op.Gemm ?? 0) / 1e9).toFixed(2)} G). Shapes: onnx.shape_inference resolved ${F.shapes_from_onnx_inference}, ORT's symbolic shape inference filled ${F.shapes_filled_by_ort_symbolic_inference} more; ${F.unresolved_nodes} node(s) unresolved.`,
    );
    L.push(
      `- VAE decode ${(F.vae_decode / 1e12).toFixed(3)} TFLOP, VAE encode ${(F.vae_encode / 1e12).toFixed(3)} TFLOP, text encoder (batch 2) ${(F.text_encoder_batch2 / 1e9).toFixed(1)} GFLOP.`,
    );
    if (F.peak_sgemm) {
      const p = F.peak_sgemm.flops_per_s;
      const fmt = (o: Json) =>
        Object.entries(o)
          .map(([n, x]) => `${n}²: ${typeof x === "number" ? (x / 1e9).toFixed(1) : x}`)
          .join(", ");
      L.push(
        `- Measured peak float32 GEMM on ${F.peak_sgemm.threads} threads (GFLOP/s): ORT MatMul ${fmt(p.onnxruntime)}; numpy ${fmt(p.numpy)}; torch.mm ${fmt(p.torch)}. Peak taken: **${(F.peak_sgemm.peak_flops_per_s / 1e9).toFixed(1)} GFLOP/s** (${F.peak_sgemm.peak_source}).`,
      );
    }
    const E = r.unet_efficiency;
    if (E) {
      L.push(
        `- Share of that peak one U-Net step reaches: ${names
          .filter(([k]) => E[k])
          .map(([k, n]) => `${n} ${(E[k].achieved_flops_per_s / 1e9).toFixed(1)} GFLOP/s = **${(E[k].share_of_peak * 100).toFixed(0)}%**`)
          .join("; ")}.`,
      );
    }
    L.push("");
  }
  if (r.session_options_sweep?.length) {
    L.push("## ORT session options (ours), chosen by measurement", "");
    L.push("One process per setting: load, U-Net ×3, VAE decode ×2 (medians over the calls after the first).", "");
    L.push("| setting | load | U-Net cold | U-Net warm | VAE decode cold | VAE decode warm | peak RSS |");
    L.push("|---|---|---|---|---|---|---|");
    for (const o of r.session_options_sweep) {
      L.push(
        `| ${o.name} (${o.session_options.graphOptimizationLevel}, memPattern ${o.session_options.enableMemPattern ? "on" : "off"}, arena ${o.session_options.enableCpuMemArena ? "on" : "off"}) | ${sec(o.load_s, 1)} | ${sec(o.unet?.cold_s)} | ${spread(o.unet)} | ${sec(o.vae_decode?.cold_s)} | ${spread(o.vae_decode)} | ${gb(o.peak_rss_bytes)} |`,
      );
    }
    L.push("");
  }
  if (r.ports) L.push(...portsMarkdown(r.ports));
  const P = r.phases;
  L.push("## Contention", "");
  L.push("CPU busy (all cores, other processes included) just before each phase, after waiting for it to settle:");
  L.push(
    Object.entries(P)
      .filter(([, x]) => x)
      .map(
        ([k, x]) =>
          `${k} ${(x as Json).busy_before == null ? "?" : ((x as Json).busy_before * 100).toFixed(0) + "%"} (waited ${((x as Json).waited_s ?? 0).toFixed(0)} s)`,
      )
      .join("; ") + ".",
  );
  L.push("");
  L.push(...renderRuntimes(r));
  return L.join("\n");
}

function portsMarkdown(p: Json): string[] {
  const L: string[] = [];
  const m = p.machine ?? {};
  L.push("## Ports: speed beside fidelity (`--only ports`)", "");
  L.push(
    `Measured in one run (src/bench/ports.ts) on ${m.cpu_model ?? "?"}, ${m.logical_cpus ?? "?"} logical CPUs (${m.simd ?? "?"}), ${p.threads} threads each; load average ${p.loadavg ? p.loadavg.map((x: number) => x.toFixed(2)).join(" / ") : "?"} (1 / 5 / 15 min) when the phase began, on a machine shared with other work: read the times as upper bounds. ${p.phase?.seconds ? `The phase took ${(p.phase.seconds / 60).toFixed(1)} min.` : ""}`,
  );
  L.push(
    `Times at ${p.size}×${p.size}: ${p.repeats > 1 ? `the median of the calls after the first (min–max, n), ${p.repeats} calls per stage` : "one call per stage, so the figure is that first (cold) call"}; a port's time includes the protocol (safetensors files in a temporary folder)${(p.rows as Json[]).some((x) => x.key === "onnxruntime-port") ? ": compare onnxruntime through the port with ort-node in process" : ""}. ⚠: no call without contention.`,
  );
  const cases = (p.rows as Json[]).find((x) => x.verdict)?.verdict?.cases as string[] | null | undefined;
  const which =
    cases === undefined ? "" : cases === null ? " (every case)" : ` (cases ${cases.map((c) => `\`${c}\``).join(", ")}: every model stage)`;
  const set = (p.rows as Json[]).find((x) => x.verdict?.set)?.verdict?.set ?? "fixtures/references/tiny-sd/cpu";
  L.push(
    `The verdict is \`sd-harness conformance\` on the **bundled tiny set** (${set}${which}; not on SD 1.5, whose random weights have no reference set) through the same runtime or adapter, against the profile named; the precision is what the adapter reports it compiled or loaded in.`,
    "",
  );
  L.push(
    "| backend | precision (as reported) | U-Net, one step with CFG | VAE decode | load U-Net / VAE | peak RSS | verdict on the bundled set |",
  );
  L.push("|---|---|---|---|---|---|---|");
  for (const x of p.rows as Json[]) {
    const v = x.verdict;
    const counts = v
      ? Object.entries(v.counts as Record<string, number>)
          .filter(([, n]) => n > 0)
          .map(([k, n]) => `${n} ${k}`)
          .join(", ")
      : "";
    const verdict = v ? `**${String(v.verdict).toUpperCase()}** (${v.profile}; ${counts}${v.error ? `; ${v.error}` : ""})` : "–";
    const ep = x.runtime?.executionProvider as string | undefined;
    // ort-node names no precision: it runs the fp32 export as it is
    const precision =
      ep === undefined
        ? x.error
          ? `error: ${x.error}`
          : "–"
        : /precision/.test(ep)
          ? ep
          : `${x.runtime.package} ${x.runtime.version}, ${ep}, precision f32 (the fp32 export)`;
    L.push(
      `| ${x.label}${x.size !== p.size ? ` **at ${x.size}×${x.size}**` : ""} | ${precision} | ${spread(x.unet_step_cfg)} | ${spread(x.vae_decode)} | ${sec(x.unet_load_s, 1)} / ${sec(x.vae_load_s, 1)} | ${gb(x.peak_rss_bytes)} | ${verdict} |`,
    );
  }
  L.push(
    "",
    "Commands: " +
      (p.rows as Json[])
        .filter((x, i, all) => x.command && all.findIndex((y) => y.command === x.command) === i)
        .map(
          (x) =>
            `${x.key}: \`${String(x.command)
              .split(os.homedir())
              .join("~")
              .replace(/'[^']*\/ports\//g, "'ports/")
              .replace(/'[^']*\/\.venv\//g, "'.venv/")}\``,
        )
        .join("; ") +
      ".",
    "",
  );
  return L;
}

// ---- main ------------------------------------------------------------------------------------

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const t0 = Date.now();
  const py = python();
  const raw = path.join(cacheRoot(), `bench-raw-${args.size}`);
  fs.mkdirSync(raw, { recursive: true });
  const onnxDir = path.join(cacheRoot(), "onnx");
  const ptDir = path.join(cacheRoot(), "pytorch");
  const node = process.execPath;
  const ours = path.join(__dirname, "ours.js");
  const common = ["--threads", String(args.threads), "--size", String(args.size)];
  const runCfg = ["--steps", String(args.steps), "--repeats", String(args.repeats), "--stage-repeats", String(args.stageRepeats)];

  if (args.runtime)
    return addRuntime(args, raw, [
      node,
      "--expose-gc",
      ours,
      "--mode",
      "runtime",
      "--runtime",
      args.runtime,
      "--model",
      onnxDir,
      ...common,
      "--stage-repeats",
      String(args.stageRepeats),
    ]);

  if (!args.reportOnly) {
    ensureModel(py);
    const p = args.only;
    if (p.has("flops"))
      runPhase(
        args,
        "flops",
        py,
        [
          path.join(ROOT, "scripts", "bench_flops.py"),
          onnxDir,
          "--threads",
          String(args.threads),
          "--height",
          String(args.size),
          "--width",
          String(args.size),
        ],
        raw,
      );
    if (p.has("ours"))
      runPhase(args, "ours", node, ["--expose-gc", ours, "--mode", "main", "--model", onnxDir, ...common, ...runCfg, ...OURS_SESSION], raw);
    if (p.has("torch"))
      runPhase(
        args,
        "torch",
        py,
        [path.join(ROOT, "scripts", "bench_python.py"), "--backend", "torch", "--model", ptDir, ...common, ...runCfg],
        raw,
      );
    if (p.has("ort"))
      runPhase(
        args,
        "ort",
        py,
        [path.join(ROOT, "scripts", "bench_python.py"), "--backend", "ort", "--model", onnxDir, ...common, ...runCfg],
        raw,
      );
    if (p.has("leak"))
      runPhase(
        args,
        "leak",
        node,
        [
          "--expose-gc",
          ours,
          "--mode",
          "leak",
          "--model",
          onnxDir,
          "--threads",
          String(args.threads),
          "--size",
          String(args.leakSize),
          "--leak-gens",
          String(args.leakGens),
          "--leak-steps",
          String(args.leakSteps),
          ...OURS_SESSION,
        ],
        raw,
      );
    if (p.has("lowmem"))
      runPhase(
        args,
        "lowmem",
        node,
        ["--expose-gc", ours, "--mode", "lowmem", "--model", onnxDir, ...common, "--steps", String(args.leakSteps), ...OURS_SESSION],
        raw,
      );
    if (p.has("options")) {
      const settings: [string, string[]][] = [
        ["a-default", ["--gol", "all", "--mem-pattern", "1", "--arena", "1"]],
        ["b-extended", ["--gol", "extended", "--mem-pattern", "1", "--arena", "1"]],
        ["c-no-mem-pattern", ["--gol", "all", "--mem-pattern", "0", "--arena", "1"]],
        ["d-no-arena", ["--gol", "all", "--mem-pattern", "1", "--arena", "0"]],
        ["e-no-mem-pattern-no-arena", ["--gol", "all", "--mem-pattern", "0", "--arena", "0"]],
        ["f-extended-no-mem-pattern-no-arena", ["--gol", "extended", "--mem-pattern", "0", "--arena", "0"]],
      ];
      for (const [name, flags] of settings)
        if (!args.settings || args.settings.has(name[0]))
          runPhase(args, `options-${name}`, node, ["--expose-gc", ours, "--mode", "options", "--model", onnxDir, ...common, ...flags], raw);
    }
    if (p.has("ports"))
      runPhase(
        args,
        "ports",
        node,
        [
          path.join(__dirname, "ports.js"),
          "--model",
          onnxDir,
          "--pytorch",
          ptDir,
          ...common,
          "--repeats",
          String(args.stageRepeats),
          ...(args.portBackends ? ["--backends", args.portBackends] : []),
        ],
        raw,
      );
    if (p.has("variants")) {
      for (const [name, dir] of VARIANTS) {
        const d = path.join(cacheRoot(), dir);
        if (fs.existsSync(path.join(d, "unet", "model.onnx")))
          runPhase(args, `variant-${name}`, node, ["--expose-gc", ours, "--mode", "unet", "--model", d, ...common, ...OURS_SESSION], raw);
        else log(`variants: ${d} not found (scripts/quantize.py makes it); skipped`);
      }
    }
  }

  // wall_s is the default run's; a run of only non-default phases (options, variants) keeps it
  const partial = ![...args.only].some((p) => DEFAULT_PHASES.includes(p));
  const meta = { machine: machine(), wall_s: args.reportOnly || partial ? readPrevWall(args) : (Date.now() - t0) / 1000 };
  const built = buildResults(args, raw, meta);
  // a run of only the extra phases on a machine whose raw files of the others are gone keeps the previous results' other sections
  const prev = partial && !readRaw(raw, "ours") ? readPrev(args) : null;
  const results = prev
    ? {
        ...prev,
        ...(args.only.has("ports") ? { ports: built.ports } : {}),
        ...(args.only.has("options") ? { session_options_sweep: built.session_options_sweep } : {}),
        ...(args.only.has("variants") ? { precision_variants: built.precision_variants } : {}),
      }
    : built;
  fs.mkdirSync(args.outDir, { recursive: true });
  fs.writeFileSync(path.join(args.outDir, "results.json"), JSON.stringify(results, null, 1) + "\n");
  const mdFile = path.join(args.outDir, "RESULTS.md");
  fs.writeFileSync(mdFile, renderMarkdown(results) + keptNotes(mdFile));
  log(
    `wrote ${path.relative(process.cwd(), path.join(args.outDir, "results.json"))} and ${path.relative(process.cwd(), mdFile)} (${((Date.now() - t0) / 60000).toFixed(1)} min)`,
  );
}

function readPrev(args: Args): Json | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(args.outDir, "results.json"), "utf8")) as Json;
  } catch {
    return null;
  }
}

/** --runtime: one phase, its figures merged into the previous results.json under runtimes[NAME], RESULTS.md re-rendered. */
function addRuntime(args: Args, raw: string, [cmd, ...argv]: string[]): void {
  const name = args.runtime!;
  const file = path.join(args.outDir, "results.json");
  if (!fs.existsSync(file)) throw new BenchError(`${file} not found: --runtime adds rows to an earlier full run's results`);
  runPhase(args, `runtime-${name}`, cmd, argv, raw);
  const data = JSON.parse(fs.readFileSync(path.join(raw, `runtime-${name}.json`), "utf8"));
  const results = JSON.parse(fs.readFileSync(file, "utf8"));
  results.runtimes = { ...results.runtimes, [name]: { ...data, machine: machine(), measured_at: new Date().toISOString() } };
  fs.writeFileSync(file, JSON.stringify(results, null, 1) + "\n");
  const mdFile = path.join(args.outDir, "RESULTS.md");
  fs.writeFileSync(mdFile, renderMarkdown(results) + keptNotes(mdFile));
  log(`added runtime ${name} to ${path.relative(process.cwd(), file)} and ${path.relative(process.cwd(), mdFile)}`);
}

/** The "Other runtimes" section: each --runtime run's components, or the reason one was not run. */
function renderRuntimes(r: Json): string[] {
  if (!r.runtimes) return [];
  const L = ["## Other runtimes (`npm run bench -- --runtime NAME`)", ""];
  L.push(
    "Each component alone on the runtime, one session at a time: load, the first (cold) call, the median of the others. Batch 2 for the text encoder and the U-Net (CFG), 1 for the VAE.",
    "",
  );
  L.push("| runtime | device | component | input | load | cold call | later calls (median, n) | other processes' cores (max) |");
  L.push("|---|---|---|---|---|---|---|---|");
  const shapes: Record<string, (s: number) => string> = {
    text_encoder: () => "2×77 ids",
    vae_decoder: (s) => `1×4×${s / 8}×${s / 8}`,
    vae_encoder: (s) => `1×3×${s}×${s}`,
    unet: (s) => `2×4×${s / 8}×${s / 8}`,
  };
  for (const [name, x] of Object.entries(r.runtimes as Json)) {
    for (const [kind, st] of Object.entries(x.stages as Json)) {
      const later = st.wall_s.slice(1);
      const others = st.others_cores.filter((o: number | null) => o !== null);
      L.push(
        `| ${name} | ${x.runtime.device} | ${kind} | ${shapes[kind]?.(x.size) ?? ""} | ${st.load_s.toFixed(1)} s | ${st.wall_s[0].toFixed(2)} s | ${later.length ? `${stat(later)!.median.toFixed(2)} s (n=${later.length})` : "–"} | ${others.length ? Math.max(...others).toFixed(2) : "?"} |`,
      );
    }
    for (const [kind, why] of Object.entries((x.skipped ?? {}) as Json))
      L.push(`| ${name} | ${x.runtime.device} | ${kind} | | not run: ${why} | | | |`);
  }
  L.push("");
  return L;
}

function readPrevWall(args: Args): number | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(args.outDir, "results.json"), "utf8")).wall_s ?? null;
  } catch {
    return null;
  }
}

/** The hand-written "## Notes" section of the previous RESULTS.md, carried over. */
function keptNotes(mdFile: string): string {
  try {
    const old = fs.readFileSync(mdFile, "utf8");
    const i = old.indexOf("\n## Notes");
    return i >= 0 ? old.slice(i) : "\n## Notes\n\n(none yet)\n";
  } catch {
    return "\n## Notes\n\n(none yet)\n";
  }
}

try {
  main();
} catch (e) {
  if (e instanceof BenchError) {
    process.stderr.write(`bench: ${e.message}\n`);
    process.exit(2);
  }
  throw e;
}
