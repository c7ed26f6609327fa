/**
 * The benchmark's worker for our pipeline: one process per measurement, so each has its own
 * peak RSS. Spawned by bench/run (src/bench/run.ts); writes one JSON object to --out.
 *
 *   node --expose-gc dist/bench/ours.js --mode main    --model DIR [--threads 2 --steps 3 ...]
 *   node --expose-gc dist/bench/ours.js --mode leak    --model DIR --size 256 --leak-gens 10 --leak-steps 1
 *   node --expose-gc dist/bench/ours.js --mode lowmem  --model DIR
 *   node --expose-gc dist/bench/ours.js --mode options --model DIR --gol extended --mem-pattern 0 --arena 1
 *   node --expose-gc dist/bench/ours.js --mode unet    --model DIR   (a precision variant's folder)
 *   node --expose-gc dist/bench/ours.js --mode runtime --model DIR --runtime ort-wasm
 *
 * main:    load; stages (text encoder batch 2, one U-Net call with CFG batch 2, VAE decode, VAE
 *          encode; the first call of each reported apart as the cold one); txt2img REPEATS times
 *          with STEPS steps, a timestamp per U-Net call, the RSS after each (after a full GC).
 * leak:    LEAK_GENS txt2img generations of LEAK_STEPS steps in one process, the RSS after each
 *          (after a full GC): the leak check.
 * lowmem:  `lowMemory: true` (each component loaded only while used): one txt2img; its peak RSS.
 * options: the given session options: load, U-Net x3, VAE decode x2; times and peak RSS.
 * unet:    the U-Net session alone (no text encoder / VAE: embeddings are random normals): load,
 *          U-Net with CFG x3 (1 cold + 2 warm); times and peak RSS. For precision variants.
 * runtime: each component on --runtime NAME (src/runtime/), one at a time, released before the
 *          next: load, then STAGE_REPEATS calls (1 cold). onnxruntime-web's U-Net is not loaded:
 *          SD 1.5's 3.4 GB of weights and its working set do not fit WebAssembly's 4 GiB.
 * The workload is scripts/bench_python.py's, call for call.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import yargs from "yargs";
import { StableDiffusionPipeline, PipelineOptions } from "../pipeline/pipeline";
import { F32, f32 } from "../tensor/tensor";
import { packageVersion } from "../runtime/package-version";
import { createRuntime, RUNTIMES } from "../runtime/index";
import type { RuntimeTensor } from "../runtime/types";
import type { ComponentKind } from "../pipeline/onnx-model";

const PROMPT = "a photograph of an astronaut riding a horse";

type Mode = "main" | "leak" | "lowmem" | "options" | "unet" | "runtime";

interface Args {
  mode: Mode;
  model: string;
  out: string | null;
  threads: number;
  size: number;
  steps: number;
  repeats: number;
  stageRepeats: number;
  textRepeats: number;
  leakGens: number;
  leakSteps: number;
  extra: number;
  gol: "all" | "extended" | "basic" | "disabled";
  memPattern: boolean;
  arena: boolean;
  runtime: string;
}

const MODES: readonly Mode[] = ["main", "leak", "lowmem", "options", "unet", "runtime"];
const GOLS: readonly Args["gol"][] = ["all", "extended", "basic", "disabled"];

function parseArgs(argv: string[]): Args {
  const a = yargs(argv)
    .scriptName("ours")
    .usage(
      "node --expose-gc dist/bench/ours.js --mode MODE --model DIR [options]\n\nThe benchmark's worker for our pipeline (spawned by src/bench/run.ts); writes one JSON object to --out.",
    )
    .option("mode", { choices: MODES, default: "main" as Mode, describe: "what to measure (see the file comment)" })
    .option("model", { type: "string", demandOption: true, describe: "ONNX model folder" })
    .option("out", { type: "string", describe: "the JSON result (default: stdout)" })
    .option("threads", { type: "number", default: 2, describe: "ONNX Runtime intra-op threads" })
    .option("size", { type: "number", default: 512, describe: "image width and height" })
    .option("steps", { type: "number", default: 3, describe: "denoising steps per txt2img" })
    .option("repeats", { type: "number", default: 3, describe: "txt2img runs (main)" })
    .option("stage-repeats", { type: "number", default: 3, describe: "calls per stage (main)" })
    .option("text-repeats", { type: "number", default: 6, describe: "text encoder calls (main)" })
    .option("leak-gens", { type: "number", default: 10, describe: "generations in one process (leak)" })
    .option("leak-steps", { type: "number", default: 1, describe: "steps per generation (leak)" })
    .option("extra", { type: "number", default: 2, describe: "warm U-Net calls after the cold one (unet, options)" })
    .option("gol", { choices: GOLS, default: "all" as Args["gol"], describe: "ORT graph optimisation level" })
    .option("mem-pattern", { type: "number", choices: [0, 1], default: 1, describe: "ORT memory-pattern planner: 1 on, 0 off" })
    .option("arena", { type: "number", choices: [0, 1], default: 1, describe: "ORT CPU arena: 1 on, 0 off" })
    .option("runtime", { choices: RUNTIMES.map((r) => r.name), default: "ort-node", describe: "what runs the components (runtime mode)" })
    .strict()
    .help()
    .parseSync();
  for (const k of ["threads", "size", "steps", "repeats", "stage-repeats", "text-repeats", "leak-gens", "leak-steps", "extra"] as const) {
    if (!Number.isFinite(a[k])) throw new Error(`--${k}: not a number`);
  }
  return {
    mode: a.mode,
    model: a.model,
    out: a.out ?? null,
    threads: a.threads,
    size: a.size,
    steps: a.steps,
    repeats: a.repeats,
    stageRepeats: a["stage-repeats"],
    textRepeats: a["text-repeats"],
    leakGens: a["leak-gens"],
    leakSteps: a["leak-steps"],
    extra: a.extra,
    gol: a.gol,
    memPattern: a["mem-pattern"] === 1,
    arena: a.arena === 1,
    runtime: a.runtime,
  };
}

const ARGS = parseArgs(process.argv.slice(2));

function log(msg: string): void {
  process.stderr.write(`[ours-${ARGS.mode}] ${msg}\n`);
}

/** Peak resident set of this process so far, bytes (getrusage; VmHWM). */
function peakRss(): number {
  return process.resourceUsage().maxRSS * 1024;
}

