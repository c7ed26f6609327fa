/**
 * Heun's second-order sampler on the k-diffusion sigma schedule: Karras et al. 2022, "Elucidating the
 * Design Space of Diffusion-Based Generative Models", Algorithm 2 with S_churn = 0 (deterministic),
 * as diffusers 0.35.2's HeunDiscreteScheduler runs it.
 *
 * One Heun step from sigma_k to sigma_{k+1} costs two model calls, so diffusers lays the schedule out
 * with repeats: timesteps = [t0, t1, t1, t2, t2, ..., t_{n-1}, t_{n-1}] (2n - 1 calls) and
 * sigmas = [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0]. Call index i is
 *   - even: the Euler predictor (Alg. 2 lines 5-7) from sigmas[i] to sigmas[i+1], which leaves the
 *     derivative, the step size and the starting sample in the state ("pending");
 *   - odd: the trapezoidal corrector (Alg. 2 lines 8-11) that evaluates the model at the predicted
 *     point (sigma = sigmas[i]) and averages the two slopes, consuming "pending".
 * The final call (even, to sigma 0) is a plain Euler step, as in Alg. 2 line 8's `if sigma_{i+1} != 0`.
 * diffusers tracks the substep with a hidden `dt is None` test; here the parity of i decides and the
 * state is checked against it, so a step replayed out of order fails loudly instead of mixing slopes.
 *
 * Arithmetic mirrors diffusers' dtypes: the schedule is numpy float64 cast to float32 at the end, the
 * step runs in torch float32 (every product and sum below is rounded with Math.fround).
 */
import { HarnessError, ExitCode } from "../errors";
import { COMMON_DEFAULTS } from "./config";
import { checkSameLength, clipInPlace, kAddNoise, kPredictX0, kScaleInput, toD } from "./k-diffusion";
import { kDiffusionSchedule } from "./noise-schedules";
import { Scheduler, SchedulerConfig, SchedulerDescriptor, SchedulerOptions, StepResult } from "./types";
import { callIndexCheck, checkStepCount } from "./families";

const f = Math.fround;
const NAME = "HeunDiscreteScheduler";

/** What the Euler predictor leaves for the corrector of the same Heun step. */
interface PendingPredictor {
  /** d_i = (x_i - D(x_i; sigma_i)) / sigma_i, the slope at the start of the step (Alg. 2 line 6) */
  readonly derivative: Float32Array;
  /** sigma_{i+1} - sigma_i (float32) */
  readonly dt: number;
  /** x_i, the sample the step started from; the corrector restarts from it */
  readonly sample: Float32Array;
}

interface HeunState {
  pending: PendingPredictor | null;
}

function heunState(state: HeunState): HeunState {
  if (!("pending" in state)) throw new HarnessError(`${NAME}: step() was given a state not made by its initialState()`, ExitCode.internal);
  return state;
}

/** [a0, a1, a2, ...] -> [a0, a1, a1, a2, a2, ...] (torch.cat([a[:1], a[1:].repeat_interleave(2)])) */
function repeatAfterFirst(values: ArrayLike<number>): Float32Array {
  const out = new Float32Array(values.length === 0 ? 0 : 2 * values.length - 1);
  if (values.length === 0) return out;
  out[0] = values[0];
  for (let k = 1; k < values.length; k++) {
    out[2 * k - 1] = values[k];
    out[2 * k] = values[k];
  }
  return out;
}

