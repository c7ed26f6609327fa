/**
 * UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
 * Diffusion Models", arXiv:2302.04867), as diffusers 0.35.2's UniPCMultistepScheduler: the UniP-p
 * predictor and the UniC-p corrector with the B(h) variants bh1 (B(h) = h) and bh2 (B(h) = e^h - 1),
 * on the data prediction (predict_x0, default) or the noise prediction, solver_order 1..3.
 *
 * Each step(i):
 *   1. converts the model output at x_i into x0 (or eps);
 *   2. UniC (Algorithm 2 / eq. 11 with the B(h) solution of Theorem 3.1): unless disabled, corrects
 *      x_i with this new model output, using the sample the previous predictor started from and the
 *      previous step's order. The model was evaluated at the uncorrected x_i, and that is what the
 *      caller keeps: the correction only feeds the next predictor (the "free" corrector of the paper);
 *   3. UniP (Algorithm 1 / eq. 10): predicts x_{i+1} from the corrected x_i and the last p outputs.
 * The explicit state carries what diffusers keeps in attributes: the last solver_order converted
 * outputs, the warm-up counter, the sample the last predictor started from, and that predictor's order.
 *
 * The coefficient vectors rho solve the small Vandermonde systems R(h) rho = phi(h) / B(h) of
 * Theorem 3.1. diffusers calls torch.linalg.solve in float32 (LAPACK getrf/getrs via MKL), so
 * `solveLuTransposed` / `solveLu` below reproduce LAPACK's operation order for these 2x2 and 3x3
 * systems; measured bit-identical with torch 2.8 on this CPU.
 *
 * Precision is as in dpm-solver-multistep.ts: float32 scalar tensors in diffusers' order, with torch's
 * MKL sqrt / log and Sleef expm1 replaced by correctly rounded values (each may differ by an ulp).
 */
import { HarnessError, ExitCode } from "../errors";
import { COMMON_DEFAULTS, rejectUnsupported } from "./config";
import { checkSameLength, lambdaAt, logF32, vpAlphaSigma, vpPredictNoise, vpPredictX0 } from "./k-diffusion";
import { solverSchedule } from "./noise-schedules";
import { Scheduler, SchedulerConfig, SchedulerDescriptor, SchedulerOptions, StepResult } from "./types";
import { callIndexCheck, checkStepCount } from "./families";

const f = Math.fround;
const NAME = "UniPCMultistepScheduler";

const expm1F32 = (x: number): number => f(Math.expm1(x));

// ---------------------------------------------------------------------------------------------
// Small dense solves, in LAPACK's float32 operation order.

/** Row-major Gaussian elimination with partial pivoting (sgetrf): LU in place, pivot rows. */
function luFactor(a: number[][]): { lu: number[][]; piv: number[] } {
  const n = a.length;
  const lu = a.map((row) => row.map(f));
  const piv: number[] = [];
  for (let k = 0; k < n; k++) {
    // first row with the largest |pivot| (isamax)
    let p = k;
    for (let r = k + 1; r < n; r++) if (Math.abs(lu[r][k]) > Math.abs(lu[p][k])) p = r;
    [lu[k], lu[p]] = [lu[p], lu[k]];
    piv.push(p);
    for (let r = k + 1; r < n; r++) {
      lu[r][k] = f(lu[r][k] / lu[k][k]);
      for (let c = k + 1; c < n; c++) lu[r][c] = f(lu[r][c] - f(lu[r][k] * lu[k][c]));
    }
  }
  return { lu, piv };
}

/** sum_k coef(k) * x[k] over `ks`, each product rounded, accumulated in order (the dot-form trsv). */
function dot(ks: number[], coef: (k: number) => number, x: number[]): number {
  let s = 0;
  for (const k of ks) s = f(s + f(coef(k) * x[k]));
  return s;
}

const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from) }, (_, k) => from + k);

/**
 * torch.linalg.solve(A, b) for a contiguous float32 A: torch factors A^T (free for a row-major
 * matrix) and solves with getrs('T'): U^T z = b, L^T w = z, then undoes the pivots. The diagonal is
 * applied as a multiplication by its reciprocal.
 */
function solveLuTransposed(a: number[][], b: number[]): number[] {
  const n = b.length;
  const { lu, piv } = luFactor(a[0].map((_, c) => a.map((row) => row[c])));
  const x = b.map(f);
  for (let i = 0; i < n; i++) x[i] = f(f(x[i] - dot(range(0, i), (k) => lu[k][i], x)) * f(1 / lu[i][i]));
  for (let i = n - 1; i >= 0; i--) x[i] = f(x[i] - dot(range(i + 1, n), (k) => lu[k][i], x));
  for (let k = n - 1; k >= 0; k--) [x[k], x[piv[k]]] = [x[piv[k]], x[k]];
  return x;
}

