/**
 * Noise schedules as small pure functions, shared by every scheduler. Each reproduces diffusers'
 * arithmetic and its precision: torch float32 where diffusers uses torch tensors, float64 where it
 * uses numpy, so that the results agree to the last float32 bit.
 */
import { HarnessError, ExitCode } from "../errors";
import { fmaF32 } from "../rng/torch-generator";
import { BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing } from "./types";

const f = Math.fround;

function pick<T>(raw: Record<string, unknown>, key: string, fallback: T, file: string, check: (v: unknown) => boolean): T {
  const v = raw[key];
  if (v === undefined || v === null) return fallback;
  if (!check(v)) throw new HarnessError(`${file}: ${key} has an invalid value ${JSON.stringify(v)}`, ExitCode.usage);
  return v as T;
}

const isNum = (v: unknown) => typeof v === "number" && Number.isFinite(v);
const isBool = (v: unknown) => typeof v === "boolean";
const isStr = (v: unknown) => typeof v === "string";
const oneOf = (...opts: string[]) => (v: unknown) => typeof v === "string" && opts.includes(v);

/**
 * diffusers 0.35.2's __init__ defaults of every scheduler class, for the keys SchedulerConfig holds.
 * They differ per class (DDIM clips by default, Euler spaces by "linspace", PNDM by "leading"...),
 * so a missing key must be filled from the right class, the way `Cls.from_config(config)` does.
 */
const COMMON_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  steps_offset: 0,
} as const;
export const CLASS_DEFAULTS: Readonly<Record<string, Readonly<Record<string, unknown>>>> = {
  PNDMScheduler: { ...COMMON_DEFAULTS, timestep_spacing: "leading", set_alpha_to_one: false, skip_prk_steps: false },
  DDIMScheduler: {
    ...COMMON_DEFAULTS, timestep_spacing: "leading", clip_sample: true, clip_sample_range: 1.0, set_alpha_to_one: true,
    rescale_betas_zero_snr: false, thresholding: false,
  },
  DDPMScheduler: {
    ...COMMON_DEFAULTS, timestep_spacing: "leading", clip_sample: true, clip_sample_range: 1.0, variance_type: "fixed_small",
    rescale_betas_zero_snr: false, thresholding: false,
  },
  LMSDiscreteScheduler: { ...COMMON_DEFAULTS, timestep_spacing: "linspace", use_karras_sigmas: false },
  EulerDiscreteScheduler: {
    ...COMMON_DEFAULTS, timestep_spacing: "linspace", use_karras_sigmas: false, interpolation_type: "linear",
    final_sigmas_type: "zero", timestep_type: "discrete", rescale_betas_zero_snr: false,
  },
  EulerAncestralDiscreteScheduler: { ...COMMON_DEFAULTS, timestep_spacing: "linspace", rescale_betas_zero_snr: false },
  HeunDiscreteScheduler: {
    ...COMMON_DEFAULTS, beta_start: 0.00085, beta_end: 0.012, timestep_spacing: "linspace", clip_sample: false,
    clip_sample_range: 1.0, use_karras_sigmas: false,
  },
  DPMSolverMultistepScheduler: {
    ...COMMON_DEFAULTS, timestep_spacing: "linspace", use_karras_sigmas: false, variance_type: null, solver_order: 2,
    algorithm_type: "dpmsolver++", solver_type: "midpoint", lower_order_final: true, final_sigmas_type: "zero",
    rescale_betas_zero_snr: false, thresholding: false,
  },
  UniPCMultistepScheduler: {
    ...COMMON_DEFAULTS, timestep_spacing: "linspace", use_karras_sigmas: false, solver_order: 2, solver_type: "bh2",
    lower_order_final: true, final_sigmas_type: "zero", predict_x0: true, disable_corrector: [],
    rescale_betas_zero_snr: false, thresholding: false,
  },
};

