/**
 * The sigma schedules a k-diffusion or solver scheduler can be re-spaced onto, as diffusers 0.35.2
 * selects them with use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas: given the
 * schedule's ends sigma_max (first) and sigma_min (last), n sigmas, descending, in float64 (numpy's
 * arithmetic; the caller casts to float32 with the final sigma appended).
 *
 *   karras       Karras et al. 2022, eq. 5: uniform in sigma^(1/rho), rho = 7
 *   exponential  uniform in log sigma: exp(linspace(log sigma_max, log sigma_min, n))
 *   beta         Lee et al. 2024, "Beta Sampling is All You Need" (arXiv:2407.12173):
 *                sigma_min + (sigma_max - sigma_min) * F^-1(1 - u), u = linspace(0, 1, n), where
 *                F^-1 is the quantile function of Beta(0.6, 0.6) (diffusers: scipy.stats.beta.ppf)
 *
 * The Beta quantile is computed here from the math (regularized incomplete beta function by its
 * continued fraction, inverted by safeguarded Newton steps) to float64 accuracy: scipy's value
 * (Boost's ibeta_inv) is itself accurate to a few float64 ulps, and sigmas are cast to float32, so
 * the two agree on every float32 sigma unless one lies within ~1e-15 of a float32 rounding boundary.
 */
import { npLinspace } from "./float32";
import { SigmaScheduleInfo, SigmaScheduleName } from "./types";

/** Each schedule's diffusers config key and A1111 "Schedule type" label, in help order. */
export const SIGMA_SCHEDULES: Readonly<Record<SigmaScheduleName, SigmaScheduleInfo>> = {
  default: { configKey: null, a1111Label: null },
  karras: { configKey: "use_karras_sigmas", a1111Label: "Karras" },
  exponential: { configKey: "use_exponential_sigmas", a1111Label: "Exponential" },
  beta: { configKey: "use_beta_sigmas", a1111Label: "Beta" },
};

export const SIGMA_SCHEDULE_NAMES = Object.keys(SIGMA_SCHEDULES) as SigmaScheduleName[];

/** Whether a string names a sigma schedule. */
export function isSigmaSchedule(name: unknown): name is SigmaScheduleName {
  return typeof name === "string" && Object.prototype.hasOwnProperty.call(SIGMA_SCHEDULES, name);
}

/**
 * The sigma schedule a raw config selects, or a sentence naming the keys when more than one is set
 * (diffusers' __init__ raises "Only one of ... can be used" there).
 */
export function sigmaScheduleOfRaw(raw: Readonly<Record<string, unknown>>): SigmaScheduleName | { conflict: string[] } {
  const set = SIGMA_SCHEDULE_NAMES.filter((n) => {
    const key = SIGMA_SCHEDULES[n].configKey;
    return key !== null && raw[key] === true;
  });
  if (set.length > 1) return { conflict: set.map((n) => SIGMA_SCHEDULES[n].configKey as string) };
  return set[0] ?? "default";
}

/** The raw config keys that select `name` (the other two schedules' keys false). */
export function sigmaScheduleKeys(name: SigmaScheduleName): Record<string, boolean> {
  const out: Record<string, boolean> = {};
  for (const n of SIGMA_SCHEDULE_NAMES) {
    const key = SIGMA_SCHEDULES[n].configKey;
    if (key !== null) out[key] = n === name;
  }
  return out;
}