function createHeunScheduler(config: SchedulerConfig, numInferenceSteps: number, _opts?: SchedulerOptions): Scheduler<HeunState> {
  checkStepCount(NAME, numInferenceSteps);
  // the k-diffusion schedule before Heun's doubling, always ending at sigma 0
  const schedule = kDiffusionSchedule(config, numInferenceSteps, NAME, { sigmaSchedule: config.sigmaSchedule, finalSigmasType: "zero" });
  const baseSigmas = schedule.sigmas; // [s0 .. s_{n-1}, 0]
  // sigmas[i] for every model call i, plus the final 0: [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0]
  const sigmas = new Float32Array(2 * baseSigmas.length - 2);
  sigmas.set(repeatAfterFirst(baseSigmas.subarray(0, baseSigmas.length - 1)));
  sigmas[sigmas.length - 1] = baseSigmas[baseSigmas.length - 1];
  const timesteps = repeatAfterFirst(schedule.timesteps);
  const calls = timesteps.length;

  const checkIndex = callIndexCheck(NAME, calls);

  const denoised = (modelOutput: Float32Array, sample: Float32Array, sigma: number): Float32Array => {
    const x0 = kPredictX0(config.predictionType, modelOutput, sample, sigma);
    if (config.clipSample) clipInPlace(x0, config.clipSampleRange);
    return x0;
  };

  return {
    name: heunDescriptor.id,
    config,
    numInferenceSteps,
    timesteps,
    sigmas,
    order: 2,
    initNoiseSigma: schedule.initNoiseSigma,
    initialState: (): HeunState => ({ pending: null }),

    scaleModelInput(sample: Float32Array, i: number): Float32Array {
      checkIndex(i);
      return kScaleInput(sample, sigmas[i]);
    },

    step(modelOutput: Float32Array, i: number, sample: Float32Array, rawState: HeunState): StepResult {
      checkIndex(i);
      checkSameLength(modelOutput, sample, `${NAME}.step`);
      const state = heunState(rawState);
      const predictorCall = i % 2 === 0;
      if (predictorCall !== (state.pending === null)) {
        throw new HarnessError(
          `${NAME}: call ${i} is ${predictorCall ? "a predictor" : "a corrector"} substep but the state ${state.pending ? "holds an unfinished predictor" : "has no predictor to correct"}`,
          ExitCode.internal,
        );
      }
      const out = new Float32Array(sample.length);

      if (predictorCall) {
        // Alg. 2 lines 5-7: Euler step from sigma_i to sigma_{i+1} with the slope at x_i.
        // (gamma = 0, so sigma_hat = sigma_i exactly.)
        const sigma = sigmas[i];
        const sigmaNext = sigmas[i + 1];
        const x0 = denoised(modelOutput, sample, sigma);
        const derivative = toD(sample, x0, sigma);
        const dt = f(sigmaNext - sigma);
        for (let j = 0; j < out.length; j++) out[j] = sample[j] + f(derivative[j] * dt);
        state.pending = { derivative, dt, sample: Float32Array.from(sample) };
        return { prevSample: out, predOriginalSample: x0 };
      }

      // Alg. 2 lines 8-11: the model was evaluated at the Euler point x_{i+1}' (sigma = sigmas[i]);
      // average its slope with the predictor's and redo the step from the stored x_i.
      const pending = state.pending as PendingPredictor;
      const sigmaNext = sigmas[i];
      const x0 = denoised(modelOutput, sample, sigmaNext);
      const derivative2 = toD(sample, x0, sigmaNext);
      for (let j = 0; j < out.length; j++) {
        const mean = f(pending.derivative[j] + derivative2[j]) / 2;
        out[j] = pending.sample[j] + f(mean * pending.dt);
      }
      state.pending = null;
      return { prevSample: out, predOriginalSample: x0 };
    },

    addNoise(original: Float32Array, noise: Float32Array, i: number): Float32Array {
      checkIndex(i);
      return kAddNoise(original, noise, sigmas[i]);
    },
  };
}

export const heunDescriptor: SchedulerDescriptor = {
  id: "heun",
  className: NAME,
  a1111Name: "Heun",
  defaults: {
    ...COMMON_DEFAULTS,
    beta_start: 0.00085,
    beta_end: 0.012,
    timestep_spacing: "linspace",
    clip_sample: false,
    clip_sample_range: 1.0,
    use_karras_sigmas: false,
    use_exponential_sigmas: false,
    use_beta_sigmas: false,
  },
  sigmaSchedules: ["default", "karras", "exponential", "beta"],
  create: (c, n, o) => createHeunScheduler(c, n, o),
};