function gcRss(): number {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) {
    g();
    g();
  }
  return process.memoryUsage().rss;
}

function loadavg(): number {
  return os.loadavg()[0];
}

/** Jiffies of all CPUs: busy and total, from /proc/stat (null off Linux). */
function procStat(): { busy: number; total: number } | null {
  try {
    const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: total - f[3] - (f[4] ?? 0), total };
  } catch {
    return null;
  }
}

/** CPU cores other processes kept busy over an interval: all CPUs' busy time minus ours. */
function othersCores(a: ReturnType<typeof procStat>, b: ReturnType<typeof procStat>, wallS: number, ownCpuS: number): number | null {
  if (!a || !b || b.total === a.total || wallS <= 0) return null;
  const busyCoreS = ((b.busy - a.busy) / (b.total - a.total)) * os.cpus().length * wallS;
  return Math.max(0, (busyCoreS - ownCpuS) / wallS);
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

interface Timed {
  wall_s: number[];
  cpu_s: number[];
  /** cores other processes used during each call (contention) */
  others_cores: (number | null)[];
  loadavg_before: number;
  loadavg_after: number;
}

const QUIET = 0.15; // other processes' cores below which a call counts as uncontended

/** n calls (the first is the cold one); then up to `extra` more while no call after the first
 *  ran uncontended, so that a busy machine costs time rather than a wrong figure. */
async function timed(fn: () => Promise<unknown>, n: number, name: string, extra = ARGS.extra): Promise<Timed> {
  const wall: number[] = [];
  const cpu: number[] = [];
  const others: (number | null)[] = [];
  const la0 = loadavg();
  const clean = () => others.slice(1).some((o) => o !== null && o < QUIET);
  for (let i = 0; i < n || (n > 1 && i < n + extra && !clean()); i++) {
    const s0 = procStat();
    const c0 = cpuSeconds();
    const t0 = performance.now();
    await fn();
    wall.push((performance.now() - t0) / 1000);
    cpu.push(cpuSeconds() - c0);
    others.push(othersCores(s0, procStat(), wall[i], cpu[i]));
    log(
      `${name} ${i + 1}/${n}: ${wall[i].toFixed(3)} s (cpu ${(cpu[i] / wall[i]).toFixed(2)} cores, others ${others[i]?.toFixed(2) ?? "?"})`,
    );
  }
  return { wall_s: wall, cpu_s: cpu, others_cores: others, loadavg_before: la0, loadavg_after: loadavg() };
}

/** Each component on the named runtime, one session at a time: load time and STAGE_REPEATS calls. */
async function componentsOn(name: string, lat: number): Promise<Record<string, unknown>> {
  const runtime = createRuntime(name);
  const pipe = await StableDiffusionPipeline.load(ARGS.model, { threads: ARGS.threads, runtime, lowMemory: true });
  const ids = pipe.tokenize([PROMPT, ""]);
  const hidden = pipe.folder.textConfig.hiddenSize;
  const feeds: Record<ComponentKind, (type: (input: string) => string) => Record<string, RuntimeTensor>> = {
    text_encoder: (type) => ({
      input_ids:
        type("input_ids") === "int64"
          ? { dtype: "int64", dims: [2, 77], data: BigInt64Array.from(ids.flatMap((a) => Array.from(a, BigInt))) }
          : { dtype: "int32", dims: [2, 77], data: Int32Array.from(ids.flatMap((a) => Array.from(a))) },
    }),
    unet: () => ({
      sample: { dtype: "float32", dims: [2, 4, lat, lat], data: normals(2 * 4 * lat * lat, 1) },
      timestep: { dtype: "float32", dims: [1], data: Float32Array.of(981) },
      encoder_hidden_states: { dtype: "float32", dims: [2, 77, hidden], data: normals(2 * 77 * hidden, 4) },
    }),
    vae_decoder: () => ({ latent_sample: { dtype: "float32", dims: [1, 4, lat, lat], data: normals(4 * lat * lat, 2) } }),
    vae_encoder: () => ({
      sample: { dtype: "float32", dims: [1, 3, ARGS.size, ARGS.size], data: normals(3 * ARGS.size * ARGS.size, 3, 0.5) },
    }),
  };
  const stages: Record<string, unknown> = {};
  const skipped: Record<string, string> = {};
  try {
    for (const kind of ["text_encoder", "vae_decoder", "vae_encoder", "unet"] as const) {
      if (kind === "unet" && runtime.describe().package === "onnxruntime-web") {
        skipped[kind] = "onnxruntime-web: SD 1.5's 3.4 GB U-Net and its working set do not fit WebAssembly's 4 GiB address space";
        continue;
      }
      const t0 = performance.now();
      const c = await pipe.component(kind);
      const loadS = (performance.now() - t0) / 1000;
      const f = feeds[kind]((input) => c.inputType(input));
      if (kind === "unet" && c.inputType("timestep") === "int64") f.timestep = { dtype: "int64", dims: [1], data: BigInt64Array.of(981n) };
      stages[kind] = { load_s: loadS, ...(await timed(() => c.run(f), ARGS.stageRepeats, kind, 0)) };
      await c.release();
    }
  } finally {
    await pipe.release();
    await runtime.close();
  }
  return { runtime: runtime.describe(), stages, skipped, peak_rss: peakRss() };
}

/** Deterministic standard normals (Box-Muller over a 32-bit LCG): inputs whose values do not matter. */
function normals(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 4294967296;
  };
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u()));
    const th = 2 * Math.PI * u();
    out[i] = r * Math.cos(th) * scale;
    if (i + 1 < n) out[i + 1] = r * Math.sin(th) * scale;
  }
  return out;
}

