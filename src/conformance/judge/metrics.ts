/**
 * Drift metrics for one tensor pair (ours vs the PyTorch reference), in float64 accumulators.
 * PSNR follows coremltools' convention, 20 log10(max|ref| / RMSE), so figures compare with
 * what Apple's converter reports for the same model.
 */
import pixelmatch from "pixelmatch";
import { TensorMetrics, ImageMetrics } from "../types";

export function unravel(index: number, dims: readonly number[]): number[] {
  const out = new Array<number>(dims.length).fill(0);
  let r = index;
  for (let k = dims.length - 1; k >= 0; k--) {
    out[k] = r % dims[k];
    r = Math.floor(r / dims[k]);
  }
  return out;
}

/** float32 spacing at |x| (the ULP of a float32 value). */
export function ulpOf(x: number): number {
  const a = Math.abs(x);
  if (a < 2 ** -126) return 2 ** -149;
  return 2 ** (Math.floor(Math.log2(a)) - 23);
}

export function tensorMetrics(ours: ArrayLike<number>, ref: ArrayLike<number>, dims: readonly number[], withUlp = false): TensorMetrics {
  if (ours.length !== ref.length) throw new RangeError(`metrics: ${ours.length} vs ${ref.length} elements`);
  const n = ref.length;
  let sumAbs = 0,
    sumSq = 0,
    refSq = 0,
    oursSq = 0,
    dot = 0,
    maxRef = 0,
    maxAbs = -1,
    worst = 0,
    nan = 0,
    inf = 0,
    maxUlp = 0;
  const abs = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const a = ours[i];
    const b = ref[i];
    if (Number.isNaN(a)) nan++;
    else if (!Number.isFinite(a)) inf++;
    const d = Math.abs(a - b);
    const dd = Number.isFinite(d) ? d : Infinity;
    abs[i] = dd;
    if (dd > maxAbs || maxAbs < 0) {
      maxAbs = dd;
      worst = i;
    }
    sumAbs += dd;
    sumSq += dd * dd;
    refSq += b * b;
    oursSq += a * a;
    dot += a * b;
    maxRef = Math.max(maxRef, Math.abs(b));
    if (withUlp) maxUlp = Math.max(maxUlp, dd / ulpOf(b));
  }
  if (n === 0) maxAbs = 0;
  const rmse = n ? Math.sqrt(sumSq / n) : 0;
  const sorted = abs.sort();
  const p99 = n ? sorted[Math.min(n - 1, Math.ceil(0.99 * n) - 1)] : 0;
  const cosine = refSq === 0 && oursSq === 0 ? 1 : dot / Math.sqrt(refSq * oursSq);
  const metrics: TensorMetrics = {
    count: n,
    maxAbs,
    meanAbs: n ? sumAbs / n : 0,
    rmse,
    relL2: refSq > 0 ? Math.sqrt(sumSq) / Math.sqrt(refSq) : Math.sqrt(sumSq) === 0 ? 0 : Infinity,
    cosine: Number.isFinite(cosine) ? cosine : NaN,
    psnr: rmse === 0 ? Infinity : 20 * Math.log10(maxRef / rmse),
    p99Abs: p99,
    nanCount: nan,
    infCount: inf,
    worstIndex: unravel(worst, dims),
    worstOurs: Number(ours[worst] ?? 0),
    worstRef: Number(ref[worst] ?? 0),
  };
  return withUlp ? { ...metrics, maxUlp } : metrics;
}

/** uint8 picture metrics; pixelmatch counts perceptibly different pixels (YIQ, threshold 0.1). */
export function imageMetrics(ours: Uint8Array, ref: Uint8Array, width: number, height: number, diffRgba?: Uint8Array): ImageMetrics {
  const toRgba = (rgb: Uint8Array) => {
    const out = new Uint8Array(width * height * 4);
    for (let i = 0; i < width * height; i++) {
      out[4 * i] = rgb[3 * i];
      out[4 * i + 1] = rgb[3 * i + 1];
      out[4 * i + 2] = rgb[3 * i + 2];
      out[4 * i + 3] = 255;
    }
    return out;
  };
  const mismatched = pixelmatch(toRgba(ours), toRgba(ref), diffRgba ?? null, width, height, { threshold: 0.1 });
  let sq = 0,
    maxAbs = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = ours[i] - ref[i];
    sq += d * d;
    maxAbs = Math.max(maxAbs, Math.abs(d));
  }
  const rmse = Math.sqrt(sq / ref.length);
  return { width, height, psnrU8: rmse === 0 ? Infinity : 20 * Math.log10(255 / rmse), maxAbsU8: maxAbs, mismatchedPixels: mismatched };
}

/** A heat map of |ours - ref| per pixel (max over channels), black = equal, yellow-white = large. */
export function diffHeatmap(ours: Uint8Array, ref: Uint8Array, width: number, height: number): Uint8Array {
  const out = new Uint8Array(width * height * 3);
  let peak = 1;
  const d = new Float32Array(width * height);
  for (let i = 0; i < width * height; i++) {
    let m = 0;
    for (let c = 0; c < 3; c++) m = Math.max(m, Math.abs(ours[3 * i + c] - ref[3 * i + c]));
    d[i] = m;
    peak = Math.max(peak, m);
  }
  for (let i = 0; i < d.length; i++) {
    // inferno-like ramp: black -> red -> yellow -> white, scaled to the largest difference
    const v = d[i] / peak;
    out[3 * i] = Math.round(255 * Math.min(1, v * 3));
    out[3 * i + 1] = Math.round(255 * Math.min(1, Math.max(0, v * 3 - 1)));
    out[3 * i + 2] = Math.round(255 * Math.min(1, Math.max(0, v * 3 - 2)));
  }
  return out;
}
