/** Small typed helpers over flat typed arrays with explicit dims (row-major, like torch / numpy). */

export type DType = "float32" | "float16" | "float64" | "int64" | "int32" | "int16" | "int8" | "uint8" | "bool";

export type TypedData = Float32Array | Float64Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array | Uint16Array;

export interface Tensor<D extends TypedData = Float32Array> {
  readonly dtype: DType;
  readonly dims: readonly number[];
  readonly data: D;
}

export type F32 = Tensor<Float32Array>;

export function numel(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

export function f32(data: Float32Array, dims: readonly number[]): F32 {
  if (data.length !== numel(dims)) {
    throw new RangeError(`tensor data has ${data.length} elements but dims [${dims.join(", ")}] need ${numel(dims)}`);
  }
  return { dtype: "float32", dims: [...dims], data };
}

export function zeros(dims: readonly number[]): F32 {
  return f32(new Float32Array(numel(dims)), dims);
}

function shapeEquals(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function formatDims(dims: readonly number[]): string {
  return `[${dims.join(", ")}]`;
}

/** Concatenate along axis 0 (the batch axis). */
export function concat0(parts: readonly F32[]): F32 {
  if (parts.length === 0) throw new RangeError("concat0 of nothing");
  const inner = parts[0].dims.slice(1);
  let batch = 0;
  for (const p of parts) {
    if (!shapeEquals(p.dims.slice(1), inner)) throw new RangeError(`concat0: ${formatDims(p.dims)} vs ${formatDims(parts[0].dims)}`);
    batch += p.dims[0];
  }
  const out = new Float32Array(numel([batch, ...inner]));
  let off = 0;
  for (const p of parts) {
    out.set(p.data, off);
    off += p.data.length;
  }
  return f32(out, [batch, ...inner]);
}

/** Concatenate along axis 1 (channels) for [B, C, H, W] tensors. */
export function concatChannels(parts: readonly F32[]): F32 {
  const [b, , h, w] = parts[0].dims;
  const channels = parts.reduce((s, p) => s + p.dims[1], 0);
  const out = new Float32Array(b * channels * h * w);
  const plane = h * w;
  for (let n = 0; n < b; n++) {
    let c0 = 0;
    for (const p of parts) {
      if (p.dims[0] !== b || p.dims[2] !== h || p.dims[3] !== w) {
        throw new RangeError(`concatChannels: ${formatDims(p.dims)} vs ${formatDims(parts[0].dims)}`);
      }
      const c = p.dims[1];
      out.set(p.data.subarray(n * c * plane, (n + 1) * c * plane), (n * channels + c0) * plane);
      c0 += c;
    }
  }
  return f32(out, [b, channels, h, w]);
}