/**
 * torch.linalg.solve(A, b) for a non-contiguous A (diffusers' R[:-1, :-1] slice): getrf on A itself
 * and getrs('N'): pivots applied to b, L y = Pb, U x = y.
 */
function solveLu(a: number[][], b: number[]): number[] {
  const n = b.length;
  const { lu, piv } = luFactor(a);
  const x = b.map(f);
  for (let k = 0; k < n; k++) [x[k], x[piv[k]]] = [x[piv[k]], x[k]];
  for (let i = 0; i < n; i++) x[i] = f(x[i] - dot(range(0, i), (k) => lu[i][k], x));
  for (let i = n - 1; i >= 0; i--) x[i] = f(f(x[i] - dot(range(i + 1, n), (k) => lu[i][k], x)) * f(1 / lu[i][i]));
  return x;
}

// ---------------------------------------------------------------------------------------------
// The B(h) system of Theorem 3.1.

interface BhSystem {
  /** hh = -h for data prediction (integrating backwards in lambda), +h for noise prediction */
  readonly hh: number;
  /** h phi_1(hh) = e^hh - 1 */
  readonly hPhi1: number;
  readonly bH: number;
  /** R[k][m] = r_m^k, k = 0..order-1 (the last r is 1) */
  readonly R: number[][];
  /** b[k] = phi_{k+1}(hh) k! / B(h) */
  readonly b: number[];
}

/** R and b for an order-p UniP / UniC step with log-SNR ratios rks (r_1..r_{p-1}; 1 appended). */
function bhSystem(h: number, rks: number[], order: number, predictX0: boolean, variant: "bh1" | "bh2"): BhSystem {
  const hh = predictX0 ? -h : h;
  const hPhi1 = expm1F32(hh);
  const bH = variant === "bh1" ? hh : expm1F32(hh);
  const r = [...rks, 1].map(f);
  const R: number[][] = [];
  const b: number[] = [];
  // h phi_k(hh) / hh^(k-1) recursion: phi_{k+1} = (phi_k - 1/k!) / hh
  let hPhiK = f(f(hPhi1 / hh) - 1);
  let factorial = 1;
  for (let k = 1; k <= order; k++) {
    R.push(r.map((x) => (k === 1 ? 1 : k === 2 ? x : f(x * x))));
    b.push(f(f(hPhiK * factorial) / bH));
    factorial *= k + 1;
    hPhiK = f(f(hPhiK / hh) - f(1 / factorial));
  }
  return { hh, hPhi1, bH, R, b };
}

/** einsum("k,bkc...->bc...", rho, D): each product rounded, then summed in k order. */
function combine(rho: number[], ds: Float32Array[], length: number): Float32Array {
  const out = new Float32Array(length);
  for (let j = 0; j < length; j++) {
    let s = f(rho[0] * ds[0][j]);
    for (let k = 1; k < ds.length; k++) s = f(s + f(rho[k] * ds[k][j]));
    out[j] = s;
  }
  return out;
}

interface UniPcState {
  modelOutputs: (Float32Array | null)[];
  lowerOrderNums: number;
  /** the sample the last predictor started from (after its correction) */
  lastSample: Float32Array | null;
  /** the order the last predictor used; the corrector of the next step uses the same */
  lastOrder: number;
}

function unipcState(state: UniPcState, order: number): UniPcState {
  const s = state as Partial<UniPcState>;
  if (
    !Array.isArray(s.modelOutputs) ||
    s.modelOutputs.length !== order ||
    typeof s.lowerOrderNums !== "number" ||
    typeof s.lastOrder !== "number"
  ) {
    throw new HarnessError(`${NAME}: step() was given a state not made by its initialState()`, ExitCode.internal);
  }
  return s as UniPcState;
}

