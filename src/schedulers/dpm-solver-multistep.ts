/**
 * Multistep DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
 * Probabilistic Models", arXiv:2211.01095), as diffusers 0.35.2's DPMSolverMultistepScheduler with
 * algorithm_type "dpmsolver++": "DPM++ 2M" (solver_order 2) by default, also orders 1 and 3, the
 * "midpoint" and "heun" second-order variants, Karras / exponential / beta sigmas, and final sigma 0
 * or sigma_min.
 *
 * The solver integrates the diffusion ODE in the log-SNR time lambda = log(alpha_t / sigma_t) on the
 * data-prediction model x0(x_t) (eq. 9), so each step needs alpha, sigma and lambda at two or three
 * schedule points; the history of x0 predictions lives in the explicit state:
 *   modelOutputs   the last `solver_order` converted outputs (oldest first),
 *   lowerOrderNums how many steps this run has taken (capped at solver_order): the warm-up that
 *                  forces first order on the first step and second order on the second.
 *
 * Precision, mirroring diffusers: set_timesteps is numpy float64 cast to float32; every step quantity
 * (alpha_t, sigma_t, lambda, h, the coefficients) is a float32 0-dim torch tensor and every tensor
 * op is float32 -- each is rounded with Math.fround here, in diffusers' order of evaluation. The one
 * thing not reproduced is torch's CPU float32 sqrt / log / exp: they are MKL VML "HA" routines,
 * faithfully but not correctly rounded (sqrt even refines the host's vrsqrtps estimate, so it is
 * CPU-dependent). We use correctly rounded values; against traces made with correctly rounded torch
 * functions the port is bit-exact, against plain traces a lambda or alpha can be an ulp off, which
 * shows as a few ulps in the samples.
 */
import { HarnessError, ExitCode } from "../errors";
import { COMMON_DEFAULTS, rejectUnsupported } from "./config";
import { checkSameLength, lambdaAt, logF32, vpAlphaSigma, vpPredictX0 } from "./k-diffusion";
import { solverSchedule } from "./noise-schedules";
import { PredictionType, Scheduler, SchedulerConfig, SchedulerDescriptor, SchedulerOptions, StepResult } from "./types";
import { callIndexCheck, checkStepCount } from "./families";

const f = Math.fround;
const NAME = "DPMSolverMultistepScheduler";

/** float32 exp of a scalar, correctly rounded (see the precision note above). */
const expF32 = (x: number): number => f(Math.exp(x));

/** `raw` config value that may be a number, a JSON-unfriendly infinity spelled as a string, or null. */
function rawNumber(config: SchedulerConfig, key: string, fallback: number): number {
  const v = config.raw[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v === "number") return v;
  if (typeof v === "string" && /^-?(inf|infinity)$/i.test(v)) return v.startsWith("-") ? -Infinity : Infinity;
  throw new HarnessError(`${NAME}: ${key} must be a number, got ${JSON.stringify(v)}`, ExitCode.usage);
}

/**
 * Number of training timesteps kept by lambda_min_clipped: torch.searchsorted(flip(lambda_t), clip)
 * counts the training lambdas (float32, log-SNR per training step) below the threshold.
 */
function lastTimestep(alphasCumprod: Float32Array, lambdaMinClipped: number): number {
  if (lambdaMinClipped === -Infinity) return alphasCumprod.length;
  let below = 0;
  for (const a of alphasCumprod) {
    const lambda = f(logF32(f(Math.sqrt(a))) - logF32(f(Math.sqrt(f(1 - a)))));
    if (lambda < lambdaMinClipped) below++;
  }
  return alphasCumprod.length - below;
}

/**
 * The data prediction x0 = D(x_t) that DPM-Solver++ integrates (Lu et al. 2022b, eq. 9), from the
 * model's epsilon / v / x0 output, in float32 ops.
 */
