/**
 * DDPM ancestral sampling (Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models"),
 * as diffusers 0.35.2's DDPMScheduler computes it with fewer inference steps than training steps:
 * the "previous" timestep is the next entry of the schedule (-1 after the last), and the posterior
 * q(x_{t-1} | x_t, x0) of eq. 6-7 is taken between those two timesteps.
 *
 * Random draws: one `randn(dims)` per step whose timestep t > 0, after the posterior mean. A
 * "leading" schedule ends at t = steps_offset (1 for SD), so SD's last step draws too; "linspace"
 * ends at t = 0 and draws nothing there.
 */
import { COMMON_DEFAULTS, rejectUnsupported } from "./config";
import { at } from "./float32";
import { alphaBarAlphaSigma, clipInPlace, drawNoise, vpPredictX0 } from "./k-diffusion";
import { discreteTimesteps, trainingSchedule } from "./noise-schedules";
import { NoiseSource, NoState, Scheduler, SchedulerConfig, SchedulerDescriptor, StepResult } from "./types";
import { vpScheduler } from "./families";

const f = Math.fround;

function createDDPMScheduler(config: SchedulerConfig, numInferenceSteps: number): Scheduler<NoState> {
  rejectUnsupported(config, "DDPMScheduler", {
    thresholding: (v) => v === true,
    variance_type: (v) => v !== "fixed_small" && v !== "fixed_large",
  });
  const { alphasCumprod: ac } = trainingSchedule(config);
  const steps = discreteTimesteps(config, numInferenceSteps);
  const timesteps = Float32Array.from(steps);
  // previous_timestep: the next schedule entry (diffusers looks up the first occurrence of t)
  const prevOf = (i: number) => {
    const k = steps.indexOf(steps[i]);
    return k === steps.length - 1 ? -1 : steps[k + 1];
  };

  const step = (
    modelOutput: Float32Array,
    i: number,
    sample: Float32Array,
    _state: NoState,
    noise?: NoiseSource,
    dims?: readonly number[],
  ): StepResult => {
    const t = steps[i];
    const prevT = prevOf(i);
    // 1. alpha_bar_t, alpha_bar_prev, beta_bar, and this step's alpha_t = a_t / a_prev, beta_t = 1 - alpha_t
    const aT = at(ac, t);
    const aPrev = prevT >= 0 ? at(ac, prevT) : 1;
    const bT = f(1 - aT);
    const bPrev = f(1 - aPrev);
    const curA = f(aT / aPrev);
    const curB = f(1 - curA);
    // 2. predicted x0 (eq. 15)
    const vp = alphaBarAlphaSigma(aT);
    const x0 = vpPredictX0(config.predictionType, modelOutput, sample, vp.alpha, vp.sigma);
    // 3. clip x0
    if (config.clipSample) clipInPlace(x0, config.clipSampleRange);
    // 4. posterior mean coefficients (eq. 7): sqrt(a_prev) beta_t / (1 - a_t), sqrt(alpha_t) (1 - a_prev) / (1 - a_t)
    const c0 = f(f(f(Math.sqrt(aPrev)) * curB) / bT);
    const cS = f(f(f(Math.sqrt(curA)) * bPrev) / bT);
    // 5. mu = c0 x0 + cS x_t
    const prev = new Float32Array(sample.length);
    for (let j = 0; j < prev.length; j++) prev[j] = f(c0 * x0[j]) + f(cS * sample[j]);
    // 6. add sigma_t z for t > 0: fixed_small sigma^2 = (1 - a_prev) / (1 - a_t) beta_t (eq. 7's beta~),
    //    clamped at 1e-20; fixed_large sigma^2 = beta_t
    if (t > 0) {
      const z = drawNoise(noise, dims, sample.length, "DDPM");
      let variance: number;
      if (config.varianceType === "fixed_large") variance = curB;
      else variance = Math.max(f(f(bPrev / bT) * f(1 - f(aT / aPrev))), f(1e-20));
      const std = f(Math.sqrt(variance));
      for (let j = 0; j < prev.length; j++) prev[j] = prev[j] + f(std * z[j]);
    }
    return { prevSample: prev, predOriginalSample: x0 };
  };

  return vpScheduler({
    name: ddpmDescriptor.id,
    config,
    numInferenceSteps,
    timesteps,
    initialState: (): NoState => ({}),
    step,
    alphaBarAt: (i) => at(ac, steps[i]),
  });
}

export const ddpmDescriptor: SchedulerDescriptor = {
  id: "ddpm",
  className: "DDPMScheduler",
  // A1111 has no DDPM sampler; this names the algorithm (its infotext reader then falls back to its default)
  a1111Name: "DDPM",
  defaults: {
    ...COMMON_DEFAULTS,
    timestep_spacing: "leading",
    clip_sample: true,
    clip_sample_range: 1.0,
    variance_type: "fixed_small",
    rescale_betas_zero_snr: false,
    thresholding: false,
  },
  sigmaSchedules: [],
  create: (c, n) => createDDPMScheduler(c, n),
};
