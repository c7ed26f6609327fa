/**
 * Linear multistep (LMS) sampling on the k-diffusion ODE dx/dsigma = (x - D(x; sigma)) / sigma
 * (Karras et al. 2022's parametrisation; k-diffusion's sample_lms), as diffusers 0.35.2's
 * LMSDiscreteScheduler computes it: an Adams-Bashforth-type method on the non-uniform sigma grid,
 *   x_{i+1} = x_i + sum_k c_k d_{i-k},   c_k = integral from sigma_i to sigma_{i+1} of l_k(tau) dtau
 * where l_k is the Lagrange basis polynomial through sigma_i, ..., sigma_{i-order+1} that is 1 at
 * sigma_{i-k}. Order min(i + 1, 4). No random draws.
 *
 * The coefficients. The integrand is a polynomial of degree order-1 <= 3, so the integral has a
 * closed form (lmsCoefficientExact). diffusers instead calls scipy.integrate.quad(epsrel=1e-4) on
 * an integrand evaluated in torch float32 (the sigmas are float32 tensors, so `tau - sigma` rounds
 * tau to float32 and every factor to float32). QUADPACK's adaptive driver accepts its first
 * 21-point Gauss-Kronrod estimate (the error estimate of a cubic is far below 1e-4), so the
 * coefficient is exactly that rule applied to the float32 integrand (lmsCoefficient). The two agree
 * to about 1e-7 relative, which is enough to move a float32 sample by an ulp; the quad form is
 * used so that results match diffusers bit for bit.
 */
import { COMMON_DEFAULTS } from "./config";
import { kPredictX0, toD } from "./k-diffusion";
import { kDiffusionSchedule } from "./noise-schedules";
import { Scheduler, SchedulerConfig, SchedulerDescriptor, StepResult } from "./types";
import { kScheduler } from "./families";

const f = Math.fround;

// QUADPACK dqk21: 21-point Kronrod abscissae (xgk), Kronrod weights (wgk) and 10-point Gauss weights (wg)
const XGK = [
  0.995657163025808080735527280689003, 0.973906528517171720077964012084452, 0.930157491355708226001207180059508,
  0.865063366688984510732096688423493, 0.780817726586416897063717578345042, 0.679409568299024406234327365114874,
  0.562757134668604683339000099272694, 0.433395394129247190799265943165784, 0.294392862701460198131126603103866,
  0.14887433898163121088482600112972, 0.0,
];
const WGK = [
  0.011694638867371874278064396062192, 0.03255816230796472747881897245939, 0.05475589657435199603138130024458,
  0.07503967481091995276704314091619, 0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
  0.123491976262065851077958109831074, 0.134709217311473325928054001771707, 0.142775938577060080797094273138717,
  0.147739104901338491374841515972068, 0.149445554002916905664936468389821,
];

/** QUADPACK's 21-point Gauss-Kronrod rule on [a, b] (dqk21's result; same summation order). */
function gaussKronrod21(fn: (x: number) => number, a: number, b: number): number {
  const centr = 0.5 * (a + b);
  const hlgth = 0.5 * (b - a);
  let resk = WGK[10] * fn(centr);
  for (let j = 1; j <= 5; j++) {
    const jtw = 2 * j - 1; // Fortran xgk(2j)
    const absc = hlgth * XGK[jtw];
    const fsum = fn(centr - absc) + fn(centr + absc);
    resk = resk + WGK[jtw] * fsum;
  }
  for (let j = 1; j <= 5; j++) {
    const jtwm1 = 2 * j - 2; // Fortran xgk(2j-1)
    const absc = hlgth * XGK[jtwm1];
    const fsum = fn(centr - absc) + fn(centr + absc);
    resk = resk + WGK[jtwm1] * fsum;
  }
  return resk * hlgth;
}

/**
 * diffusers' get_lms_coefficient(order, t, k): quad of the Lagrange basis l_k over [sigma_t, sigma_{t+1}],
 * the integrand in float32 ops as torch evaluates it: prod over m != k of (tau - s_{t-m}) / (s_{t-k} - s_{t-m}).
 */