function dataPrediction(prediction: PredictionType, modelOutput: Float32Array, sample: Float32Array, sigma: number): Float32Array {
  const vp = vpAlphaSigma(sigma);
  return vpPredictX0(prediction, modelOutput, sample, vp.alpha, vp.sigma);
}

interface DpmState {
  modelOutputs: (Float32Array | null)[];
  lowerOrderNums: number;
}

function dpmState(state: DpmState, order: number): DpmState {
  const s = state as Partial<DpmState>;
  if (!Array.isArray(s.modelOutputs) || s.modelOutputs.length !== order || typeof s.lowerOrderNums !== "number") {
    throw new HarnessError(`${NAME}: step() was given a state not made by its initialState()`, ExitCode.internal);
  }
  return s as DpmState;
}

/** The schedule quantities of one solver step, at s0 = sigmas[i] (current) and t = sigmas[i+1]. */
interface StepPoints {
  readonly alphaT: number;
  readonly sigmaT: number;
  readonly sigmaS0: number;
  readonly lambdaS0: number;
  /** h = lambda_t - lambda_s0 */
  readonly h: number;
}

function stepPoints(sigmas: Float32Array, i: number): StepPoints {
  const t = vpAlphaSigma(sigmas[i + 1]);
  const s0 = vpAlphaSigma(sigmas[i]);
  const lambdaT = f(logF32(t.alpha) - logF32(t.sigma));
  const lambdaS0 = f(logF32(s0.alpha) - logF32(s0.sigma));
  return { alphaT: t.alpha, sigmaT: t.sigma, sigmaS0: s0.sigma, lambdaS0, h: f(lambdaT - lambdaS0) };
}

/**
 * DPM-Solver++(1) (Lu et al. 2022b, eq. 10; DDIM in disguise):
 * x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D0.
 */
function firstOrderUpdate(p: StepPoints, sample: Float32Array, d0: Float32Array): Float32Array {
  const ratio = f(p.sigmaT / p.sigmaS0);
  const c0 = f(p.alphaT * f(expF32(-p.h) - 1));
  const out = new Float32Array(sample.length);
  for (let j = 0; j < out.length; j++) out[j] = f(ratio * sample[j]) - f(c0 * d0[j]);
  return out;
}

/**
 * Multistep DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2): with r0 = h_{i-1} / h_i and the
 * backward difference D1 = (m0 - m1) / r0,
 *   midpoint: x_t = (sigma_t/sigma_s0) x - alpha_t (e^{-h} - 1) D0 - 0.5 alpha_t (e^{-h} - 1) D1
 *   heun:     x_t = (sigma_t/sigma_s0) x - alpha_t (e^{-h} - 1) D0 + alpha_t ((e^{-h} - 1)/h + 1) D1
 */
function secondOrderUpdate(
  p: StepPoints,
  lambdaS1: number,
  sample: Float32Array,
  m0: Float32Array,
  m1: Float32Array,
  heun: boolean,
): Float32Array {
  const h0 = f(p.lambdaS0 - lambdaS1);
  const r0 = f(h0 / p.h);
  const invR0 = f(1 / r0);
  const em1 = f(expF32(-p.h) - 1);
  const ratio = f(p.sigmaT / p.sigmaS0);
  const c0 = f(p.alphaT * em1);
  const c1 = heun ? f(p.alphaT * f(f(em1 / p.h) + 1)) : f(0.5 * c0);
  const out = new Float32Array(sample.length);
  for (let j = 0; j < out.length; j++) {
    const d1 = f(invR0 * f(m0[j] - m1[j]));
    const base = f(f(ratio * sample[j]) - f(c0 * m0[j]));
    out[j] = heun ? base + f(c1 * d1) : base - f(c1 * d1);
  }
  return out;
}

/**
 * Multistep DPM-Solver++(3M) (Lu et al. 2022b, Appendix; diffusers' third-order update): the first
 * and second divided differences D1, D2 of the last three x0 predictions in lambda.
 */
