/**
 * float16 at the runtime boundary: a float16 input or output travels as IEEE half bits in a
 * Uint16Array; the pipeline computes in float32, widening outputs and narrowing inputs here.
 */
import { HarnessError, ExitCode } from "../errors";
import { F32, f32, Tensor, TypedData } from "./tensor";

/** What a runtime takes and returns (src/runtime/types.ts RuntimeTensor). */
type RuntimeTensor = Tensor<TypedData>;

/** Float32 view of a runtime output (float16 outputs are widened). */
export function toF32(t: RuntimeTensor): F32 {
  if (t.dtype === "float32") return f32(t.data as Float32Array, t.dims);
  if (t.dtype === "float16") {
    const src = t.data as Uint16Array;
    const out = new Float32Array(src.length);
    for (let i = 0; i < src.length; i++) out[i] = halfToFloat(src[i]);
    return f32(out, t.dims);
  }
  throw new HarnessError(`unexpected output type ${t.dtype}`, ExitCode.usage);
}

/** A float32 tensor as the input type the session declares (float16 inputs are narrowed). */
export function fromF32(t: F32, type: string): RuntimeTensor {
  if (type === "float16") {
    const out = new Uint16Array(t.data.length);
    for (let i = 0; i < out.length; i++) out[i] = floatToHalf(t.data[i]);
    return { dtype: "float16", dims: t.dims, data: out };
  }
  return { dtype: "float32", dims: t.dims, data: t.data };
}

export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** float32 -> IEEE half, round to nearest even (numpy's astype(float16)). */
export function floatToHalf(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}
