/**
 * PNDM (Liu, Ren, Lin & Zhao 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"),
 * as diffusers 0.35.2's PNDMScheduler computes it. Every update is the "transfer" of eq. 9 applied
 * to a combined noise estimate e':
 *   - PLMS (pseudo linear multistep, eq. 12): Adams-Bashforth combinations of the last 1-4 model
 *     outputs; with skip_prk_steps (Stable Diffusion) the first step is a second-order
 *     predictor-corrector pair (crowsonkb's PLMS): step 0 moves with e_0, step 1 re-evaluates at the
 *     SAME timestep pair with (e_0 + e_1) / 2 from the stored x_t, so the first timestep is fed twice.
 *   - PRK (pseudo Runge-Kutta, eq. 13), only without skip_prk_steps: 4 model calls per step for the
 *     first 3 steps (12 calls), each call using the half-step transfer.
 * No random draws.
 */
import { HarnessError, ExitCode } from "../errors";
import { COMMON_DEFAULTS } from "./config";
import { at } from "./float32";
import { discreteTimesteps, trainingSchedule } from "./noise-schedules";
import { Scheduler, SchedulerConfig, SchedulerDescriptor, StepResult } from "./types";
import { vpScheduler } from "./families";

const f = Math.fround;

interface PndmState {
  /** model calls so far in this run (diffusers' self.counter) */
  counter: number;
  /** model outputs kept for the multistep combinations (at most 4) */
  ets: Float32Array[];
  /** x_t stored by the first call of a multi-call step */
  curSample: Float32Array | null;
  /** PRK's running weighted sum of the 4 model outputs */
  curModelOutput: Float32Array | null;
}

/** a * x + b * y ... as separate float32 ops, left to right (torch evaluates `23 * e1 - 16 * e2 + 5 * e3` so) */
function combine(terms: ReadonlyArray<readonly [number, Float32Array]>): Float32Array {
  const n = terms[0][1].length;
  const out = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    let acc = f(terms[0][0] * terms[0][1][j]);
    for (let k = 1; k < terms.length; k++) acc = f(acc + f(terms[k][0] * terms[k][1][j]));
    out[j] = acc;
  }
  return out;
}