function thirdOrderUpdate(
  p: StepPoints,
  lambdaS1: number,
  lambdaS2: number,
  sample: Float32Array,
  m0: Float32Array,
  m1: Float32Array,
  m2: Float32Array,
): Float32Array {
  const h0 = f(p.lambdaS0 - lambdaS1);
  const h1 = f(lambdaS1 - lambdaS2);
  const r0 = f(h0 / p.h);
  const r1 = f(h1 / p.h);
  const invR0 = f(1 / r0);
  const invR1 = f(1 / r1);
  const r01 = f(r0 + r1);
  const mix = f(r0 / r01);
  const invR01 = f(1 / r01);
  const em1 = f(expF32(-p.h) - 1);
  const ratio = f(p.sigmaT / p.sigmaS0);
  const c0 = f(p.alphaT * em1);
  const c1 = f(p.alphaT * f(f(em1 / p.h) + 1));
  const c2 = f(p.alphaT * f(f(f(em1 + p.h) / f(p.h * p.h)) - 0.5));
  const out = new Float32Array(sample.length);
  for (let j = 0; j < out.length; j++) {
    const d10 = f(invR0 * f(m0[j] - m1[j]));
    const d11 = f(invR1 * f(m1[j] - m2[j]));
    const diff = f(d10 - d11);
    const d1 = f(d10 + f(mix * diff));
    const d2 = f(invR01 * diff);
    const acc = f(f(f(ratio * sample[j]) - f(c0 * m0[j])) + f(c1 * d1));
    out[j] = acc - f(c2 * d2);
  }
  return out;
}

