/**
 * The step helpers every scheduler shares, in float32 operation by operation: k-diffusion's sigma
 * parametrisation (Karras et al. 2022: x = x0 + sigma eps) and the variance-preserving one
 * (x_t = alpha_t x0 + sigma_t eps) that DDIM / DDPM / DPM-Solver / UniPC use, plus the checks and
 * the noise draw of a stochastic step.
 */
import { HarnessError, ExitCode } from "../errors";
import { PredictionType } from "./types";

const f = Math.fround;

/** 1 / sqrt(sigma^2 + 1) input scaling of the k-diffusion family, as float32 ops: x / sqrt(s*s + 1). */
export function kScaleInput(sample: Float32Array, sigma: number): Float32Array {
  const d = f(Math.sqrt(f(f(sigma * sigma) + 1)));
  return sample.map((x) => x / d);
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

/** The noise draw of a stochastic step: `randn(dims)` from the caller's generator, required. */
export function drawNoise(
  noise: { randn(dims: readonly number[]): Float32Array } | undefined,
  dims: readonly number[] | undefined,
  length: number,
  who: string,
): Float32Array {
  if (!noise) throw new HarnessError(`${who} is stochastic: step() needs a NoiseSource`, ExitCode.internal);
  const shape = dims ?? [length];
  const out = noise.randn(shape);
  if (out.length !== length)
    throw new HarnessError(`${who}: noise of ${out.length} elements for a ${length}-element sample`, ExitCode.internal);
  return out;
}

/** The ODE derivative dx/dsigma = (x - x0) / sigma (Karras et al. 2022 eq. 3; k-diffusion's to_d). */
export function toD(sample: Float32Array, x0: Float32Array, sigma: number): Float32Array {
  const d = new Float32Array(sample.length);
  for (let j = 0; j < d.length; j++) d[j] = f(sample[j] - x0[j]) / sigma;
  return d;
}

/** sigma_down and sigma_up of an ancestral step from sigma to sigmaNext (k-diffusion's get_ancestral_step). */
export function ancestralStep(sigma: number, sigmaNext: number): { sigmaDown: number; sigmaUp: number } {
  const to2 = f(sigmaNext * sigmaNext);
  const from2 = f(sigma * sigma);
  const sigmaUp = f(Math.sqrt(f(f(to2 * f(from2 - to2)) / from2)));
  const sigmaDown = f(Math.sqrt(f(to2 - f(sigmaUp * sigmaUp))));
  return { sigmaDown, sigmaUp };
}

/** float32 log of a scalar, correctly rounded (torch's MKL log may differ by an ulp; see dpm-solver-multistep.ts). */
export const logF32 = (x: number): number => f(Math.log(x));

/**
 * alpha_t and sigma_t of the variance-preserving process from the k-diffusion sigma = sigma_t/alpha_t:
 * alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t (diffusers' _sigma_to_alpha_sigma_t,
 * float32 ops).
 */
export function vpAlphaSigma(sigma: number): { alpha: number; sigma: number } {
  const alpha = f(1 / f(Math.sqrt(f(f(sigma * sigma) + 1))));
  return { alpha, sigma: f(sigma * alpha) };
}

/** The half log-SNR lambda = log(alpha_t) - log(sigma_t) at a schedule sigma (+Infinity at sigma 0). */
export function lambdaAt(sigma: number): number {
  const vp = vpAlphaSigma(sigma);
  return f(logF32(vp.alpha) - logF32(vp.sigma));
}

/**
 * The clean-sample estimate x0 of the variance-preserving parametrisation x_t = alpha_t x0 + sigma_t eps
 * (DDIM eq. 12's "predicted x0"; DPM-Solver++'s data prediction, Lu et al. 2022b eq. 9), per
 * prediction type: epsilon: (x - sigma_t eps) / alpha_t; v (Salimans & Ho 2022): alpha_t x - sigma_t v;
 * sample: the model output. DDIM / DDPM pass alpha_t = sqrt(a_bar), sigma_t = sqrt(1 - a_bar).
 */
export function vpPredictX0(
  prediction: PredictionType,
  modelOutput: Float32Array,
  sample: Float32Array,
  alpha: number,
  sigma: number,
): Float32Array {
  const out = new Float32Array(sample.length);
  switch (prediction) {
    case "epsilon":
      for (let j = 0; j < out.length; j++) out[j] = f(sample[j] - f(sigma * modelOutput[j])) / alpha;
      break;
    case "v_prediction":
      for (let j = 0; j < out.length; j++) out[j] = f(alpha * sample[j]) - f(sigma * modelOutput[j]);
      break;
    case "sample":
      out.set(modelOutput);
      break;
  }
  return out;
}

/**
 * The noise estimate eps of the same parametrisation: epsilon: the model output; v: alpha_t v + sigma_t x;
 * sample: (x - alpha_t x0) / sigma_t.
 */
export function vpPredictNoise(
  prediction: PredictionType,
  modelOutput: Float32Array,
  sample: Float32Array,
  alpha: number,
  sigma: number,
): Float32Array {
  const out = new Float32Array(sample.length);
  switch (prediction) {
    case "epsilon":
      out.set(modelOutput);
      break;
    case "v_prediction":
      for (let j = 0; j < out.length; j++) out[j] = f(alpha * modelOutput[j]) + f(sigma * sample[j]);
      break;
    case "sample":
      for (let j = 0; j < out.length; j++) out[j] = f(sample[j] - f(alpha * modelOutput[j])) / sigma;
      break;
  }
  return out;
}

/** alpha_t = sqrt(a_bar), sigma_t = sqrt(1 - a_bar) of the alpha_bar schedulers, as float32 scalars. */
export function alphaBarAlphaSigma(alphaBar: number): { alpha: number; sigma: number } {
  return { alpha: f(Math.sqrt(alphaBar)), sigma: f(Math.sqrt(f(1 - alphaBar))) };
}

/** clip_sample: clamp x0 to [-range, range] in place (range as a float32 scalar, like torch.clamp). */
export function clipInPlace(x: Float32Array, range: number): void {
  const r = f(range);
  for (let j = 0; j < x.length; j++) x[j] = Math.min(Math.max(x[j], -r), r);
}