function createUniPCScheduler(config: SchedulerConfig, numInferenceSteps: number, _opts?: SchedulerOptions): Scheduler<UniPcState> {
  rejectUnsupported(config, NAME, {
    thresholding: (v) => v === true,
    solver_p: (v) => v !== null,
    use_flow_sigmas: (v) => v === true,
    use_dynamic_shifting: (v) => v === true,
  });
  checkStepCount(NAME, numInferenceSteps);
  // diffusers maps DPM-Solver's solver names onto bh2
  const variant = config.solverType === "bh1" ? "bh1" : ["bh2", "midpoint", "heun", "logrho"].includes(config.solverType) ? "bh2" : null;
  if (variant === null)
    throw new HarnessError(`${NAME}: solver_type ${JSON.stringify(config.solverType)} is not implemented`, ExitCode.usage);
  const solverOrder = config.solverOrder;
  const predictX0 = config.predictX0;
  const disabled = new Set(config.disableCorrector.map(Number));
  // diffusers' set_timesteps: all training timesteps usable, Karras timesteps rounded (exponential /
  // beta ones truncated), and under a re-spaced schedule final_sigmas_type "sigma_min" means that
  // schedule's own smallest sigma
  const { timesteps, sigmas } = solverSchedule(config, numInferenceSteps, NAME, {
    usableTimesteps: (alphasCumprod) => alphasCumprod.length,
    truncateKarrasTimesteps: false,
    respacedSigmaMin: "schedule",
  });
  const calls = timesteps.length;

  const checkIndex = callIndexCheck(NAME, calls);

  /** Step 1: the model output as x0 (predict_x0) or eps, at sigmas[i] (float32 ops). */
  const convert = (modelOutput: Float32Array, sample: Float32Array, i: number): Float32Array => {
    const { alpha, sigma } = vpAlphaSigma(sigmas[i]);
    return predictX0
      ? vpPredictX0(config.predictionType, modelOutput, sample, alpha, sigma)
      : vpPredictNoise(config.predictionType, modelOutput, sample, alpha, sigma);
  };

  /**
   * The part UniP and UniC share (eqs. 10 / 11): the first-order exponential-integrator step from
   * `from` (sigma_s0) to `to` (sigma_t), x_t' = (sigma_t/sigma_s0) x - alpha_t (e^{-h}-1) m0 for x0,
   * or (alpha_t/alpha_s0) x - sigma_t (e^h - 1) m0 for eps, plus the scalar that multiplies the
   * higher-order residual: alpha_t B(h) (resp. sigma_t B(h)).
   */
  const exponentialStep = (
    x: Float32Array,
    m0: Float32Array,
    t: number,
    s0: number,
    sys: BhSystem,
  ): { base: Float32Array; residualScale: number } => {
    const at = vpAlphaSigma(t);
    const as0 = vpAlphaSigma(s0);
    const ratio = predictX0 ? f(at.sigma / as0.sigma) : f(at.alpha / as0.alpha);
    const lead = predictX0 ? at.alpha : at.sigma;
    const c0 = f(lead * sys.hPhi1);
    const base = new Float32Array(x.length);
    for (let j = 0; j < base.length; j++) base[j] = f(ratio * x[j]) - f(c0 * m0[j]);
    return { base, residualScale: f(lead * sys.bH) };
  };

  /**
   * rks and D1s of eq. 10/11: for each older output m_k at schedule index s_k,
   * r_k = (lambda_{s_k} - lambda_s0) / h and D1_k = (m_k - m0) / r_k.
   */
  const differences = (
    m0: Float32Array,
    older: Float32Array[],
    olderIndices: number[],
    lambdaS0: number,
    h: number,
  ): { rks: number[]; d1s: Float32Array[] } => {
    const rks: number[] = [];
    const d1s: Float32Array[] = [];
    older.forEach((mk, k) => {
      const rk = f(f(lambdaAt(sigmas[olderIndices[k]]) - lambdaS0) / h);
      rks.push(rk);
      const d = new Float32Array(m0.length);
      for (let j = 0; j < d.length; j++) d[j] = f(mk[j] - m0[j]) / rk;
      d1s.push(d);
    });
    return { rks, d1s };
  };

  const lambdaPair = (t: number, s0: number): { lambdaS0: number; h: number } => {
    const at = vpAlphaSigma(t);
    const as0 = vpAlphaSigma(s0);
    const lambdaT = f(logF32(at.alpha) - logF32(at.sigma));
    const lambdaS0 = f(logF32(as0.alpha) - logF32(as0.sigma));
    return { lambdaS0, h: f(lambdaT - lambdaS0) };
  };

  /** Step 3, UniP-p (Algorithm 1): x_i -> x_{i+1} from m0 = outputs[-1] and p-1 older outputs. */
  const predictor = (x: Float32Array, outputs: Float32Array[], i: number, order: number): Float32Array => {
    const m0 = outputs[outputs.length - 1];
    const older = range(1, order).map((k) => outputs[outputs.length - 1 - k]);
    const { lambdaS0, h } = lambdaPair(sigmas[i + 1], sigmas[i]);
    const { rks, d1s } = differences(
      m0,
      older,
      range(1, order).map((k) => i - k),
      lambdaS0,
      h,
    );
    const sys = bhSystem(h, rks, order, predictX0, variant);
    const { base, residualScale } = exponentialStep(x, m0, sigmas[i + 1], sigmas[i], sys);
    if (d1s.length === 0) return base;
    // order 2 uses rho = 1/2 outright (the paper's choice, eq. 12); order 3 solves the leading 2x2
    const rho =
      order === 2
        ? [0.5]
        : solveLu(
            sys.R.slice(0, -1).map((row) => row.slice(0, -1)),
            sys.b.slice(0, -1),
          );
    const residual = combine(rho, d1s, x.length);
    for (let j = 0; j < base.length; j++) base[j] = base[j] - f(residualScale * residual[j]);
    return base;
  };

  /**
   * Step 2, UniC-p (Algorithm 2): re-integrate the last step x_{i-1} -> x_i with the new output mT
   * at x_i included, using the previous step's outputs (outputs[-1] = m at x_{i-1}).
   */
  const corrector = (xPrev: Float32Array, mT: Float32Array, outputs: Float32Array[], i: number, order: number): Float32Array => {
    const m0 = outputs[outputs.length - 1];
    const older = range(1, order).map((k) => outputs[outputs.length - 1 - k]);
    const { lambdaS0, h } = lambdaPair(sigmas[i], sigmas[i - 1]);
    const { rks, d1s } = differences(
      m0,
      older,
      range(1, order).map((k) => i - (k + 1)),
      lambdaS0,
      h,
    );
    const sys = bhSystem(h, rks, order, predictX0, variant);
    const { base, residualScale } = exponentialStep(xPrev, m0, sigmas[i], sigmas[i - 1], sys);
    const rho = order === 1 ? [0.5] : solveLuTransposed(sys.R, sys.b);
    const rhoLast = f(rho[rho.length - 1]);
    const corr = d1s.length > 0 ? combine(rho.slice(0, -1), d1s, base.length) : null;
    for (let j = 0; j < base.length; j++) {
      const d1t = f(mT[j] - m0[j]);
      const term = f(rhoLast * d1t);
      const total = corr ? f(corr[j] + term) : term;
      base[j] = base[j] - f(residualScale * total);
    }
    return base;
  };

  return {
    name: uniPCDescriptor.id,
    config,
    numInferenceSteps: calls,
    timesteps,
    sigmas,
    order: 1,
    initNoiseSigma: 1,
    initialState: (): UniPcState => ({
      modelOutputs: new Array<Float32Array | null>(solverOrder).fill(null),
      lowerOrderNums: 0,
      lastSample: null,
      lastOrder: 0,
    }),

    /** UniPC feeds x_t to the model unscaled. */
    scaleModelInput(sample: Float32Array, i: number): Float32Array {
      checkIndex(i);
      return sample;
    },

    step(modelOutput: Float32Array, i: number, sample: Float32Array, rawState: UniPcState): StepResult {
      checkIndex(i);
      checkSameLength(modelOutput, sample, `${NAME}.step`);
      const state = unipcState(rawState, solverOrder);

      // 1. x0 (or eps) at the sample the model actually saw.
      const converted = convert(modelOutput, sample, i);

      // 2. UniC: correct x_i with the fresh output, re-integrating from the last predictor's start.
      let x = sample;
      if (i > 0 && !disabled.has(i - 1) && state.lastSample !== null) {
        x = corrector(state.lastSample, converted, state.modelOutputs as Float32Array[], i, state.lastOrder);
      }

      state.modelOutputs.shift();
      state.modelOutputs.push(converted);

      // 3. UniP from the corrected x_i; the order warms up from 1 and, with lower_order_final, drops
      //    to the number of steps left.
      const cap = config.lowerOrderFinal ? Math.min(solverOrder, calls - i) : solverOrder;
      const order = Math.min(cap, state.lowerOrderNums + 1);
      state.lastOrder = order;
      // keep our own copy: the caller owns `sample` and may reuse its buffer
      state.lastSample = x === sample ? Float32Array.from(sample) : x;
      const prev = predictor(x, state.modelOutputs as Float32Array[], i, order);
      if (state.lowerOrderNums < solverOrder) state.lowerOrderNums++;
      return { prevSample: prev, predOriginalSample: predictX0 ? converted : undefined };
    },

    /** q(x_t | x_0) at sigmas[i]: alpha_t x0 + sigma_t noise (float32 ops). */
    addNoise(original: Float32Array, noise: Float32Array, i: number): Float32Array {
      checkIndex(i);
      checkSameLength(original, noise, `${NAME}.addNoise`);
      const { alpha, sigma } = vpAlphaSigma(sigmas[i]);
      return original.map((xv, j) => f(alpha * xv) + f(sigma * noise[j]));
    },
  };
}

export const uniPCDescriptor: SchedulerDescriptor = {
  id: "unipc",
  className: NAME,
  a1111Name: "UniPC",
  defaults: {
    ...COMMON_DEFAULTS,
    timestep_spacing: "linspace",
    use_karras_sigmas: false,
    use_exponential_sigmas: false,
    use_beta_sigmas: false,
    solver_order: 2,
    solver_type: "bh2",
    lower_order_final: true,
    final_sigmas_type: "zero",
    predict_x0: true,
    disable_corrector: [],
    rescale_betas_zero_snr: false,
    thresholding: false,
  },
  sigmaSchedules: ["default", "karras", "exponential", "beta"],
  create: (c, n, o) => createUniPCScheduler(c, n, o),
};
