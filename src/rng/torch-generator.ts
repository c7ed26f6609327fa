/**
 * A re-implementation of PyTorch's CPU generator (`torch.Generator("cpu")`) and of `torch.randn`
 * for float32 on the CPU, so that a seed reproduces the initial latents diffusers draws with
 * `torch.Generator("cpu").manual_seed(seed)` bit for bit.
 *
 * Draw order, as torch 2.x does it (aten/src/ATen/CPUGeneratorImpl.cpp,
 * aten/src/ATen/core/DistributionsHelper.h, aten/src/ATen/core/TransformationHelper.h,
 * aten/src/ATen/native/cpu/DistributionTemplates.h):
 *
 *  - `random()` is one MT19937 output; `random64()` is two outputs, the FIRST one being the high
 *    32 bits (`make64BitsFrom32Bits(random1, random2)`).
 *  - A float uniform in [0, 1) is `(random() & (2**24 - 1)) * 2**-24` (one draw, 24 bits); a
 *    double uniform is `(random64() & (2**53 - 1)) * 2**-53` (two draws, 53 bits).
 *  - `randn` of a contiguous float32 tensor with at least 16 elements (`normal_fill`): first ALL
 *    n elements get a float uniform, in order; then every full block of 16 is transformed in place
 *    by Box-Muller over the pairs (j, j + 8): u1 = 1 - data[j], u2 = data[j + 8],
 *    radius = sqrt(-2 log u1), theta = 2 pi u2, data[j] = radius cos theta,
 *    data[j + 8] = radius sin theta. When n is not a multiple of 16 the LAST 16 elements
 *    (the window data[n - 16 .. n), overlapping the last full block) are overwritten with 16
 *    fresh float uniforms and transformed once more. n + 16 draws in that case, n otherwise.
 *  - `randn` with fewer than 16 elements (the serial `normal_distribution<double>` path): per
 *    element, if the generator holds a cached normal it is used (and cleared); otherwise two double
 *    uniforms u1, u2 (four draws) give r = sqrt(-2 log1p(-u2)), theta = 2 pi u1, the element is
 *    r cos theta and r sin theta is cached ON THE GENERATOR. The cache survives across calls (a
 *    later small randn starts with it) and is ignored by the >= 16 path; only re-seeding clears it.
 *    The double result is rounded to float32.
 *
 * Float32 arithmetic of the >= 16 path. On x86-64 builds whose CPU capability is AVX2 (what
 * `torch.backends.cpu.get_cpu_capability()` reports on most current x86 machines without AVX-512)
 * torch runs `normal_fill_16_AVX2`, whose log, sin and cos are the Cephes-derived polynomial
 * approximations of `avx_mathfun.h` (`log256_ps`, `sincos256_ps`) evaluated in float32, not libm.
 * GCC built them with FMA contraction, so several multiply-then-add steps are single fused
 * operations (read off the shipped libtorch_cpu.so). This file replays exactly that sequence of
 * float32 operations: every product, sum and square root is rounded to float32, and each fused
 * step is a correctly rounded float32 FMA, which is what makes the output bit-exact.
 *
 * Builds without that kernel (capability DEFAULT, and AVX512, whose compilation unit does not define
 * CPU_CAPABILITY_AVX2) run the generic `normal_fill_16<float>` instead: glibc's logf, cosf and sinf
 * on float32, and theta rounded from a double product. Those libm functions are not correctly
 * rounded, so the "generic" kernel below (correctly rounded float32 log/cos/sin from the double
 * Math functions) agrees with torch there only to a few ULP, not bit for bit.
 */
import { MT19937 } from "./mt19937";

const TWO_POW_M24 = 2 ** -24;
const TWO_POW_M53 = 2 ** -53;
const TWO_POW_32 = 2 ** 32;

const f32 = Math.fround;