/** Karras et al. (2022) eq. 5: sigmas spaced uniformly in sigma^(1/rho), rho = 7. */
export function karrasSigmas(n: number, sigmaMin: number, sigmaMax: number, rho = 7): Float64Array {
  const ramp = npLinspace(0, 1, n);
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return ramp.map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/** Sigmas spaced uniformly in log sigma from sigma_max down to sigma_min. */
export function exponentialSigmas(n: number, sigmaMin: number, sigmaMax: number): Float64Array {
  return npLinspace(Math.log(sigmaMax), Math.log(sigmaMin), n).map(Math.exp);
}

/** Beta(alpha, beta)-quantile spacing (Lee et al. 2024): more steps at both ends of the schedule. */
export function betaSigmas(n: number, sigmaMin: number, sigmaMax: number, alpha = 0.6, beta = 0.6): Float64Array {
  return npLinspace(0, 1, n).map((u) => sigmaMin + betaQuantile(1 - u, alpha, beta) * (sigmaMax - sigmaMin));
}

/** n sigmas from sigma_max down to sigma_min on a re-spaced schedule (not "default", which interpolates). */
export function respacedSigmas(name: Exclude<SigmaScheduleName, "default">, n: number, sigmaMin: number, sigmaMax: number): Float64Array {
  switch (name) {
    case "karras":
      return karrasSigmas(n, sigmaMin, sigmaMax);
    case "exponential":
      return exponentialSigmas(n, sigmaMin, sigmaMax);
    case "beta":
      return betaSigmas(n, sigmaMin, sigmaMax);
  }
}

// ---- the Beta distribution ------------------------------------------------------------------------

/**
 * The continued fraction of the incomplete beta function (the standard expansion, e.g. Abramowitz &
 * Stegun 26.5.8): B_x(a, b) = x^a (1-x)^b / a * 1 / (1 + d1 / (1 + d2 / (1 + ...))) with
 *   d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)),  d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m)),
 * which converges quickly for x < (a + 1) / (a + b + 2). Returned is the fraction 1 / (1 + d1 / ...).
 * The modified Lentz method finds how many terms reach float64 precision; the fraction is then
 * evaluated from the tail backwards with a margin of terms, which rounds less than Lentz's running
 * product (about 1 ulp instead of a random walk of one per term).
 */
function incompleteBetaFraction(x: number, a: number, b: number): number {
  const coefficient = (k: number): number => {
    const m = Math.floor(k / 2);
    return k % 2 === 1
      ? (-(a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))
      : (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m));
  };
  const tiny = 1e-300;
  const clampTiny = (v: number) => (Math.abs(v) < tiny ? tiny : v);
  let c = 1;
  let d = 1 / clampTiny(1 + coefficient(1));
  let terms = 1;
  for (let k = 2; k <= 20000; k++) {
    const dk = coefficient(k);
    d = 1 / clampTiny(1 + dk * d);
    c = clampTiny(1 + dk / c);
    terms = k;
    if (Math.abs(d * c - 1) < 2 ** -60 && k % 2 === 1) break;
  }
  let tail = 1;
  for (let k = terms + 20; k >= 1; k--) tail = 1 + coefficient(k) / tail;
  return 1 / tail;
}

/** The (unregularized) incomplete beta function B_x(a, b) for x below the fraction's switch point. */
function lowerIncompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  return (Math.pow(x, a) * Math.pow(1 - x, b) * incompleteBetaFraction(x, a, b)) / a;
}

/** Beta(a, b) computed as B_s(a, b) + B_{1-s}(b, a) at the fraction's switch point s (no gamma function needed). */
function completeBeta(a: number, b: number): number {
  const s = (a + 1) / (a + b + 2);
  return lowerIncompleteBeta(s, a, b) + lowerIncompleteBeta(1 - s, b, a);
}

/** Lower and upper tails { p: I_x(a, b), q: 1 - I_x(a, b) }, each computed directly (no cancellation). */
function betaTails(x: number, a: number, b: number, total: number): { p: number; q: number } {
  if (x <= 0) return { p: 0, q: 1 };
  if (x >= 1) return { p: 1, q: 0 };
  if (x < (a + 1) / (a + b + 2)) {
    const p = lowerIncompleteBeta(x, a, b) / total;
    return { p, q: 1 - p };
  }
  const q = lowerIncompleteBeta(1 - x, b, a) / total;
  return { p: 1 - q, q };
}

/** The regularized incomplete beta function I_x(a, b), the CDF of Beta(a, b). */
export function betaCdf(x: number, a: number, b: number): number {
  return betaTails(x, a, b, completeBeta(a, b)).p;
}

/**
 * The quantile function of Beta(a, b): the x in [0, 1] with I_x(a, b) = p (scipy.stats.beta.ppf).
 * Solved on the smaller tail (p <= 1/2: I_x = p; else 1 - I_x = 1 - p, reflected as 1 - x of
 * Beta(b, a)) by Newton steps on a bracket that bisection keeps, to float64 accuracy.
 */
export function betaQuantile(p: number, a: number, b: number): number {
  if (!(p >= 0 && p <= 1) || !(a > 0) || !(b > 0)) return NaN;
  if (p === 0) return 0;
  if (p === 1) return 1;
  if (p > 0.5) return 1 - betaQuantile(1 - p, b, a);
  const total = completeBeta(a, b);
  const logTotal = Math.log(total);
  // start from the small-x expansion I_x ~ x^a / (a B) (exact for b = 1), kept inside (0, 1)
  let x = Math.min(Math.pow(p * a * total, 1 / a), 0.5);
  let lo = 0;
  let hi = 1;
  for (let iter = 0; iter < 200; iter++) {
    const err = betaTails(x, a, b, total).p - p;
    if (err === 0) return x;
    if (err > 0) hi = x;
    else lo = x;
    const logPdf = (a - 1) * Math.log(x) + (b - 1) * Math.log1p(-x) - logTotal;
    let next = x - err / Math.exp(logPdf);
    if (!(next > lo && next < hi)) next = (lo + hi) / 2; // Newton left the bracket: bisect
    if (Math.abs(next - x) <= 1e-17 * x || next === x) return next;
    x = next;
  }
  return x;
}