interface E2eRun {
  wall_s: number;
  cpu_s: number;
  others_cores: number | null;
  steps: number;
  unet_calls: number;
  step_s: number[];
  first_step_end_s: number | null;
  after_last_step_s: number | null;
  loadavg_before: number;
  loadavg_after: number;
  rss_after: number;
}

async function txt2img(pipe: StableDiffusionPipeline, steps: number, seed: number): Promise<E2eRun> {
  const stamps: number[] = [];
  const la0 = loadavg();
  const s0 = procStat();
  const c0 = cpuSeconds();
  const t0 = performance.now();
  await pipe.generate({
    prompt: PROMPT,
    steps,
    guidanceScale: 7.5,
    seed,
    width: ARGS.size,
    height: ARGS.size,
    onStep: () => {
      stamps.push(performance.now());
    },
  });
  const t1 = performance.now();
  const stepS = stamps.slice(1).map((t, i) => (t - stamps[i]) / 1000);
  const cpu = cpuSeconds() - c0;
  return {
    wall_s: (t1 - t0) / 1000,
    cpu_s: cpu,
    others_cores: othersCores(s0, procStat(), (t1 - t0) / 1000, cpu),
    steps,
    unet_calls: stamps.length,
    step_s: stepS,
    first_step_end_s: stamps.length ? (stamps[0] - t0) / 1000 : null,
    after_last_step_s: stamps.length ? (t1 - stamps[stamps.length - 1]) / 1000 : null,
    loadavg_before: la0,
    loadavg_after: loadavg(),
    rss_after: gcRss(),
  };
}