// Scratch views for bit-level access to float32 and float64 values (little-endian hosts, as all
// platforms Node 20 supports).
const f32buf = new Float32Array(1);
const u32of32 = new Uint32Array(f32buf.buffer);
const f64buf = new Float64Array(1);
const u32of64 = new Uint32Array(f64buf.buffer);

function bitsOfF32(x: number): number {
  f32buf[0] = x;
  return u32of32[0];
}

function f32OfBits(bits: number): number {
  u32of32[0] = bits >>> 0;
  return f32buf[0];
}

/**
 * Correctly rounded float32 fused multiply-add a * b + c for float32 inputs. The product of two
 * float32 values is exact in a double; the sum is not always, and rounding it to double and then
 * to float32 could round twice. The error of the double sum is recovered exactly (Knuth's TwoSum)
 * and folded in as round-to-odd, after which a single rounding to float32 is exact (53 >= 24 + 2).
 */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bv = s - p;
  const err = p - (s - bv) + (c - bv);
  if (err === 0) return f32(s);
  f64buf[0] = s;
  if ((u32of64[0] & 1) === 0) {
    // s is even: step one double ulp towards the exact value, making it odd.
    if (err > 0 === s > 0) {
      u32of64[0] += 1; // even low word, so no carry
    } else if (u32of64[0] === 0) {
      u32of64[0] = 0xffffffff;
      u32of64[1] -= 1;
    } else {
      u32of64[0] -= 1;
    }
  }
  return f32(f64buf[0]);
}

// Constants of avx_mathfun.h, as the float32 values the library holds.
const SQRTHF = f32(0.707106781186547524);
const LOG_P = [
  7.0376836292e-2, -1.151461031e-1, 1.167699874e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
  3.3333331174e-1,
].map(f32);
const LOG_Q1 = f32(-2.1219444e-4);
const LOG_Q2 = f32(0.693359375);
const MINUS_DP1 = f32(-0.78515625);
const MINUS_DP2 = f32(-2.4187564849853515625e-4);
const MINUS_DP3 = f32(-3.77489497744594108e-8);
const SINCOF_P0 = f32(-1.9515295891e-4);
const SINCOF_P1 = f32(8.3321608736e-3);
const SINCOF_P2 = f32(-1.6666654611e-1);
const COSCOF_P0 = f32(2.443315711809948e-5);
const COSCOF_P1 = f32(-1.388731625493765e-3);
const COSCOF_P2 = f32(4.166664568298827e-2);
const FOPI = f32(1.27323954473516);
/** `_mm256_set1_ps(2.0f * c10::pi<double>)`: 2 pi computed in double, then rounded to float32. */
const TWO_PI_F32 = f32(2 * Math.PI);

/**
 * Natural log of a positive normal float32 as `log256_ps` computes it: split into exponent and a
 * mantissa in [sqrt(1/2), sqrt(2)), then a degree-9 polynomial. Only arguments in (0, 1] reach
 * here (1 - u with u a 24-bit uniform), so the denormal clamp and NaN mask never apply.
 */
function logAvx2(v: number): number {
  const bits = bitsOfF32(v);
  let e = f32((bits >>> 23) - 127);
  e = f32(e + 1);
  let x = f32OfBits((bits & ~0x7f800000) | 0x3f000000);
  let tmp = 0;
  if (x < SQRTHF) {
    tmp = x;
    e = f32(e - 1);
  }
  x = f32(x - 1);
  x = f32(x + tmp);
  const z = f32(x * x);
  let y = LOG_P[0];
  for (let k = 1; k < 9; k++) y = fmaF32(y, x, LOG_P[k]);
  y = f32(y * x);
  // The library's y*z + e*q1, then - z/2, then x + y, then + e*q2: GCC fused the first and the
  // last into FMAs; z*0.5 is exact, so the middle step is a plain subtraction.
  y = fmaF32(y, z, f32(e * LOG_Q1));
  y = fmaF32(-z, 0.5, y);
  x = f32(x + y);
  return fmaF32(e, LOG_Q2, x);
}