/**
 * The raw config a `targetClass.from_config(config)` would see, with diffusers' precedence: keys in the
 * file win; then the defaults of the file's own `_class_name` (a loaded pipeline's `scheduler.config`
 * holds all of them -- SD 1.5's PNDM config thereby carries timestep_spacing "leading" into Euler);
 * then the target class's defaults. Unknown classes contribute nothing.
 */
export function resolveRawConfig(raw: Readonly<Record<string, unknown>>, targetClass?: string): Record<string, unknown> {
  const source = typeof raw._class_name === "string" ? CLASS_DEFAULTS[raw._class_name] : undefined;
  const target = targetClass ? CLASS_DEFAULTS[targetClass] : undefined;
  const out: Record<string, unknown> = { ...(target ?? {}), ...(source ?? {}) };
  for (const [k, v] of Object.entries(raw)) if (v !== undefined) out[k] = v;
  if (targetClass) out._class_name = targetClass;
  return out;
}

/** The same config as seen by another scheduler class (its defaults fill keys the file lacks). */
export function configForClass(config: SchedulerConfig, targetClass: string): SchedulerConfig {
  // the file's own _class_name stays the "source" whose defaults beat the target's
  return parseSchedulerConfig(resolveRawConfig(config.raw, targetClass));
}

/**
 * Parse scheduler_config.json's object into a typed config. Missing keys take the defaults of the
 * file's `_class_name` (see resolveRawConfig), then generic fallbacks.
 */
export function parseSchedulerConfig(input: Record<string, unknown>, file = "scheduler_config.json"): SchedulerConfig {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new HarnessError(`${file}: not a JSON object`, ExitCode.usage);
  }
  const raw = resolveRawConfig(input);
  const numTrainTimesteps = pick(raw, "num_train_timesteps", 1000, file, (v) => Number.isInteger(v) && (v as number) > 1 && (v as number) <= 100000);
  const trained = raw.trained_betas;
  if (trained !== undefined && trained !== null && (!Array.isArray(trained) || trained.length !== numTrainTimesteps || !trained.every(isNum))) {
    throw new HarnessError(`${file}: trained_betas must be ${numTrainTimesteps} numbers`, ExitCode.usage);
  }
  // Each beta is a per-step noise variance: 1 - beta must stay in (0, 1) for alphas_cumprod and its
  // square roots. Checked here, naming the key, rather than as "NaN at step 0" of a later scheduler.
  if (Array.isArray(trained)) {
    const k = (trained as number[]).findIndex((b) => !(b >= 0 && b < 1));
    if (k >= 0) throw new HarnessError(`${file}: trained_betas[${k}] ${JSON.stringify(trained[k])} must be in [0, 1)`, ExitCode.usage);
  } else if (raw.beta_schedule !== "squaredcos_cap_v2") {
    // linear and scaled_linear interpolate between these two; the cosine schedule ignores them
    for (const key of ["beta_start", "beta_end"]) {
      const v = raw[key];
      if (typeof v === "number" && !(v > 0 && v < 1)) throw new HarnessError(`${file}: "${key}" ${JSON.stringify(v)} must be in (0, 1) (a per-step noise variance)`, ExitCode.usage);
    }
  }
  return {
    className: pick(raw, "_class_name", "PNDMScheduler", file, isStr),
    numTrainTimesteps,
    betaStart: pick(raw, "beta_start", 0.0001, file, isNum),
    betaEnd: pick(raw, "beta_end", 0.02, file, isNum),
    betaSchedule: pick<BetaSchedule>(raw, "beta_schedule", "linear", file, oneOf("linear", "scaled_linear", "squaredcos_cap_v2")),
    trainedBetas: Array.isArray(trained) ? (trained as number[]) : null,
    predictionType: pick<PredictionType>(raw, "prediction_type", "epsilon", file, oneOf("epsilon", "v_prediction", "sample")),
    timestepSpacing: pick<TimestepSpacing>(raw, "timestep_spacing", "leading", file, oneOf("leading", "linspace", "trailing")),
    stepsOffset: pick(raw, "steps_offset", 0, file, (v) => Number.isInteger(v) && (v as number) >= 0),
    clipSample: pick(raw, "clip_sample", false, file, isBool),
    clipSampleRange: pick(raw, "clip_sample_range", 1.0, file, isNum),
    setAlphaToOne: pick(raw, "set_alpha_to_one", false, file, isBool),
    skipPrkSteps: pick(raw, "skip_prk_steps", false, file, isBool),
    useKarrasSigmas: pick(raw, "use_karras_sigmas", false, file, isBool),
    varianceType: pick(raw, "variance_type", "fixed_small", file, isStr),
    interpolationType: pick(raw, "interpolation_type", "linear", file, isStr),
    solverOrder: pick(raw, "solver_order", 2, file, (v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 3),
    algorithmType: pick(raw, "algorithm_type", "dpmsolver++", file, isStr),
    solverType: pick(raw, "solver_type", "midpoint", file, isStr),
    lowerOrderFinal: pick(raw, "lower_order_final", true, file, isBool),
    finalSigmasType: pick(raw, "final_sigmas_type", "zero", file, isStr),
    predictX0: pick(raw, "predict_x0", true, file, isBool),
    disableCorrector: pick<number[]>(raw, "disable_corrector", [], file, (v) => Array.isArray(v)),
    timestepType: pick(raw, "timestep_type", "discrete", file, isStr),
    rescaleBetasZeroSnr: pick(raw, "rescale_betas_zero_snr", false, file, isBool),
    raw: { ...input },
  };
}

