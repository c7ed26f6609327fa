/**
 * Beta and sigma schedules as small pure functions: the training betas and alphas_cumprod, the
 * inference timesteps per timestep_spacing, the training sigmas, their re-spacing (Karras,
 * exponential, beta: sigma-schedules.ts) with fractional timesteps, and the final sigma.
 * Each reproduces diffusers' arithmetic and precision (see float32.ts).
 */
import { HarnessError, ExitCode, invalid, param } from "../errors";
import { npArange, npInterp, npLinspace, npLogF32, npRound, torchLinspaceF32 } from "./float32";
import { respacedSigmas } from "./sigma-schedules";
import { SchedulerConfig, SigmaScheduleName, TimestepSpacing } from "./types";

const f = Math.fround;

/**
 * betas_for_alpha_bar with the cosine alpha_bar of Nichol & Dhariwal (2021), eq. 17,
 * clipped at max_beta 0.999 (computed in float64 as diffusers does, then cast to float32).
 */
function cosineBetas(n: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number) => {
    const c = Math.cos((((t + 0.008) / 1.008) * Math.PI) / 2);
    return c * c; // Python's `** 2` on a float is exactly c * c
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta);
  }
  return out;
}

/** The training betas (float32) from the config. */
function makeBetas(config: SchedulerConfig): Float32Array {
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
function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
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
  if (n > N) throw invalid("numInferenceSteps")`${param("numInferenceSteps")} ${n} exceeds the scheduler's ${N} training timesteps`;
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
function trainingSigmas(alphasCum: Float32Array): Float32Array {
  return alphasCum.map((a) => f(Math.sqrt(f(f(1 - a) / a))));
}

/**
 * The (fractional) training timestep whose log-sigma is `sigma`'s, by linear interpolation in
 * log-sigma between neighbouring training timesteps (diffusers' _sigma_to_t). `logSigmas` are
 * np.log of the float32 training sigmas, i.e. float32 values from npLogF32; sigma is float64.
 */
function sigmaToT(sigma: number, logSigmas: ArrayLike<number>): number {
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

/**
 * The float32 timesteps of the k-diffusion family (Euler, Euler ancestral, LMS, and Heun before its
 * doubling), per timestep_spacing: np.linspace(0, N-1, n, dtype=float32) without rounding for
 * "linspace"; integers (+ steps_offset) for "leading"; round(arange(N, 0, -N/n)) - 1 for "trailing".
 * Descending, float32 values held in float64.
 */
function sigmaTimesteps(config: SchedulerConfig, n: number): Float64Array {
  const N = config.numTrainTimesteps;
  switch (config.timestepSpacing) {
    case "linspace":
      return npLinspace(0, N - 1, n)
        .map(f)
        .reverse();
    case "leading": {
      const ratio = Math.floor(N / n);
      return Float64Array.from({ length: n }, (_, i) => f((n - 1 - i) * ratio) + config.stepsOffset).map(f);
    }
    case "trailing":
      return npArange(N, 0, -N / n).map((t) => f(f(npRound(t)) - 1));
  }
}

/** Training sigmas at (fractional) timesteps: np.interp(t, arange(N), sigmas) in float64. */
function interpSigmas(timesteps: ArrayLike<number>, trainSigmas: Float32Array): Float64Array {
  const xp = Float64Array.from({ length: trainSigmas.length }, (_, i) => i);
  return Float64Array.from(timesteps, (t) => npInterp(t, xp, trainSigmas));
}

/**
 * A re-spaced sigma schedule (Karras, exponential or beta) and its fractional timesteps, as
 * EulerDiscrete / LMS / Heun's set_timesteps build it: sigma_max, sigma_min = the interpolated
 * sigmas' ends; t from _sigma_to_t on log-sigmas computed by numpy's float32 log (npLogF32).
 */
function respacedSchedule(
  name: Exclude<SigmaScheduleName, "default">,
  interpolated: Float64Array,
  trainSigmas: Float32Array,
  n: number,
): { sigmas: Float64Array; timesteps: Float64Array } {
  const sigmas = respacedSigmas(name, n, interpolated[interpolated.length - 1], interpolated[0]);
  const logSigmas = trainSigmas.map(npLogF32);
  return { sigmas, timesteps: sigmas.map((s) => sigmaToT(s, logSigmas)) };
}

/** A float64 schedule cast to float32 with a final sigma appended (np.concatenate(...).astype(float32)). */
function withFinalSigma(sigmas: ArrayLike<number>, last: number): Float32Array {
  const out = new Float32Array(sigmas.length + 1);
  out.set(Float32Array.from(sigmas));
  out[sigmas.length] = last;
  return out;
}

/**
 * The sigma after the last step, per final_sigmas_type: 0 (denoise fully) or sigma_min, the smallest
 * sigma of the schedule the caller names (the training sigma_min, or a re-spaced schedule's own for UniPC).
 */
function finalSigma(finalSigmasType: string, sigmaMin: number, className: string): number {
  switch (finalSigmasType) {
    case "zero":
      return 0;
    case "sigma_min":
      return sigmaMin;
    default:
      throw new HarnessError(
        `${className}: final_sigmas_type must be "zero" or "sigma_min", got ${JSON.stringify(finalSigmasType)}`,
        ExitCode.usage,
      );
  }
}

/**
 * The sigma schedule of the k-diffusion family (Euler, Euler ancestral, LMS, Heun before its
 * doubling): float32 timesteps per timestep_spacing, the training sigmas interpolated at them in
 * float64 (np.interp), optionally re-spaced (config.sigmaSchedule: Karras, exponential or beta)
 * between those sigmas' ends with fractional timesteps recovered by log-sigma interpolation, then
 * the final sigma; and init_noise_sigma.
 */
export function kDiffusionSchedule(
  config: SchedulerConfig,
  numInferenceSteps: number,
  className: string,
  opts: { sigmaSchedule: SigmaScheduleName; finalSigmasType: string },
): { alphasCumprod: Float32Array; timesteps: Float32Array; sigmas: Float32Array; initNoiseSigma: number } {
  const { alphasCumprod } = trainingSchedule(config);
  if (config.rescaleBetasZeroSnr) alphasCumprod[alphasCumprod.length - 1] = 2 ** -24; // first sigma finite
  const train = trainingSigmas(alphasCumprod);
  let ts = sigmaTimesteps(config, numInferenceSteps);
  let sig = interpSigmas(ts, train);
  if (opts.sigmaSchedule !== "default") {
    const k = respacedSchedule(opts.sigmaSchedule, sig, train, numInferenceSteps);
    sig = k.sigmas;
    ts = k.timesteps;
  }
  const sigmas = withFinalSigma(sig, finalSigma(opts.finalSigmasType, train[0], className));
  return { alphasCumprod, timesteps: Float32Array.from(ts), sigmas, initNoiseSigma: kInitNoiseSigma(sigmas, config.timestepSpacing) };
}

/** init_noise_sigma of the k-diffusion family: max sigma, or sqrt(max^2 + 1) for "leading" spacing. */
function kInitNoiseSigma(sigmas: Float32Array, spacing: TimestepSpacing): number {
  let m = -Infinity;
  for (const s of sigmas) m = Math.max(m, s);
  return spacing === "leading" ? f(Math.sqrt(f(f(m * m) + 1))) : m;
}

/**
 * The integer timesteps DPM-Solver and UniPC share: n + 1 points per timestep_spacing with the last
 * (t = 0 end) dropped for "linspace" / "leading", round(arange(last, 0, -N/n)) - 1 for "trailing".
 * `last` is the number of usable training timesteps (N unless lambda_min_clipped cuts the tail).
 */
function solverTimesteps(config: SchedulerConfig, n: number, last: number): number[] {
  const N = config.numTrainTimesteps;
  switch (config.timestepSpacing) {
    case "linspace":
      return Array.from(npLinspace(0, last - 1, n + 1), npRound)
        .reverse()
        .slice(0, n);
    case "leading": {
      const ratio = Math.floor(last / (n + 1));
      return Array.from({ length: n }, (_, k) => npRound((n - k) * ratio) + config.stepsOffset);
    }
    case "trailing":
      return Array.from(npArange(last, 0, -N / n), (t) => npRound(t) - 1);
  }
}

/**
 * The schedule of the multistep solvers (DPM-Solver, UniPC), as their set_timesteps build it: integer
 * timesteps per timestep_spacing (solverTimesteps) with the training sigmas interpolated at them, or
 * a re-spaced schedule (Karras, exponential, beta) between the training schedule's ends with integer
 * timesteps from log-sigma interpolation: rounded for Karras, truncated (the int64 cast) for
 * exponential and beta; then the final sigma. Where diffusers' two classes differ, `opts` says how:
 * how many training timesteps are usable, whether Karras timesteps are truncated instead of rounded,
 * and which sigma_min final_sigmas_type "sigma_min" means under a re-spaced schedule.
 */
export function solverSchedule(
  config: SchedulerConfig,
  n: number,
  className: string,
  opts: {
    usableTimesteps: (alphasCumprod: Float32Array) => number;
    truncateKarrasTimesteps: boolean;
    respacedSigmaMin: "training" | "schedule";
  },
): { timesteps: Float32Array; sigmas: Float32Array } {
  const { alphasCumprod } = trainingSchedule(config);
  const trainSigmas = trainingSigmas(alphasCumprod);
  const N = trainSigmas.length;
  let timesteps: number[];
  let sigmas: Float64Array;
  let sigmaMin = trainSigmas[0];
  const schedule = config.sigmaSchedule;
  if (schedule !== "default") {
    sigmas = respacedSigmas(schedule, n, trainSigmas[0], trainSigmas[N - 1]);
    const logSigmas = trainSigmas.map(npLogF32);
    const round = schedule === "karras" && !opts.truncateKarrasTimesteps;
    timesteps = Array.from(sigmas, (s) => {
      const t = sigmaToT(s, logSigmas);
      return round ? npRound(t) : Math.trunc(t);
    });
    if (opts.respacedSigmaMin === "schedule") sigmaMin = sigmas[sigmas.length - 1];
  } else {
    timesteps = solverTimesteps(config, n, opts.usableTimesteps(alphasCumprod));
    const xp = Float64Array.from({ length: N }, (_, k) => k);
    sigmas = Float64Array.from(timesteps, (t) => npInterp(t, xp, trainSigmas));
  }
  return {
    timesteps: Float32Array.from(timesteps),
    sigmas: withFinalSigma(sigmas, finalSigma(config.finalSigmasType, sigmaMin, className)),
  };
}
