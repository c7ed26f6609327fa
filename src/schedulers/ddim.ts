/**
 * DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models"), as diffusers 0.35.2's
 * DDIMScheduler computes it, in float32 operation by operation so results match to the bit.
 *
 * Random draws: only when eta > 0, exactly one `randn(dims)` per step, AFTER the deterministic
 * part (diffusers' randn_tensor(model_output.shape, generator)), at every step including the last.
 */
import { HarnessError, ExitCode } from "../errors";
import { COMMON_DEFAULTS, rejectUnsupported } from "./config";
import { at } from "./float32";
import { alphaBarAlphaSigma, clipInPlace, drawNoise, vpPredictNoise, vpPredictX0 } from "./k-diffusion";
import { discreteTimesteps, trainingSchedule } from "./noise-schedules";
import { NoiseSource, NoState, Scheduler, SchedulerConfig, SchedulerDescriptor, SchedulerOptions, StepResult } from "./types";
import { vpScheduler } from "./families";

const f = Math.fround;

function createDDIMScheduler(config: SchedulerConfig, numInferenceSteps: number, opts: SchedulerOptions = {}): Scheduler<NoState> {
  rejectUnsupported(config, "DDIMScheduler", { thresholding: (v) => v === true });
  const eta = opts.eta ?? 0;
  if (!(eta >= 0) || !Number.isFinite(eta)) throw new HarnessError(`DDIM eta must be a number >= 0, got ${eta}`, ExitCode.usage);
  const { alphasCumprod: ac } = trainingSchedule(config);
  const steps = discreteTimesteps(config, numInferenceSteps);
  const timesteps = Float32Array.from(steps);
  // set_alpha_to_one: the "previous" alpha_bar of the last step is 1 (or alpha_bar_0)
  const finalAlphaCumprod = config.setAlphaToOne ? 1 : ac[0];
  // DDIM always steps back by the leading ratio, even under linspace / trailing spacing
  const ratio = Math.floor(config.numTrainTimesteps / numInferenceSteps);

  const step = (
    modelOutput: Float32Array,
    i: number,
    sample: Float32Array,
    _state: NoState,
    noise?: NoiseSource,
    dims?: readonly number[],
  ): StepResult => {
    // 1. previous timestep t - N / n (integer ratio)
    const t = steps[i];
    const prevT = t - ratio;
    // 2. alpha_bar_t, alpha_bar_{t-1} (torch indexing: a negative t wraps)
    const aT = at(ac, t);
    const aPrev = prevT >= 0 ? at(ac, prevT) : finalAlphaCumprod;
    // 3. predicted x0 (eq. 12, "predicted x0") and epsilon
    const vp = alphaBarAlphaSigma(aT);
    const x0 = vpPredictX0(config.predictionType, modelOutput, sample, vp.alpha, vp.sigma);
    const eps = vpPredictNoise(config.predictionType, modelOutput, sample, vp.alpha, vp.sigma);
    // 4. clip x0
    if (config.clipSample) clipInPlace(x0, config.clipSampleRange);
    // 5. sigma_t(eta) = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))   (eq. 16)
    const variance = f(f(f(1 - aPrev) / f(1 - aT)) * f(1 - f(aT / aPrev)));
    const std = f(f(eta) * f(Math.sqrt(variance)));
    // 6. "direction pointing to x_t": sqrt(1 - a_prev - sigma_t^2) * eps   (eq. 12)
    const dirCoeff = f(Math.sqrt(f(f(1 - aPrev) - f(std * std))));
    // 7. x_{t-1} = sqrt(a_prev) x0 + direction (+ sigma_t z)   (eq. 12)
    const sqrtAPrev = f(Math.sqrt(aPrev));
    const prev = new Float32Array(sample.length);
    for (let j = 0; j < prev.length; j++) prev[j] = f(sqrtAPrev * x0[j]) + f(dirCoeff * eps[j]);
    if (eta > 0) {
      const z = drawNoise(noise, dims, sample.length, "DDIM with eta > 0");
      for (let j = 0; j < prev.length; j++) prev[j] = prev[j] + f(std * z[j]);
    }
    return { prevSample: prev, predOriginalSample: x0 };
  };

  return vpScheduler({
    name: ddimDescriptor.id,
    config,
    numInferenceSteps,
    timesteps,
    initialState: (): NoState => ({}),
    step,
    alphaBarAt: (i) => at(ac, steps[i]),
  });
}

export const ddimDescriptor: SchedulerDescriptor = {
  id: "ddim",
  className: "DDIMScheduler",
  a1111Name: "DDIM",
  defaults: {
    ...COMMON_DEFAULTS,
    timestep_spacing: "leading",
    clip_sample: true,
    clip_sample_range: 1.0,
    set_alpha_to_one: true,
    rescale_betas_zero_snr: false,
    thresholding: false,
  },
  sigmaSchedules: [],
  create: (c, n, o) => createDDIMScheduler(c, n, o),
};
