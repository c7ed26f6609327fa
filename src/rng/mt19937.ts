/**
 * 32-bit Mersenne Twister (MT19937, Matsumoto & Nishimura 1998) as PyTorch's CPU generator runs it.
 *
 * PyTorch keeps its own engine (aten/src/ATen/core/MT19937RNGEngine.h, `at::mt19937`), a Cokus-style
 * rewrite of the reference mt19937ar.c whose output stream is identical to the reference
 * `genrand_int32`. Two details decide compatibility:
 *  - seeding is the reference `init_genrand` applied to the LOW 32 BITS of the 64-bit seed
 *    (`init_with_uint32` stores `seed & 0xffffffff` in state[0]); the full 64-bit value is only
 *    remembered for `initial_seed()`. So seeds 5 and 2**32 + 5 give the same stream.
 *  - the first draw after seeding regenerates the whole 624-word state before tempering
 *    (torch starts with `left_ = 1`), exactly like the reference code's lazy first twist.
 */

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_MASK = 0x80000000;
const LOWER_MASK = 0x7fffffff;

/** Reduce a seed the way torch's Python binding does: any integer in [-2**63, 2**64) taken modulo 2**64. */
export function normalizeSeed(seed: number | bigint): bigint {
  let s: bigint;
  if (typeof seed === "number") {
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(`seed must be a safe integer or a bigint, got ${seed}`);
    }
    s = BigInt(seed);
  } else {
    s = seed;
  }
  if (s < -(1n << 63n) || s >= 1n << 64n) {
    throw new RangeError(`seed ${s} is outside [-2**63, 2**64)`);
  }
  return BigInt.asUintN(64, s);
}

export class MT19937 {
  private readonly mt = new Uint32Array(N);
  /** Index of the next state word to temper; N means "twist before the next draw". */
  private mti = N;
  /** True until the first twist: the state still holds the raw seeding words. */
  private seededOnly = true;
  /** The full 64-bit seed (torch's `initial_seed()`); only its low 32 bits reach the state. */
  readonly seed: bigint;

  constructor(seed: number | bigint = 5489) {
    this.seed = normalizeSeed(seed);
    const mt = this.mt;
    mt[0] = Number(this.seed & 0xffffffffn);
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1];
      // Knuth's multiplicative initialiser; Math.imul keeps the product modulo 2**32.
      mt[i] = (Math.imul(1812433253, prev ^ (prev >>> 30)) + i) >>> 0;
    }
    this.mti = N;
  }

  /** Next 32-bit output as an unsigned integer in [0, 2**32). Torch: `CPUGeneratorImpl::random()`. */
  nextUint32(): number {
    if (this.mti >= N) this.twist();
    let y = this.mt[this.mti++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** An independent copy that continues the identical stream. */
  clone(): MT19937 {
    const c = new MT19937(this.seed);
    c.mt.set(this.mt);
    c.mti = this.mti;
    c.seededOnly = this.seededOnly;
    return c;
  }

  /**
   * The state in torch's layout (`mt19937_data_pod`: the 624 words, `next_` and `left_`), which is
   * what `torch.Generator.get_state()` serialises; useful to compare against a live torch generator.
   */
  snapshot(): { seed: bigint; state: Uint32Array; next: number; left: number } {
    // Torch decrements `left_` before each draw and twists when it reaches 0; right after seeding
    // it holds 1 with `next_` = 0, and after a twist plus k draws it holds N - k + 1 with next_ = k.
    const fresh = this.seededOnly;
    return {
      seed: this.seed,
      state: this.mt.slice(),
      next: fresh ? 0 : this.mti,
      left: fresh ? 1 : N - this.mti + 1,
    };
  }

  private twist(): void {
    const mt = this.mt;
    for (let k = 0; k < N; k++) {
      const y = (mt[k] & UPPER_MASK) | (mt[(k + 1) % N] & LOWER_MASK);
      mt[k] = mt[(k + M) % N] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    }
    this.mti = 0;
    this.seededOnly = false;
  }
}