/**
 * torch.linspace(start, end, steps, dtype=float32) on the CPU. ATen's kernel (RangeFactoriesKernel.cpp,
 * scalar only) computes step = (end - start) / (steps - 1) in float32 and returns
 * `start + step * i` for the first half and `end - step * (steps - i - 1)` for the second, so both
 * ends are exact. The x86 builds of that kernel (the AVX2 / AVX512 dispatch, i.e. every current CPU)
 * are compiled with FMA contraction, so each element is ONE rounding: fma(step, i, start). Measured
 * on torch 2.8: with plain mul-then-add 145 of SD's 1000 sqrt-betas differ by an ulp; with the fused
 * form none do (ATEN_CPU_CAPABILITY=default, the non-FMA build, matches the unfused form instead).
 */
export function torchLinspaceF32(start: number, end: number, steps: number, fused = true): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = f(start);
  const e = f(end);
  const step = f(f(e - s) / f(steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    if (i < halfway) out[i] = fused ? fmaF32(step, i, s) : f(s + f(step * i));
    else out[i] = fused ? fmaF32(-step, steps - i - 1, e) : f(e - f(step * (steps - i - 1)));
  }
  return out;
}

/** numpy.linspace(start, stop, num) in float64: `i * step + start`, the last element set to stop. */
export function npLinspace(start: number, stop: number, num: number): Float64Array {
  const out = new Float64Array(num);
  if (num === 1) {
    out[0] = start;
    return out;
  }
  const step = (stop - start) / (num - 1);
  for (let i = 0; i < num; i++) out[i] = step === 0 ? (i / (num - 1)) * (stop - start) + start : i * step + start;
  out[num - 1] = stop;
  return out;
}

/**
 * numpy.arange(start, stop, step) for float arguments: length ceil((stop - start) / step), values
 * `start + i * delta` with delta = (start + step) - start (numpy's fill routine), which can differ
 * from `step` in the last bit. Note the length: for trailing spacing np.arange(1000, 0, -1000/n)
 * has n + 1 elements for 62 values of n up to 1000 (n = 61, 103, 121, ...), and diffusers then
 * really uses n + 1 timesteps, the last one -1. We reproduce that rather than "fix" it.
 */
