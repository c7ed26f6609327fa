/**
 * numpy and torch arithmetic reproduced to the bit: diffusers computes its schedules with torch
 * float32 in some places and numpy float64 in others, and the results only agree to the last
 * float32 bit when each operation is done the same way.
 */
import { fmaF32 } from "../rng/torch-generator";

const f = Math.fround;

/**
 * torch.linspace(start, end, steps, dtype=float32) on the CPU. ATen's kernel (RangeFactoriesKernel.cpp,
 * scalar only) computes step = (end - start) / (steps - 1) in float32 and returns
 * `start + step * i` for the first half and `end - step * (steps - i - 1)` for the second, so both
 * ends are exact. The x86 builds of that kernel (the AVX2 / AVX512 dispatch, i.e. every current CPU)
 * are compiled with FMA contraction, so each element is ONE rounding: fma(step, i, start). Measured
 * on torch 2.8: with plain mul-then-add 145 of SD's 1000 sqrt-betas differ by an ulp; with the fused
 * form none do (ATEN_CPU_CAPABILITY=default, the non-FMA build, matches the unfused form instead).
 */
export function torchLinspaceF32(start: number, end: number, steps: number, fused = true): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = f(start);
  const e = f(end);
  const step = f(f(e - s) / f(steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    if (i < halfway) out[i] = fused ? fmaF32(step, i, s) : f(s + f(step * i));
    else out[i] = fused ? fmaF32(-step, steps - i - 1, e) : f(e - f(step * (steps - i - 1)));
  }
  return out;
}

/** numpy.linspace(start, stop, num) in float64: `i * step + start`, the last element set to stop. */
export function npLinspace(start: number, stop: number, num: number): Float64Array {
  const out = new Float64Array(num);
  if (num === 1) {
    out[0] = start;
    return out;
  }
  const step = (stop - start) / (num - 1);
  for (let i = 0; i < num; i++) out[i] = step === 0 ? (i / (num - 1)) * (stop - start) + start : i * step + start;
  out[num - 1] = stop;
  return out;
}

/**
 * numpy.arange(start, stop, step) for float arguments: length ceil((stop - start) / step), values
 * `start + i * delta` with delta = (start + step) - start (numpy's fill routine), which can differ
 * from `step` in the last bit. Note the length: for trailing spacing np.arange(1000, 0, -1000/n)
 * has n + 1 elements for 62 values of n up to 1000 (n = 61, 103, 121, ...), and diffusers then
 * really uses n + 1 timesteps, the last one -1. We reproduce that rather than "fix" it.
 */
export function npArange(start: number, stop: number, step: number): Float64Array {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Float64Array(len);
  if (len > 0) out[0] = start;
  if (len > 1) out[1] = start + step;
  const delta = out[1] - out[0];
  for (let i = 2; i < len; i++) out[i] = start + i * delta;
  return out;
}

const NPY_LOG_P = [
  0.0, 9.999999999999998702752e-1, 2.112677543073053063722, 1.480000633576506585156, 3.808837741388407920751e-1, 2.589979117907922693523e-2,
].map(f);
const NPY_LOG_Q = [
  1.0, 2.612677543073109236779, 2.453006071784736363091, 9.864942958519418960339e-1, 1.546476374983906719538e-1, 5.87509540312457434295e-3,
].map(f);
const NPY_LOGE2F = f(0.693147180559945309417);
const NPY_SQRT1_2F = f(0.707106781186547524400844362104849039);
const f32scratch = new Float32Array(1);
const u32scratch = new Uint32Array(f32scratch.buffer);

/**
 * numpy.log on a float32 array, as numpy 2.x computes it on x86 with AVX2+FMA3 or AVX512F
 * (simd_log_FLOAT in loops_exponent_log.dispatch.c.src): mantissa m in [0.5, 1) and exponent k,
 * m <= sqrt(1/2) ? (2m, k-1) : (m, k), then a 5/5 rational minimax polynomial in x = m - 1 by
 * fused multiply-adds, and fma(k, ln 2, P/Q). It is NOT correctly rounded (up to 3.8 ulp; about one
 * SD sigma in five differs from round(log(x))), and diffusers feeds it to _sigma_to_t, so the
 * Karras timesteps depend on it. Positive normal inputs only (sigmas are).
 */
export function npLogF32(xIn: number): number {
  const x32 = f(xIn);
  if (!(x32 > 0) || !Number.isFinite(x32) || x32 < 1.1754943508222875e-38) return f(Math.log(x32));
  f32scratch[0] = x32;
  const bits = u32scratch[0];
  let exponent = f((bits >>> 23) - 0x7e);
  u32scratch[0] = (bits & 0x7fffff) | (126 << 23);
  let x = f32scratch[0];
  if (x <= NPY_SQRT1_2F) {
    x = f(x + x);
    exponent = f(exponent - 1);
  }
  x = f(x - 1);
  let num = fmaF32(NPY_LOG_P[5], x, NPY_LOG_P[4]);
  for (let k = 3; k >= 0; k--) num = fmaF32(num, x, NPY_LOG_P[k]);
  let den = fmaF32(NPY_LOG_Q[5], x, NPY_LOG_Q[4]);
  for (let k = 3; k >= 0; k--) den = fmaF32(den, x, NPY_LOG_Q[k]);
  return fmaF32(exponent, NPY_LOGE2F, f(num / den));
}

/** numpy.round: round half to even. */
export function npRound(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : r;
}

/** numpy.interp(x, xp, fp) for increasing xp (float64). */
export function npInterp(x: number, xp: ArrayLike<number>, fp: ArrayLike<number>): number {
  const n = xp.length;
  if (x <= xp[0]) return fp[0];
  if (x >= xp[n - 1]) return fp[n - 1];
  let lo = 0;
  let hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xp[mid] <= x) lo = mid;
    else hi = mid;
  }
  const slope = (fp[hi] - fp[lo]) / (xp[hi] - xp[lo]);
  return slope * (x - xp[lo]) + fp[lo];
}

/** torch indexing of a 1-D tensor by an integer: negative indices count from the end. */
export function at(arr: ArrayLike<number>, index: number): number {
  const i = index < 0 ? arr.length + index : index;
  if (!(i >= 0 && i < arr.length)) throw new RangeError(`index ${index} out of range for length ${arr.length}`);
  return arr[i];
}