function createPNDMScheduler(config: SchedulerConfig, numInferenceSteps: number): Scheduler<PndmState> {
  const { alphasCumprod: ac } = trainingSchedule(config);
  const N = config.numTrainTimesteps;
  const n = numInferenceSteps;
  const ratio = Math.floor(N / n);
  const finalAlphaCumprod = config.setAlphaToOne ? 1 : ac[0];
  // diffusers' _timesteps ascending (discreteTimesteps returns them descending)
  const base = discreteTimesteps(config, n).slice().reverse();

  // 1. the fed timesteps
  let prk: number[] = [];
  let plms: number[];
  if (config.skipPrkSteps) {
    // [t_0..t_{n-2}, t_{n-2}, t_{n-1}] reversed: the largest timestep twice (predictor + corrector)
    plms = [...base.slice(0, -1), ...base.slice(-2, -1), ...base.slice(-1)].reverse();
  } else {
    if (n < 4) throw new HarnessError(`PNDM with PRK steps needs at least 4 inference steps, got ${n}`, ExitCode.usage);
    const half = Math.floor(ratio / 2);
    const last4 = base.slice(-4);
    const withHalves = last4.flatMap((t) => [t, t + half]); // repeat(2) + tile([0, ratio // 2])
    const doubled = withHalves.slice(0, -1).flatMap((t) => [t, t]);
    prk = doubled.slice(1, -1).reverse();
    plms = base.slice(0, -3).reverse();
  }
  const steps = [...prk, ...plms];
  const timesteps = Float32Array.from(steps);

  /**
   * Eq. 9, the transfer from x_t to x_{t-delta} with noise estimate e (diffusers' _get_prev_sample):
   *   x_prev = sqrt(a_prev / a_t) x_t - (a_prev - a_t) e / (a_t sqrt(1 - a_prev) + sqrt(a_t (1 - a_t) a_prev))
   * v-prediction is first turned into epsilon: e = sqrt(a_t) v + sqrt(1 - a_t) x_t.
   */
  function transfer(sample: Float32Array, t: number, prevT: number, e: Float32Array): Float32Array {
    const aT = at(ac, t);
    const aPrev = prevT >= 0 ? at(ac, prevT) : finalAlphaCumprod;
    const bT = f(1 - aT);
    const bPrev = f(1 - aPrev);
    if (config.predictionType === "v_prediction") {
      const sa = f(Math.sqrt(aT));
      const sb = f(Math.sqrt(bT));
      e = e.map((v, j) => f(sa * v) + f(sb * sample[j]));
    } else if (config.predictionType !== "epsilon") {
      throw new HarnessError(
        `PNDMScheduler: prediction_type ${config.predictionType} is not supported (epsilon or v_prediction)`,
        ExitCode.usage,
      );
    }
    const sampleCoeff = f(Math.sqrt(f(aPrev / aT)));
    const denom = f(f(aT * f(Math.sqrt(bPrev))) + f(Math.sqrt(f(f(aT * bT) * aPrev))));
    const diff = f(aPrev - aT);
    const out = new Float32Array(sample.length);
    for (let j = 0; j < out.length; j++) out[j] = f(sampleCoeff * sample[j]) - f(f(diff * e[j]) / denom);
    return out;
  }

  /** PRK call `counter` (eq. 13): RK4 weights 1/6, 1/3, 1/3, 1/6 over four half-step evaluations. */
  function stepPrk(modelOutput: Float32Array, counter: number, timestep: number, sample: Float32Array, st: PndmState): StepResult {
    const diffToPrev = counter % 2 ? 0 : Math.floor(ratio / 2);
    const prevT = timestep - diffToPrev;
    const t = prk[Math.floor(counter / 4) * 4];
    let e = modelOutput;
    const phase = counter % 4;
    if (phase === 0) {
      st.curModelOutput = modelOutput.map((v) => f(f(1 / 6) * v));
      st.ets.push(modelOutput);
      st.curSample = sample;
    } else if (phase === 1 || phase === 2) {
      const acc = st.curModelOutput!;
      st.curModelOutput = acc.map((a, j) => a + f(f(1 / 3) * modelOutput[j]));
    } else {
      const acc = st.curModelOutput!;
      e = acc.map((a, j) => a + f(f(1 / 6) * modelOutput[j]));
      st.curModelOutput = null;
    }
    const cur = st.curSample ?? sample;
    return { prevSample: transfer(cur, t, prevT, e) };
  }

  /** PLMS call `counter` (eq. 12): Adams-Bashforth of orders 1-4 on the stored model outputs. */
  function stepPlms(modelOutput: Float32Array, counter: number, timestep: number, sample: Float32Array, st: PndmState): StepResult {
    if (!config.skipPrkSteps && st.ets.length < 3) throw new HarnessError("PNDM: PLMS step before 12 PRK calls", ExitCode.internal);
    let t = timestep;
    let prevT = t - ratio;
    if (counter !== 1) {
      st.ets = st.ets.slice(-3);
      st.ets.push(modelOutput);
    } else {
      // the corrector: same interval as the predictor's
      prevT = t;
      t = t + ratio;
    }
    const e1 = st.ets[st.ets.length - 1];
    let e: Float32Array;
    let x = sample;
    if (st.ets.length === 1 && counter === 0) {
      e = modelOutput;
      st.curSample = sample;
    } else if (st.ets.length === 1 && counter === 1) {
      e = modelOutput.map((v, j) => f(v + e1[j]) / 2);
      x = st.curSample!;
      st.curSample = null;
    } else if (st.ets.length === 2) {
      const e2 = st.ets[0];
      e = combine([
        [3, e1],
        [-1, e2],
      ]).map((v) => v / 2);
    } else if (st.ets.length === 3) {
      const [e3, e2] = st.ets;
      e = combine([
        [23, e1],
        [-16, e2],
        [5, e3],
      ]).map((v) => v / 12);
    } else {
      const [e4, e3, e2] = st.ets;
      e = combine([
        [55, e1],
        [-59, e2],
        [37, e3],
        [-9, e4],
      ]).map((v) => f(f(1 / 24) * v));
    }
    return { prevSample: transfer(x, t, prevT, e) };
  }

  const step = (modelOutput: Float32Array, i: number, sample: Float32Array, st: PndmState): StepResult => {
    // The counter counts model calls since the run began, not the index into the timesteps: an
    // img2img run starts part-way along the schedule with a fresh history (diffusers' self.counter).
    const counter = st.counter++;
    return counter < prk.length
      ? stepPrk(modelOutput, counter, steps[i], sample, st)
      : stepPlms(modelOutput, counter, steps[i], sample, st);
  };

  return vpScheduler({
    name: pndmDescriptor.id,
    config,
    numInferenceSteps,
    timesteps,
    initialState: (): PndmState => ({ counter: 0, ets: [], curSample: null, curModelOutput: null }),
    step,
    alphaBarAt: (i) => at(ac, steps[i]),
  });
}

export const pndmDescriptor: SchedulerDescriptor = {
  id: "pndm",
  className: "PNDMScheduler",
  // A1111 calls the linear multistep part of PNDM (what SD's skip_prk_steps config runs) "PLMS"
  a1111Name: "PLMS",
  defaults: { ...COMMON_DEFAULTS, timestep_spacing: "leading", set_alpha_to_one: false, skip_prk_steps: false },
  sigmaSchedules: [],
  create: (c, n) => createPNDMScheduler(c, n),
};