export function npArange(start: number, stop: number, step: number): Float64Array {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Float64Array(len);
  if (len > 0) out[0] = start;
  if (len > 1) out[1] = start + step;
  const delta = out[1] - out[0];
  for (let i = 2; i < len; i++) out[i] = start + i * delta;
  return out;
}

const NPY_LOG_P = [0.0, 9.999999999999998702752e-1, 2.112677543073053063722, 1.480000633576506585156, 3.808837741388407920751e-1, 2.589979117907922693523e-2].map(f);
const NPY_LOG_Q = [1.0, 2.612677543073109236779, 2.453006071784736363091, 9.864942958519418960339e-1, 1.546476374983906719538e-1, 5.875095403124574342950e-3].map(f);
const NPY_LOGE2F = f(0.693147180559945309417);
const NPY_SQRT1_2F = f(0.707106781186547524400844362104849039);
const f32scratch = new Float32Array(1);
const u32scratch = new Uint32Array(f32scratch.buffer);

/**
 * numpy.log on a float32 array, as numpy 2.x computes it on x86 with AVX2+FMA3 or AVX512F
 * (simd_log_FLOAT in loops_exponent_log.dispatch.c.src): mantissa m in [0.5, 1) and exponent k,
 * m <= sqrt(1/2) ? (2m, k-1) : (m, k), then a 5/5 rational minimax polynomial in x = m - 1 by
 * fused multiply-adds, and fma(k, ln 2, P/Q). It is NOT correctly rounded (up to 3.8 ulp; about one
 * SD sigma in five differs from round(log(x))), and diffusers feeds it to _sigma_to_t, so the
 * Karras timesteps depend on it. Positive normal inputs only (sigmas are).
 */
export function npLogF32(xIn: number): number {
  const x32 = f(xIn);
  if (!(x32 > 0) || !Number.isFinite(x32) || x32 < 1.1754943508222875e-38) return f(Math.log(x32));
  f32scratch[0] = x32;
  const bits = u32scratch[0];
  let exponent = f((bits >>> 23) - 0x7e);
  u32scratch[0] = (bits & 0x7fffff) | (126 << 23);
  let x = f32scratch[0];
  if (x <= NPY_SQRT1_2F) {
    x = f(x + x);
    exponent = f(exponent - 1);
  }
  x = f(x - 1);
  let num = fmaF32(NPY_LOG_P[5], x, NPY_LOG_P[4]);
  for (let k = 3; k >= 0; k--) num = fmaF32(num, x, NPY_LOG_P[k]);
  let den = fmaF32(NPY_LOG_Q[5], x, NPY_LOG_Q[4]);
  for (let k = 3; k >= 0; k--) den = fmaF32(den, x, NPY_LOG_Q[k]);
  return fmaF32(exponent, NPY_LOGE2F, f(num / den));
}

/** numpy.round: round half to even. */
export function npRound(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : r;
}

/**
 * betas_for_alpha_bar with the cosine alpha_bar of Nichol & Dhariwal (2021), eq. 17,
 * clipped at max_beta 0.999 (computed in float64 as diffusers does, then cast to float32).
 */
export function cosineBetas(n: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number) => {
    const c = Math.cos(((t + 0.008) / 1.008) * Math.PI / 2);
    return c * c; // Python's `** 2` on a float is exactly c * c
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta);
  }
  return out;
}

/** The training betas (float32) from the config. */
export function makeBetas(config: SchedulerConfig): Float32Array {
  const n = config.numTrainTimesteps;
  if (config.trainedBetas) return Float32Array.from(config.trainedBetas);
  switch (config.betaSchedule) {
    case "linear":
      return torchLinspaceF32(config.betaStart, config.betaEnd, n);
    case "scaled_linear": {
      // linspace over sqrt(beta), squared in float32 (the latent-diffusion schedule)
      const r = torchLinspaceF32(Math.sqrt(config.betaStart), Math.sqrt(config.betaEnd), n);
      return r.map((x) => f(x * x));
    }
    case "squaredcos_cap_v2":
      return cosineBetas(n);
  }
}

