/**
 * Euler's method on the probability-flow ODE in the k-diffusion parametrisation (Karras, Aittala,
 * Aila & Laine 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
 * Algorithm 2 with S_churn = 0, i.e. its deterministic first-order part), as diffusers 0.35.2's
 * EulerDiscreteScheduler computes it:
 *   d = (x - D(x; sigma)) / sigma          (toD: eq. 1's ODE dx/dsigma)
 *   x_next = x + d (sigma_next - sigma)
 * The sigma schedule is the training sigmas sqrt((1 - a)/a) interpolated at the timesteps (or the
 * Karras rho = 7 schedule, eq. 5, with use_karras_sigmas), then a final 0 (or sigma_min).
 *
 * Random draws: none (diffusers only draws when s_churn > 0, which the pipelines never pass).
 */
import { ExitCode, HarnessError } from "../errors";
import {
  interpSigmas,
  kAddNoise,
  karrasSchedule,
  kInitNoiseSigma,
  kPredictX0,
  kScaleInput,
  rejectUnsupported,
  sigmaTimesteps,
  trainingSchedule,
  trainingSigmas,
  withFinalSigma,
} from "./schedules";
import { Scheduler, SchedulerConfig, SchedulerState, StepResult } from "./types";

const f = Math.fround;

/** The ODE derivative dx/dsigma = (x - x0) / sigma, in float32 ops (k-diffusion's to_d). */
export function toD(sample: Float32Array, x0: Float32Array, sigma: number): Float32Array {
  const d = new Float32Array(sample.length);
  for (let j = 0; j < d.length; j++) d[j] = f(sample[j] - x0[j]) / sigma;
  return d;
}

/** The sigma schedule shared by Euler, Euler ancestral and LMS: timesteps, sigmas (+ final), init sigma. */
export function kDiffusionSchedule(
  config: SchedulerConfig,
  numInferenceSteps: number,
  className: string,
  opts: { karras: boolean; finalSigmasType: string },
): { alphasCumprod: Float32Array; timesteps: Float32Array; sigmas: Float32Array; initNoiseSigma: number } {
  const { alphasCumprod } = trainingSchedule(config);
  if (config.rescaleBetasZeroSnr) alphasCumprod[alphasCumprod.length - 1] = 2 ** -24; // first sigma finite
  const train = trainingSigmas(alphasCumprod);
  let ts = sigmaTimesteps(config, numInferenceSteps);
  let sig = interpSigmas(ts, train);
  if (opts.karras) {
    const k = karrasSchedule(sig, train, numInferenceSteps);
    sig = k.sigmas;
    ts = k.timesteps;
  }
  let last: number;
  if (opts.finalSigmasType === "zero") last = 0;
  else if (opts.finalSigmasType === "sigma_min") last = train[0];
  else throw new HarnessError(`${className}: final_sigmas_type must be "zero" or "sigma_min", got ${JSON.stringify(opts.finalSigmasType)}`, ExitCode.usage);
  const sigmas = withFinalSigma(sig, last);
  return { alphasCumprod, timesteps: Float32Array.from(ts), sigmas, initNoiseSigma: kInitNoiseSigma(sigmas, config.timestepSpacing) };
}

export function createEulerScheduler(config: SchedulerConfig, numInferenceSteps: number): Scheduler {
  rejectUnsupported(config, "EulerDiscreteScheduler", {
    interpolation_type: (v) => v !== "linear",
    timestep_type: (v) => v !== "discrete",
    use_exponential_sigmas: (v) => v === true,
    use_beta_sigmas: (v) => v === true,
    sigma_min: () => true,
    sigma_max: () => true,
  });
  const { timesteps, sigmas, initNoiseSigma } = kDiffusionSchedule(config, numInferenceSteps, "EulerDiscreteScheduler", {
    karras: config.useKarrasSigmas,
    finalSigmasType: config.finalSigmasType,
  });

  const step = (modelOutput: Float32Array, i: number, sample: Float32Array, _state: SchedulerState): StepResult => {
    // 1. sigma_hat = sigma (gamma = 0 without churn)
    const sigma = sigmas[i];
    // 2. denoised estimate D(x; sigma)
    const x0 = kPredictX0(config.predictionType, modelOutput, sample, sigma);
    // 3. d = (x - D) / sigma
    const d = toD(sample, x0, sigma);
    // 4. x_next = x + d * (sigma_next - sigma)
    const dt = f(sigmas[i + 1] - sigma);
    const prev = new Float32Array(sample.length);
    for (let j = 0; j < prev.length; j++) prev[j] = sample[j] + f(d[j] * dt);
    return { prevSample: prev, predOriginalSample: x0 };
  };

  return {
    name: "euler",
    config,
    numInferenceSteps,
    timesteps,
    sigmas,
    order: 1,
    initNoiseSigma,
    initialState: () => ({}),
    scaleModelInput: (sample, i) => kScaleInput(sample, sigmas[i]),
    step,
    addNoise: (original, noise, i) => kAddNoise(original, noise, sigmas[i]),
  };
}