/** sin and cos of a non-negative float32 as `sincos256_ps` computes them (Cephes sinf/cosf). */
function sincosAvx2(theta: number, out: { sin: number; cos: number }): void {
  // theta = 2 pi u2 >= 0, so the sign of the argument never flips the sine.
  const xa = Math.abs(theta);
  // Octant index j = (trunc(x * 4/pi) + 1) & ~1, reduced with a three-part pi/4 (Cody-Waite).
  let j = Math.trunc(f32(xa * FOPI)) | 0;
  j = (j + 1) & ~1;
  const yf = j; // an exact float32 for the small integers that occur here
  let negSin = (j & 4) !== 0;
  if (theta < 0) negSin = !negSin;
  const usePolyForSin = (j & 2) === 0;
  const negCos = (~(j - 2) & 4) !== 0;
  let x = fmaF32(yf, MINUS_DP1, xa);
  x = fmaF32(yf, MINUS_DP2, x);
  x = fmaF32(yf, MINUS_DP3, x);
  const z = f32(x * x);
  let yc = fmaF32(COSCOF_P0, z, COSCOF_P1);
  yc = fmaF32(yc, z, COSCOF_P2);
  yc = f32(z * yc);
  yc = fmaF32(yc, z, -f32(z * 0.5));
  yc = f32(yc + 1);
  let ys = fmaF32(SINCOF_P0, z, SINCOF_P1);
  ys = fmaF32(ys, z, SINCOF_P2);
  ys = f32(z * ys);
  ys = fmaF32(ys, x, x);
  // The library selects with masks and adds the two halves, so a -0 comes out as +0: "+ 0".
  const s = (usePolyForSin ? ys : yc) + 0;
  const c = (usePolyForSin ? yc : ys) + 0;
  out.sin = negSin ? -s : s;
  out.cos = negCos ? -c : c;
}

const sc = { sin: 0, cos: 0 };

/** `normal_fill_16_AVX2` on data[off .. off + 16) holding float uniforms, mean 0 and std 1. */
function normalFill16(data: Float32Array, off: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - data[off + j]);
    const u2 = data[off + j + 8];
    const radius = f32(Math.sqrt(f32(-2 * logAvx2(u1))));
    sincosAvx2(f32(TWO_PI_F32 * u2), sc);
    // The library ends with fmadd(n, std, mean); with std 1 and mean 0 that is n + 0.
    data[off + j] = f32(radius * sc.cos) + 0;
    data[off + j + 8] = f32(radius * sc.sin) + 0;
  }
}

/** The generic `normal_fill_16<float>` (no AVX2): libm-style float32 log, cos and sin. */
function normalFill16Generic(data: Float32Array, off: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - data[off + j]);
    const u2 = data[off + j + 8];
    const radius = f32(Math.sqrt(f32(-2 * f32(Math.log(u1)))));
    // `2.0f * c10::pi<double> * u2` is evaluated in double and then stored as float.
    const theta = f32(2 * Math.PI * u2);
    data[off + j] = f32(radius * f32(Math.cos(theta))) + 0;
    data[off + j + 8] = f32(radius * f32(Math.sin(theta))) + 0;
  }
}

/**
 * Which of torch's float32 Box-Muller kernels to reproduce for tensors of 16 or more elements:
 * "avx2" (`normal_fill_16_AVX2`, bit-exact; torch's CPU capability AVX2) or "generic"
 * (`normal_fill_16`; capability DEFAULT or AVX512; within a few ULP). Smaller tensors and the
 * random stream itself do not depend on it.
 */
export type NormalKernel = "avx2" | "generic";

export interface TorchGeneratorOptions {
  readonly normalKernel?: NormalKernel;
}

/** A snapshot of everything a TorchGenerator carries; restore it with `TorchGenerator.fromState`. */
export interface TorchGeneratorState {
  readonly engine: MT19937;
  readonly nextDoubleNormal: number | null;
}