/**
 * alphas_cumprod = cumprod(1 - betas): torch's CPU cumprod accumulates in double (acc_type of
 * float) and rounds each output to float32.
 */
export function alphasCumprod(betas: Float32Array): Float32Array {
  const out = new Float32Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= f(1 - betas[i]);
    out[i] = acc;
  }
  return out;
}

/**
 * Zero-terminal-SNR rescaling (Lin et al. 2023, Algorithm 1), as diffusers' rescale_zero_terminal_snr.
 */
export function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const ac = alphasCumprod(betas);
  const sqrt = ac.map((a) => f(Math.sqrt(a)));
  const first = sqrt[0];
  const last = sqrt[sqrt.length - 1];
  // alphas_bar_sqrt -= T; alphas_bar_sqrt *= s0 / (s0 - T): the factor is one float32 scalar
  const factor = f(first / f(first - last));
  const scaled = sqrt.map((s) => f(f(s - last) * factor));
  const bar = scaled.map((s) => f(s * s));
  const out = new Float32Array(betas.length);
  for (let i = 0; i < bar.length; i++) out[i] = f(1 - (i === 0 ? bar[0] : f(bar[i] / bar[i - 1])));
  return out;
}

/**
 * Discrete timesteps (integers, descending) for DDIM / DDPM / DPM-Solver / UniPC style schedulers,
 * per timestep_spacing (Table 2 of Lin et al. 2023 explains the three spacings).
 */
export function discreteTimesteps(config: SchedulerConfig, n: number): number[] {
  const N = config.numTrainTimesteps;
  if (n > N) throw new HarnessError(`--steps ${n} exceeds the scheduler's ${N} training timesteps`, ExitCode.usage);
  switch (config.timestepSpacing) {
    case "linspace":
      return Array.from(npLinspace(0, N - 1, n), npRound).reverse();
    case "leading": {
      const ratio = Math.floor(N / n);
      return Array.from({ length: n }, (_, i) => npRound(i * ratio) + config.stepsOffset).reverse();
    }
    case "trailing":
      // np.round(np.arange(N, 0, -N / n)) - 1 (see npArange: sometimes n + 1 values)
      return Array.from(npArange(N, 0, -N / n), (t) => npRound(t) - 1);
  }
}

/** sigma_t = sqrt((1 - ᾱ_t) / ᾱ_t) for every training timestep (float32, as torch computes it). */
export function trainingSigmas(alphasCum: Float32Array): Float32Array {
  return alphasCum.map((a) => f(Math.sqrt(f(f(1 - a) / a))));
}

/** numpy.interp(x, xp, fp) for increasing xp (float64). */
export function npInterp(x: number, xp: ArrayLike<number>, fp: ArrayLike<number>): number {
  const n = xp.length;
  if (x <= xp[0]) return fp[0];
  if (x >= xp[n - 1]) return fp[n - 1];
  let lo = 0;
  let hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xp[mid] <= x) lo = mid;
    else hi = mid;
  }
  const slope = (fp[hi] - fp[lo]) / (xp[hi] - xp[lo]);
  return slope * (x - xp[lo]) + fp[lo];
}