function createDpmSolverMultistepScheduler(
  config: SchedulerConfig,
  numInferenceSteps: number,
  _opts?: SchedulerOptions,
): Scheduler<DpmState> {
  rejectUnsupported(config, NAME, {
    algorithm_type: (v) => v !== "dpmsolver++" && v !== "deis",
    thresholding: (v) => v === true,
    variance_type: (v) => v === "learned" || v === "learned_range",
    use_lu_lambdas: (v) => v === true,
    use_flow_sigmas: (v) => v === true,
    use_dynamic_shifting: (v) => v === true,
  });
  checkStepCount(NAME, numInferenceSteps);
  // diffusers maps the UniPC / DEIS solver names onto its own midpoint solver
  const solverType =
    config.solverType === "heun" ? "heun" : ["midpoint", "bh1", "bh2", "logrho"].includes(config.solverType) ? "midpoint" : null;
  if (solverType === null)
    throw new HarnessError(`${NAME}: solver_type ${JSON.stringify(config.solverType)} is not implemented`, ExitCode.usage);
  const solverOrder = config.solverOrder;
  const eulerAtFinal = config.raw.euler_at_final === true;
  // diffusers' set_timesteps: under Karras sigmas the cosine schedule's timesteps are truncated by
  // the int64 cast, the others rounded (exponential / beta ones always truncated); lambda_min_clipped
  // drops the tail of the training timesteps
  const lambdaMinClipped = rawNumber(config, "lambda_min_clipped", -Infinity);
  const { timesteps, sigmas } = solverSchedule(config, numInferenceSteps, NAME, {
    usableTimesteps: (alphasCumprod) => lastTimestep(alphasCumprod, lambdaMinClipped),
    truncateKarrasTimesteps: config.betaSchedule === "squaredcos_cap_v2",
    respacedSigmaMin: "training",
  });
  const calls = timesteps.length;

  const checkIndex = callIndexCheck(NAME, calls);

  return {
    name: dpmSolverMultistepDescriptor.id,
    config,
    numInferenceSteps: calls,
    timesteps,
    sigmas,
    order: 1,
    initNoiseSigma: 1,
    initialState: (): DpmState => ({ modelOutputs: new Array<Float32Array | null>(solverOrder).fill(null), lowerOrderNums: 0 }),

    /** DPM-Solver feeds x_t to the model unscaled. */
    scaleModelInput(sample: Float32Array, i: number): Float32Array {
      checkIndex(i);
      return sample;
    },

    step(modelOutput: Float32Array, i: number, sample: Float32Array, rawState: DpmState): StepResult {
      checkIndex(i);
      checkSameLength(modelOutput, sample, `${NAME}.step`);
      const state = dpmState(rawState, solverOrder);

      // 1. The data prediction x0(x_i, t_i) (Lu et al. 2022b, eq. 9) joins the history.
      const x0 = dataPrediction(config.predictionType, modelOutput, sample, sigmas[i]);
      state.modelOutputs.shift();
      state.modelOutputs.push(x0);
      const m1 = state.modelOutputs[solverOrder - 2];
      const m2 = state.modelOutputs[solverOrder - 3];

      // 2. The order: warm-up (Algorithm 2 starts with one first-order step) and, as the paper advises
      //    for fewer than 15 steps, lower orders at the end; a final sigma of 0 (lambda = +inf) only
      //    admits the first-order step.
      const shortRun = config.lowerOrderFinal && calls < 15;
      const lowerOrderFinal = i === calls - 1 && (eulerAtFinal || shortRun || config.finalSigmasType === "zero");
      const lowerOrderSecond = i === calls - 2 && shortRun;

      // 3. The multistep update from lambda_{s0} to lambda_t (Algorithm 2, lines 3-6).
      const points = stepPoints(sigmas, i);
      let prev: Float32Array;
      if (solverOrder === 1 || state.lowerOrderNums < 1 || lowerOrderFinal) {
        prev = firstOrderUpdate(points, sample, x0);
      } else if (solverOrder === 2 || state.lowerOrderNums < 2 || lowerOrderSecond) {
        prev = secondOrderUpdate(points, lambdaAt(sigmas[i - 1]), sample, x0, m1 as Float32Array, solverType === "heun");
      } else {
        prev = thirdOrderUpdate(
          points,
          lambdaAt(sigmas[i - 1]),
          lambdaAt(sigmas[i - 2]),
          sample,
          x0,
          m1 as Float32Array,
          m2 as Float32Array,
        );
      }
      if (state.lowerOrderNums < solverOrder) state.lowerOrderNums++;
      return { prevSample: prev, predOriginalSample: x0 };
    },

    /** q(x_t | x_0) at sigmas[i]: alpha_t x0 + sigma_t noise (float32 ops). */
    addNoise(original: Float32Array, noise: Float32Array, i: number): Float32Array {
      checkIndex(i);
      checkSameLength(original, noise, `${NAME}.addNoise`);
      const { alpha, sigma } = vpAlphaSigma(sigmas[i]);
      return original.map((x, j) => f(alpha * x) + f(sigma * noise[j]));
    },
  };
}

const DPM_DEFAULTS = {
  ...COMMON_DEFAULTS,
  timestep_spacing: "linspace",
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  variance_type: null,
  solver_order: 2,
  algorithm_type: "dpmsolver++",
  solver_type: "midpoint",
  lower_order_final: true,
  final_sigmas_type: "zero",
  rescale_betas_zero_snr: false,
  thresholding: false,
} as const;

export const dpmSolverMultistepDescriptor: SchedulerDescriptor = {
  id: "dpm++2m",
  className: NAME,
  a1111Name: "DPM++ 2M",
  defaults: DPM_DEFAULTS,
  sigmaSchedules: ["default", "karras", "exponential", "beta"],
  create: (c, n, o) => createDpmSolverMultistepScheduler(c, n, o),
};

/** The same solver on Karras sigmas, a choice of its own because A1111 and users name it so. */
export const dpmSolverMultistepKarrasDescriptor: SchedulerDescriptor = {
  ...dpmSolverMultistepDescriptor,
  id: "dpm++2m-karras",
  a1111Name: "DPM++ 2M Karras",
  overrides: { use_karras_sigmas: true },
  sigmaSchedules: ["karras"],
};
