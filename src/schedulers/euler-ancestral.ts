/**
 * Euler ancestral sampling (k-diffusion's sample_euler_ancestral; the ancestral split of Karras et
 * al. 2022 / Song et al. 2021's reverse SDE), as diffusers 0.35.2's EulerAncestralDiscreteScheduler
 * computes it. Each step goes down to sigma_down deterministically and adds fresh noise of std
 * sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2 (ancestralStep):
 *   sigma_up   = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)
 *   sigma_down = sqrt(sigma_next^2 - sigma_up^2)
 *   x_next = x + d (sigma_down - sigma) + sigma_up z,   d = (x - D(x; sigma)) / sigma
 *
 * Random draws: exactly one `randn(dims)` per step, after the deterministic update, at EVERY step,
 * the last included (where sigma_next = 0, so sigma_up = 0 and the draw only advances the stream).
 * Timesteps / sigmas as EulerDiscrete without Karras sigmas.
 */
import { COMMON_DEFAULTS } from "./config";
import { ancestralStep, drawNoise, kPredictX0, toD } from "./k-diffusion";
import { kDiffusionSchedule } from "./noise-schedules";
import { NoiseSource, NoState, Scheduler, SchedulerConfig, SchedulerDescriptor, StepResult } from "./types";
import { kScheduler } from "./families";

const f = Math.fround;

function createEulerAncestralScheduler(config: SchedulerConfig, numInferenceSteps: number): Scheduler<NoState> {
  const { timesteps, sigmas, initNoiseSigma } = kDiffusionSchedule(config, numInferenceSteps, "EulerAncestralDiscreteScheduler", {
    sigmaSchedule: "default",
    finalSigmasType: "zero",
  });

  const step = (
    modelOutput: Float32Array,
    i: number,
    sample: Float32Array,
    _state: NoState,
    noise?: NoiseSource,
    dims?: readonly number[],
  ): StepResult => {
    const sigma = sigmas[i];
    // 1. denoised estimate D(x; sigma)
    const x0 = kPredictX0(config.predictionType, modelOutput, sample, sigma);
    // 2. split sigma_next into the deterministic sigma_down and the noise sigma_up
    const { sigmaDown, sigmaUp } = ancestralStep(sigma, sigmas[i + 1]);
    // 3. Euler step to sigma_down
    const d = toD(sample, x0, sigma);
    const dt = f(sigmaDown - sigma);
    const prev = new Float32Array(sample.length);
    for (let j = 0; j < prev.length; j++) prev[j] = sample[j] + f(d[j] * dt);
    // 4. + sigma_up * z (one draw of the sample's shape)
    const z = drawNoise(noise, dims, sample.length, "EulerAncestralDiscreteScheduler");
    for (let j = 0; j < prev.length; j++) prev[j] = prev[j] + f(z[j] * sigmaUp);
    return { prevSample: prev, predOriginalSample: x0 };
  };

  return kScheduler({
    name: eulerAncestralDescriptor.id,
    config,
    numInferenceSteps,
    timesteps,
    sigmas,
    initNoiseSigma,
    initialState: (): NoState => ({}),
    step,
  });
}

export const eulerAncestralDescriptor: SchedulerDescriptor = {
  id: "euler-a",
  className: "EulerAncestralDiscreteScheduler",
  a1111Name: "Euler a",
  defaults: { ...COMMON_DEFAULTS, timestep_spacing: "linspace", rescale_betas_zero_snr: false },
  // diffusers 0.35.2's EulerAncestralDiscreteScheduler has no use_karras_sigmas
  sigmaSchedules: ["default"],
  create: (c, n) => createEulerAncestralScheduler(c, n),
};