export class TorchGenerator {
  private engine: MT19937;
  /** The second Box-Muller value of the serial path (torch's `next_double_normal_sample_`). */
  private nextDoubleNormal: number | null = null;
  readonly normalKernel: NormalKernel;

  constructor(seed: number | bigint, options: TorchGeneratorOptions = {}) {
    this.engine = new MT19937(seed);
    this.normalKernel = options.normalKernel ?? "avx2";
  }

  /** Torch's `manual_seed`: a fresh engine and no cached normal. */
  manualSeed(seed: number | bigint): this {
    this.engine = new MT19937(seed);
    this.nextDoubleNormal = null;
    return this;
  }

  /** The seed as torch's `initial_seed()` reports it (taken modulo 2**64). */
  initialSeed(): bigint {
    return this.engine.seed;
  }

  /** One 32-bit draw (`random()`). */
  random(): number {
    return this.engine.nextUint32();
  }

  /** Two draws, the first in the high half (`random64()`). */
  random64(): bigint {
    const hi = this.engine.nextUint32();
    const lo = this.engine.nextUint32();
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** `uniform_real_distribution<float>(0, 1)`: one draw, 24 bits, a float32 in [0, 1). */
  uniformFloat(): number {
    return (this.engine.nextUint32() & 0xffffff) * TWO_POW_M24;
  }

  /** `uniform_real_distribution<double>(0, 1)`: two draws (high word first), 53 bits, in [0, 1). */
  uniformDouble(): number {
    const hi = this.engine.nextUint32();
    const lo = this.engine.nextUint32();
    return ((hi & 0x1fffff) * TWO_POW_32 + lo) * TWO_POW_M53;
  }

  /** One standard normal double from the serial path (`normal_distribution<double>`), with its cache. */
  normalDouble(): number {
    if (this.nextDoubleNormal !== null) {
      const v = this.nextDoubleNormal;
      this.nextDoubleNormal = null;
      return v;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = 2 * Math.PI * u1;
    this.nextDoubleNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /**
   * `torch.randn(dims, generator=g, dtype=torch.float32)` on the CPU, continuing this generator's
   * stream exactly as torch would (see the file comment for the draw order).
   */
  randn(dims: readonly number[]): Float32Array {
    let n = 1;
    for (const d of dims) {
      if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`randn: bad dimension ${d} in [${dims.join(", ")}]`);
      n *= d;
    }
    if (!Number.isSafeInteger(n) || n > 0x7fffffff) throw new RangeError(`randn: ${n} elements is too many`);
    const out = new Float32Array(n);
    if (n < 16) {
      for (let i = 0; i < n; i++) out[i] = this.normalDouble();
      return out;
    }
    const fill16 = this.normalKernel === "generic" ? normalFill16Generic : normalFill16;
    for (let i = 0; i < n; i++) out[i] = this.uniformFloat();
    for (let i = 0; i + 16 <= n; i += 16) fill16(out, i);
    if (n % 16 !== 0) {
      const tail = n - 16;
      for (let i = 0; i < 16; i++) out[tail + i] = this.uniformFloat();
      fill16(out, tail);
    }
    return out;
  }

  /** An independent generator continuing the identical stream (torch's `Generator.clone_state`). */
  clone(): TorchGenerator {
    const g = new TorchGenerator(0, { normalKernel: this.normalKernel });
    g.engine = this.engine.clone();
    g.nextDoubleNormal = this.nextDoubleNormal;
    return g;
  }

  /** A detached copy of the state. */
  getState(): TorchGeneratorState {
    return { engine: this.engine.clone(), nextDoubleNormal: this.nextDoubleNormal };
  }

  /** Replace the state with a copy of `state`. */
  setState(state: TorchGeneratorState): this {
    this.engine = state.engine.clone();
    this.nextDoubleNormal = state.nextDoubleNormal;
    return this;
  }

  static fromState(state: TorchGeneratorState, options: TorchGeneratorOptions = {}): TorchGenerator {
    return new TorchGenerator(0, options).setState(state);
  }
}