function sessionOptions(): PipelineOptions {
  return { threads: ARGS.threads, graphOptimizationLevel: ARGS.gol, enableMemPattern: ARGS.memPattern, enableCpuMemArena: ARGS.arena };
}

async function main(): Promise<void> {
  const out: Record<string, unknown> = {
    backend: "ours",
    mode: ARGS.mode,
    threads: ARGS.threads,
    steps: ARGS.steps,
    size: ARGS.size,
    session_options: sessionOptions(),
    node: process.version,
    onnxruntime_node: readOrtVersion(),
  };
  const lat = ARGS.size / 8;
  out.rss_before_load = gcRss();

  if (ARGS.mode === "lowmem") {
    const t0 = performance.now();
    const pipe = await StableDiffusionPipeline.load(ARGS.model, { ...sessionOptions(), lowMemory: true });
    out.load_s = (performance.now() - t0) / 1000;
    const run = await txt2img(pipe, ARGS.steps, 42);
    log(`lowMemory txt2img (${ARGS.steps} steps): ${run.wall_s.toFixed(1)} s`);
    out.e2e = [run];
    await pipe.release();
    out.peak_rss = peakRss();
    return finish(out);
  }

  if (ARGS.mode === "runtime") return finish({ ...out, ...(await componentsOn(ARGS.runtime, lat)) });

  if (ARGS.mode === "unet") {
    // lowMemory: no session at load; the U-Net's is created here and kept (runUnet does not release it)
    const pipe = await StableDiffusionPipeline.load(ARGS.model, { ...sessionOptions(), lowMemory: true });
    const t0 = performance.now();
    const unet = await pipe.component("unet");
    out.load_s = (performance.now() - t0) / 1000;
    out.rss_after_load = gcRss();
    out.unet_file = pipe.folder.unet;
    const hidden = unet.inputs.get("encoder_hidden_states")?.shape[2];
    const ehs: F32 = f32(normals(2 * 77 * (typeof hidden === "number" ? hidden : 768), 4), [
      2,
      77,
      typeof hidden === "number" ? hidden : 768,
    ]);
    const sample: F32 = f32(normals(2 * 4 * lat * lat, 1), [2, 4, lat, lat]);
    out.stages = { unet_step_cfg: await timed(() => pipe.runUnet(sample, 981, ehs), 3, "unet") };
    out.rss_end = gcRss();
    out.peak_rss = peakRss();
    await pipe.release();
    return finish(out);
  }

  const t0 = performance.now();
  const pipe = await StableDiffusionPipeline.load(ARGS.model, sessionOptions());
  out.load_s = (performance.now() - t0) / 1000;
  out.rss_after_load = gcRss();
  log(`loaded in ${(out.load_s as number).toFixed(1)} s, rss ${((out.rss_after_load as number) / 1e9).toFixed(2)} GB`);

  const ids = pipe.tokenize([PROMPT, ""]);
  const ehs = await pipe.encodeIds(ids);
  const sample: F32 = f32(normals(2 * 4 * lat * lat, 1), [2, 4, lat, lat]);
  const latent1: F32 = f32(normals(4 * lat * lat, 2), [1, 4, lat, lat]);
  const image: F32 = f32(
    normals(3 * ARGS.size * ARGS.size, 3, 0.5).map((v) => Math.max(-1, Math.min(1, v))),
    [1, 3, ARGS.size, ARGS.size],
  );

  if (ARGS.mode === "leak") {
    const leak: { generation: number; steps: number; wall_s: number; rss_after: number }[] = [];
    for (let g = 1; g <= ARGS.leakGens; g++) {
      const run = await txt2img(pipe, ARGS.leakSteps, 100 + g);
      leak.push({ generation: g, steps: ARGS.leakSteps, wall_s: run.wall_s, rss_after: run.rss_after });
      log(
        `generation ${g}/${ARGS.leakGens} (${ARGS.leakSteps} step, ${ARGS.size}x${ARGS.size}): ${run.wall_s.toFixed(1)} s, rss ${(run.rss_after / 1e9).toFixed(2)} GB`,
      );
    }
    out.leak = leak;
    out.peak_rss = peakRss();
    await pipe.release();
    out.rss_after_release = gcRss();
    return finish(out);
  }

  if (ARGS.mode === "options") {
    const stages: Record<string, Timed> = {};
    stages.unet_step_cfg = await timed(() => pipe.runUnet(sample, 981, ehs), 3, "unet");
    stages.vae_decode = await timed(() => pipe.decodeLatents(latent1), 2, "vae decode");
    out.stages = stages;
    out.rss_end = gcRss();
    out.peak_rss = peakRss();
    await pipe.release();
    return finish(out);
  }

  const stages: Record<string, Timed> = {};
  stages.text_encoder = await timed(() => pipe.encodeIds(ids), ARGS.textRepeats, "text encoder");
  stages.unet_step_cfg = await timed(() => pipe.runUnet(sample, 981, ehs), ARGS.stageRepeats, "unet");
  stages.vae_decode = await timed(() => pipe.decodeLatents(latent1), ARGS.stageRepeats, "vae decode");
  // The VAE encoder's session is created on first use (txt2img does not need it): not timed as a call.
  const te = performance.now();
  await pipe.component("vae_encoder");
  out.vae_encoder_load_s = (performance.now() - te) / 1000;
  stages.vae_encode = await timed(() => pipe.encodeImage(image), ARGS.stageRepeats, "vae encode");
  out.stages = stages;
  out.rss_after_stages = gcRss();

  const e2e: E2eRun[] = [];
  for (let r = 0; r < ARGS.repeats; r++) {
    const run = await txt2img(pipe, ARGS.steps, 42 + r);
    e2e.push(run);
    log(
      `txt2img ${r + 1}/${ARGS.repeats}: ${run.wall_s.toFixed(1)} s, ${run.unet_calls} U-Net calls, rss ${(run.rss_after / 1e9).toFixed(2)} GB`,
    );
  }
  out.e2e = e2e;
  out.peak_rss = peakRss();
  await pipe.release();
  out.rss_after_release = gcRss();
  return finish(out);
}

function readOrtVersion(): string | null {
  const v = packageVersion("onnxruntime-node");
  return v === "unknown" ? null : v;
}

function finish(out: Record<string, unknown>): void {
  const text = JSON.stringify(out);
  if (ARGS.out) fs.writeFileSync(ARGS.out, text);
  else process.stdout.write(text + "\n");
}

main().catch((e: unknown) => {
  process.stderr.write(`[ours-${ARGS.mode}] failed: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
});
