/**
 * Euler's method on the probability-flow ODE in the k-diffusion parametrisation (Karras, Aittala,
 * Aila & Laine 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
 * Algorithm 2 with S_churn = 0, i.e. its deterministic first-order part), as diffusers 0.35.2's
 * EulerDiscreteScheduler computes it:
 *   d = (x - D(x; sigma)) / sigma          (toD: eq. 1's ODE dx/dsigma)
 *   x_next = x + d (sigma_next - sigma)
 * The sigma schedule is the training sigmas sqrt((1 - a)/a) interpolated at the timesteps (or
 * re-spaced between their ends: Karras, exponential or beta, see sigma-schedules.ts), then a final
 * 0 (or sigma_min).
 *
 * Random draws: none (diffusers only draws when s_churn > 0, which the pipelines never pass).
 */
import { COMMON_DEFAULTS, rejectUnsupported } from "./config";
import { kPredictX0, toD } from "./k-diffusion";
import { kDiffusionSchedule } from "./noise-schedules";
import { NoState, Scheduler, SchedulerConfig, SchedulerDescriptor, StepResult } from "./types";
import { kScheduler } from "./families";

const f = Math.fround;

function createEulerScheduler(config: SchedulerConfig, numInferenceSteps: number): Scheduler<NoState> {
  rejectUnsupported(config, "EulerDiscreteScheduler", {
    interpolation_type: (v) => v !== "linear",
    timestep_type: (v) => v !== "discrete",
    sigma_min: () => true,
    sigma_max: () => true,
  });
  const { timesteps, sigmas, initNoiseSigma } = kDiffusionSchedule(config, numInferenceSteps, "EulerDiscreteScheduler", {
    sigmaSchedule: config.sigmaSchedule,
    finalSigmasType: config.finalSigmasType,
  });

  const step = (modelOutput: Float32Array, i: number, sample: Float32Array, _state: NoState): StepResult => {
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

  return kScheduler({
    name: eulerDescriptor.id,
    config,
    numInferenceSteps,
    timesteps,
    sigmas,
    initNoiseSigma,
    initialState: (): NoState => ({}),
    step,
  });
}

export const eulerDescriptor: SchedulerDescriptor = {
  id: "euler",
  className: "EulerDiscreteScheduler",
  a1111Name: "Euler",
  defaults: {
    ...COMMON_DEFAULTS,
    timestep_spacing: "linspace",
    use_karras_sigmas: false,
    use_exponential_sigmas: false,
    use_beta_sigmas: false,
    interpolation_type: "linear",
    final_sigmas_type: "zero",
    timestep_type: "discrete",
    rescale_betas_zero_snr: false,
  },
  sigmaSchedules: ["default", "karras", "exponential", "beta"],
  create: (c, n) => createEulerScheduler(c, n),
};