export function lmsCoefficient(sigmas: Float32Array, order: number, t: number, k: number): number {
  const integrand = (tau: number): number => {
    let prod = 1.0;
    const tau32 = f(tau);
    for (let m = 0; m < order; m++) {
      if (m === k) continue;
      prod = f(prod * f(f(tau32 - sigmas[t - m]) / f(sigmas[t - k] - sigmas[t - m])));
    }
    return prod;
  };
  return gaussKronrod21(integrand, sigmas[t], sigmas[t + 1]);
}

/** The same coefficient in exact (float64) arithmetic: expand l_k as a polynomial and integrate it. */
export function lmsCoefficientExact(sigmas: ArrayLike<number>, order: number, t: number, k: number): number {
  let poly = [1]; // coefficients, lowest degree first
  for (let m = 0; m < order; m++) {
    if (m === k) continue;
    const denom = sigmas[t - k] - sigmas[t - m];
    const next = new Array<number>(poly.length + 1).fill(0);
    for (let p = 0; p < poly.length; p++) {
      next[p + 1] += poly[p] / denom;
      next[p] -= (poly[p] * sigmas[t - m]) / denom;
    }
    poly = next;
  }
  const antider = (x: number) => poly.reduce((acc, c, p) => acc + (c * x ** (p + 1)) / (p + 1), 0);
  return antider(sigmas[t + 1]) - antider(sigmas[t]);
}

interface LmsState {
  /** ODE derivatives d_i, oldest first, at most 4 */
  derivatives: Float32Array[];
}

export function createLMSScheduler(config: SchedulerConfig, numInferenceSteps: number): Scheduler<LmsState> {
  const { timesteps, sigmas, initNoiseSigma } = kDiffusionSchedule(config, numInferenceSteps, "LMSDiscreteScheduler", {
    sigmaSchedule: config.sigmaSchedule,
    finalSigmasType: "zero",
  });
  const maxOrder = 4;

  const step = (modelOutput: Float32Array, i: number, sample: Float32Array, st: LmsState): StepResult => {
    const sigma = sigmas[i];
    // 1. denoised estimate D(x; sigma)
    const x0 = kPredictX0(config.predictionType, modelOutput, sample, sigma);
    // 2. derivative d_i = (x - D) / sigma, kept in the history
    st.derivatives.push(toD(sample, x0, sigma));
    if (st.derivatives.length > maxOrder) st.derivatives.shift();
    // 3. coefficients c_k for the last `order` derivatives (newest first)
    const order = Math.min(i + 1, maxOrder);
    const coeffs = Array.from({ length: order }, (_, k) => f(lmsCoefficient(sigmas, order, i, k)));
    // 4. x_{i+1} = x_i + (c_0 d_i + c_1 d_{i-1} + ...), the sum accumulated left to right in float32
    // diffusers zips the coefficients with the history, so a run that starts part-way along the
    // schedule (img2img: order from the step index, few derivatives yet) uses only those it has
    const hist = st.derivatives;
    const terms = Math.min(order, hist.length);
    const prev = new Float32Array(sample.length);
    for (let j = 0; j < prev.length; j++) {
      let acc = 0;
      for (let k = 0; k < terms; k++) acc = f(acc + f(coeffs[k] * hist[hist.length - 1 - k][j]));
      prev[j] = sample[j] + acc;
    }
    return { prevSample: prev, predOriginalSample: x0 };
  };

  return kScheduler({
    name: lmsDescriptor.id,
    config,
    numInferenceSteps,
    timesteps,
    sigmas,
    initNoiseSigma,
    initialState: (): LmsState => ({ derivatives: [] }),
    step,
  });
}

export const lmsDescriptor: SchedulerDescriptor = {
  id: "lms",
  className: "LMSDiscreteScheduler",
  a1111Name: "LMS",
  defaults: {
    ...COMMON_DEFAULTS,
    timestep_spacing: "linspace",
    use_karras_sigmas: false,
    use_exponential_sigmas: false,
    use_beta_sigmas: false,
  },
  sigmaSchedules: ["default", "karras", "exponential", "beta"],
  create: (c, n) => createLMSScheduler(c, n),
};