/** Karras et al. (2022) eq. 5: sigmas spaced uniformly in sigma^(1/rho), rho = 7. */
export function karrasSigmas(n: number, sigmaMin: number, sigmaMax: number, rho = 7): Float64Array {
  const ramp = npLinspace(0, 1, n);
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return ramp.map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/**
 * The (fractional) training timestep whose log-sigma is `sigma`'s, by linear interpolation in
 * log-sigma between neighbouring training timesteps (diffusers' _sigma_to_t). `logSigmas` are
 * np.log of the float32 training sigmas, i.e. float32 values from npLogF32; sigma is float64.
 */
export function sigmaToT(sigma: number, logSigmas: ArrayLike<number>): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const n = logSigmas.length;
  // index of the last training log-sigma not above logSigma (log-sigmas increase with t)
  let low = 0;
  for (let i = 0; i < n; i++) if (logSigma - logSigmas[i] >= 0) low = i;
  low = Math.min(low, n - 2);
  const high = low + 1;
  const lo = logSigmas[low];
  const hi = logSigmas[high];
  let w = (lo - logSigma) / (lo - hi);
  w = Math.min(Math.max(w, 0), 1);
  return (1 - w) * low + w * high;
}

/** diffusers' training schedule: betas (rescaled for zero terminal SNR if asked) and alphas_cumprod. */
export function trainingSchedule(config: SchedulerConfig): { betas: Float32Array; alphasCumprod: Float32Array } {
  let betas = makeBetas(config);
  if (config.rescaleBetasZeroSnr) betas = rescaleZeroTerminalSnr(betas);
  return { betas, alphasCumprod: alphasCumprod(betas) };
}

/** torch indexing of a 1-D tensor by an integer: negative indices count from the end. */
export function at(arr: ArrayLike<number>, index: number): number {
  const i = index < 0 ? arr.length + index : index;
  if (!(i >= 0 && i < arr.length)) throw new RangeError(`index ${index} out of range for length ${arr.length}`);
  return arr[i];
}

/**
 * The float32 timesteps of the k-diffusion family (Euler, Euler ancestral, LMS, and Heun before its
 * doubling), per timestep_spacing: np.linspace(0, N-1, n, dtype=float32) without rounding for
 * "linspace"; integers (+ steps_offset) for "leading"; round(arange(N, 0, -N/n)) - 1 for "trailing".
 * Descending, float32 values held in float64.
 */
export function sigmaTimesteps(config: SchedulerConfig, n: number): Float64Array {
  const N = config.numTrainTimesteps;
  switch (config.timestepSpacing) {
    case "linspace":
      return npLinspace(0, N - 1, n).map(f).reverse();
    case "leading": {
      const ratio = Math.floor(N / n);
      return Float64Array.from({ length: n }, (_, i) => f((n - 1 - i) * ratio) + config.stepsOffset).map(f);
    }
    case "trailing":
      return npArange(N, 0, -N / n).map((t) => f(f(npRound(t)) - 1));
  }
}

/** Training sigmas at (fractional) timesteps: np.interp(t, arange(N), sigmas) in float64. */
export function interpSigmas(timesteps: ArrayLike<number>, trainSigmas: Float32Array): Float64Array {
  const xp = Float64Array.from({ length: trainSigmas.length }, (_, i) => i);
  return Float64Array.from(timesteps, (t) => npInterp(t, xp, trainSigmas));
}

/**
 * Karras sigmas and their fractional timesteps, as EulerDiscrete / LMS / Heun / DPM-Solver's
 * set_timesteps do: sigma_max, sigma_min = the interpolated sigmas' ends; rho 7; t from _sigma_to_t
 * on log-sigmas computed by numpy's float32 log (npLogF32).
 */
export function karrasSchedule(interpolated: Float64Array, trainSigmas: Float32Array, n: number): { sigmas: Float64Array; timesteps: Float64Array } {
  const sigmas = karrasSigmas(n, interpolated[interpolated.length - 1], interpolated[0]);
  const logSigmas = trainSigmas.map(npLogF32);
  return { sigmas, timesteps: sigmas.map((s) => sigmaToT(s, logSigmas)) };
}

/** A float64 schedule cast to float32 with a final sigma appended (np.concatenate(...).astype(float32)). */
export function withFinalSigma(sigmas: ArrayLike<number>, last: number): Float32Array {
  const out = new Float32Array(sigmas.length + 1);
  out.set(Float32Array.from(sigmas));
  out[sigmas.length] = last;
  return out;
}

