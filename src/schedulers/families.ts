/**
 * The scheduler fields a family shares, so that a scheduler file holds only its own algorithm:
 * - the variance-preserving schedulers without sigmas (DDIM, DDPM, PNDM): the U-Net input as it
 *   is, unit initial noise, one model call per step, and img2img's q(x_t | x_0) at the alpha-bar of
 *   call i's timestep;
 * - the k-diffusion sigma schedulers with one call per step (Euler, Euler ancestral, LMS): the
 *   input scaled by 1 / sqrt(sigma² + 1) and x_t = x_0 + sigma_i · noise.
 */
import { HarnessError, ExitCode } from "../errors";
import { ddpmAddNoise, kAddNoise, kScaleInput } from "./k-diffusion";
import { Scheduler, SchedulerConfig } from "./types";

interface Own<S> {
  readonly name: string;
  readonly config: SchedulerConfig;
  readonly numInferenceSteps: number;
  readonly timesteps: Float32Array;
  readonly initialState: () => S;
  readonly step: Scheduler<S>["step"];
}

/** DDIM / DDPM / PNDM: `alphaBarAt(i)`, the cumulative alpha of call i's timestep. */
export function vpScheduler<S>(own: Own<S> & { readonly alphaBarAt: (i: number) => number }): Scheduler<S> {
  const { alphaBarAt, ...rest } = own;
  return {
    ...rest,
    sigmas: new Float32Array(0),
    order: 1,
    initNoiseSigma: 1,
    scaleModelInput: (sample) => sample,
    addNoise: (original, noise, i) => ddpmAddNoise(original, noise, alphaBarAt(i)),
  };
}

/** Euler / Euler ancestral / LMS: `sigmas` per call plus the final one. */
export function kScheduler<S>(own: Own<S> & { readonly sigmas: Float32Array; readonly initNoiseSigma: number }): Scheduler<S> {
  const { sigmas } = own;
  return {
    ...own,
    order: 1,
    scaleModelInput: (sample, i) => kScaleInput(sample, sigmas[i]),
    addNoise: (original, noise, i) => kAddNoise(original, noise, sigmas[i]),
  };
}

/** A factory called directly (not through createScheduler, which checks it with the parameter's name). */
export function checkStepCount(name: string, numInferenceSteps: number): void {
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1) {
    throw new HarnessError(`${name}: the number of steps must be a positive integer, got ${numInferenceSteps}`, ExitCode.usage);
  }
}

/** For the multistep schedulers, whose state depends on the call order: a call index outside 0..calls-1 is a bug. */
export function callIndexCheck(name: string, calls: number): (i: number) => void {
  return (i) => {
    if (!Number.isInteger(i) || i < 0 || i >= calls)
      throw new HarnessError(`${name}: call index ${i} outside 0..${calls - 1}`, ExitCode.internal);
  };
}