/** 1 / sqrt(sigma^2 + 1) input scaling of the k-diffusion family, as float32 ops: x / sqrt(s*s + 1). */
export function kScaleInput(sample: Float32Array, sigma: number): Float32Array {
  const d = f(Math.sqrt(f(f(sigma * sigma) + 1)));
  return sample.map((x) => x / d);
}

/** init_noise_sigma of the k-diffusion family: max sigma, or sqrt(max^2 + 1) for "leading" spacing. */
export function kInitNoiseSigma(sigmas: Float32Array, spacing: TimestepSpacing): number {
  let m = -Infinity;
  for (const s of sigmas) m = Math.max(m, s);
  return spacing === "leading" ? f(Math.sqrt(f(f(m * m) + 1))) : m;
}

/**
 * k-diffusion denoised estimate x0 (Karras et al. 2022, Table 1's preconditioning), in float32 ops:
 * epsilon: x - sigma * eps; v_prediction: v * (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1);
 * sample: the model output itself.
 */
export function kPredictX0(prediction: PredictionType, modelOutput: Float32Array, sample: Float32Array, sigma: number): Float32Array {
  const out = new Float32Array(sample.length);
  switch (prediction) {
    case "epsilon":
      for (let j = 0; j < out.length; j++) out[j] = sample[j] - f(sigma * modelOutput[j]);
      return out;
    case "v_prediction": {
      const d = f(f(sigma * sigma) + 1);
      const c = f(-sigma / f(Math.sqrt(d)));
      for (let j = 0; j < out.length; j++) out[j] = f(modelOutput[j] * c) + f(sample[j] / d);
      return out;
    }
    case "sample":
      out.set(modelOutput);
      return out;
  }
}

/** Forward diffusion of the sigma schedulers (img2img): x0 + noise * sigma. */
export function kAddNoise(original: Float32Array, noise: Float32Array, sigma: number): Float32Array {
  checkSameLength(original, noise, "addNoise");
  return original.map((x, j) => x + f(noise[j] * sigma));
}

/** Forward diffusion q(x_t | x_0) of the alpha_bar schedulers (Ho et al. 2020, eq. 4), float32 ops. */
export function ddpmAddNoise(original: Float32Array, noise: Float32Array, alphaBar: number): Float32Array {
  checkSameLength(original, noise, "addNoise");
  const a = f(Math.sqrt(alphaBar));
  const b = f(Math.sqrt(f(1 - alphaBar)));
  return original.map((x, j) => f(a * x) + f(b * noise[j]));
}

export function checkSameLength(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  if (a.length !== b.length) throw new HarnessError(`${what}: tensors of ${a.length} and ${b.length} elements`, ExitCode.internal);
}

/** Refuse diffusers options this harness does not implement, naming the key. */
export function rejectUnsupported(config: SchedulerConfig, className: string, keys: Readonly<Record<string, (v: unknown) => boolean>>): void {
  for (const [key, bad] of Object.entries(keys)) {
    const v = config.raw[key];
    if (v !== undefined && v !== null && bad(v)) {
      throw new HarnessError(`${className}: ${key}=${JSON.stringify(v)} is not supported by this harness`, ExitCode.usage);
    }
  }
}

/** The noise draw of a stochastic step: `randn(dims)` from the caller's generator, required. */
export function drawNoise(noise: { randn(dims: readonly number[]): Float32Array } | undefined, dims: readonly number[] | undefined, length: number, who: string): Float32Array {
  if (!noise) throw new HarnessError(`${who} is stochastic: step() needs a NoiseSource`, ExitCode.internal);
  const shape = dims ?? [length];
  const out = noise.randn(shape);
  if (out.length !== length) throw new HarnessError(`${who}: noise of ${out.length} elements for a ${length}-element sample`, ExitCode.internal);
  return out;
}
