/**
 * src/conformance/judge/metrics.ts: every figure the conformance verdicts rest on. Expected values are
 * derived by hand in the comments (small arrays) or by a plain double-precision formula written
 * here, never taken from the code under test.
 */
import { unravel, ulpOf, tensorMetrics, imageMetrics, diffHeatmap } from "../src/conformance/judge/metrics";

/** |actual - expected| within a relative 1e-12 (the formulas here and the code may sum in another order) */
function expectClose(actual: number, expected: number, rel = 1e-12): void {
  expect(Number.isFinite(expected)).toBe(true);
  expect(Math.abs(actual - expected)).toBeLessThanOrEqual(rel * Math.max(1, Math.abs(expected)));
}

/** the spacing from |x| to the next float32 up, from the bits (an independent float32 ULP) */
function f32Spacing(x: number): number {
  const f = new Float32Array([Math.abs(x)]);
  const lo = f[0];
  new Uint32Array(f.buffer)[0] += 1;
  return f[0] - lo;
}

describe("unravel", () => {
  test("row-major multi-index (the last dimension varies fastest)", () => {
    expect(unravel(0, [2, 3])).toEqual([0, 0]);
    expect(unravel(2, [2, 3])).toEqual([0, 2]);
    expect(unravel(3, [2, 3])).toEqual([1, 0]);
    expect(unravel(5, [2, 3])).toEqual([1, 2]);
    // 13 = 1·12 + 0·4 + 1
    expect(unravel(13, [2, 3, 4])).toEqual([1, 0, 1]);
    // 23 = 1·12 + 2·4 + 3, the last element
    expect(unravel(23, [2, 3, 4])).toEqual([1, 2, 3]);
    expect(unravel(7, [8])).toEqual([7]);
    expect(unravel(0, [])).toEqual([]);
  });
});

describe("ulpOf (float32 spacing)", () => {
  test("powers of two and the values between them", () => {
    expect(ulpOf(1)).toBe(2 ** -23);
    expect(ulpOf(1.5)).toBe(2 ** -23);
    expect(ulpOf(2)).toBe(2 ** -22); // the spacing above 2, not below
    expect(ulpOf(3)).toBe(2 ** -22);
    expect(ulpOf(-3)).toBe(2 ** -22); // the sign does not matter
    expect(ulpOf(1024)).toBe(2 ** -13);
    expect(ulpOf(0.75)).toBe(2 ** -24);
  });

  test("zero, the smallest normal and subnormals: the subnormal spacing 2^-149", () => {
    expect(ulpOf(0)).toBe(2 ** -149);
    expect(ulpOf(2 ** -126)).toBe(2 ** -149); // smallest normal: 2^(-126-23)
    expect(ulpOf(2 ** -127)).toBe(2 ** -149);
    expect(ulpOf(2 ** -149)).toBe(2 ** -149);
    expect(ulpOf(2 ** -125)).toBe(2 ** -148);
  });

  test("equals the distance to the next float32, read from the bits", () => {
    const values = [1, 1.5, 2, 3, 0.1, -0.1, 1 / 3, 7, 1000, 65504, 123456.789, 3e38, 1e-30, 1e-40, 2 ** -126, 0.99999994].map(Math.fround);
    for (const v of values) expect([v, ulpOf(v)]).toEqual([v, f32Spacing(v)]);
  });
});

describe("tensorMetrics", () => {
  test("every figure on a small hand-worked pair", () => {
    // ref = [3, 0, -4, 0], ours = [3, -2, -4, 1]: d = ours - ref = [0, -2, 0, 1], |d| = [0, 2, 0, 1]
    //   sum|d| = 3, sum d² = 5, ||ref||² = 25, ||ours||² = 9 + 4 + 16 + 1 = 30, ours·ref = 9 + 16 = 25
    //   max|ref| = 4 (a negative value: PSNR takes the magnitude), worst: flat index 1 = [0, 1] in 2×2
    const ref = [3, 0, -4, 0];
    const ours = Float32Array.of(3, -2, -4, 1);
    const m = tensorMetrics(ours, ref, [2, 2]);
    expect(m.count).toBe(4);
    expect(m.maxAbs).toBe(2);
    expect(m.meanAbs).toBe(3 / 4);
    expectClose(m.rmse, Math.sqrt(5 / 4));
    expectClose(m.relL2, Math.sqrt(5) / 5);
    expectClose(m.cosine, 25 / Math.sqrt(30 * 25));
    expectClose(m.psnr, 20 * Math.log10(4 / Math.sqrt(5 / 4)));
    expect(m.p99Abs).toBe(2); // nearest rank ceil(0.99·4) = 4: the largest
    expect(m.nanCount).toBe(0);
    expect(m.infCount).toBe(0);
    expect(m.worstIndex).toEqual([0, 1]);
    expect(m.worstOurs).toBe(-2);
    expect(m.worstRef).toBe(0);
    expect("maxUlp" in m).toBe(false); // only with withUlp
  });

  test("identical inputs: zero error, cosine 1, PSNR Infinity", () => {
    const m = tensorMetrics([1, -2, 3], Float32Array.of(1, -2, 3), [3]);
    expect(m.maxAbs).toBe(0);
    expect(m.meanAbs).toBe(0);
    expect(m.rmse).toBe(0);
    expect(m.relL2).toBe(0);
    expect(m.cosine).toBe(1); // 14 / sqrt(14 · 14)
    expect(m.psnr).toBe(Infinity);
    expect(m.p99Abs).toBe(0);
    expect(m.worstIndex).toEqual([0]); // no difference anywhere: the first element
    expect([m.worstOurs, m.worstRef]).toEqual([1, 1]);
  });

  test("scale and direction: 2·ref has relL2 1 and cosine 1, -ref relL2 2 and cosine -1, orthogonal cosine 0", () => {
    const ref = [1, -2, 2]; // ||ref|| = 3
    const twice = tensorMetrics(
      ref.map((v) => 2 * v),
      ref,
      [3],
    );
    expectClose(twice.relL2, 1);
    expectClose(twice.cosine, 1);
    const negated = tensorMetrics(
      ref.map((v) => -v),
      ref,
      [3],
    );
    expectClose(negated.relL2, 2);
    expectClose(negated.cosine, -1);
    const orthogonal = tensorMetrics([0, 1], [1, 0], [2]);
    expectClose(orthogonal.relL2, Math.SQRT2);
    expect(orthogonal.cosine).toBe(0);
  });

  test("ties for the worst element keep the first", () => {
    const m = tensorMetrics([1, 2, 3, 5], [0, 1, 2, 4], [2, 2]); // |d| = 1 everywhere
    expect(m.worstIndex).toEqual([0, 0]);
    expect([m.worstOurs, m.worstRef]).toEqual([1, 0]);
  });

  test("p99 is the nearest-rank 99th percentile of |d|, sorted as numbers", () => {
    // |d| over 100 elements is a permutation of 1..100 (37 is prime to 100) with mixed signs:
    // rank ceil(0.99 · 100) = 99, so the 99th smallest, 99 (a string sort would put 100 second)
    const ours = Array.from({ length: 100 }, (_, i) => (((i * 37) % 100) + 1) * (i % 2 ? -1 : 1));
    const m = tensorMetrics(ours, new Array<number>(100).fill(0), [10, 10]);
    expect(m.p99Abs).toBe(99);
    expect(m.maxAbs).toBe(100);
    expect(m.meanAbs).toBe(50.5); // (1 + ... + 100) / 100
    const at = ours.findIndex((v) => Math.abs(v) === 100);
    expect(m.worstIndex).toEqual([Math.floor(at / 10), at % 10]);
  });

  test("a zero reference: relL2 0 if ours is zero too, else Infinity; cosine 1 / NaN; PSNR Infinity / -Infinity", () => {
    const zero = tensorMetrics([0, 0], [0, 0], [2]);
    expect(zero.relL2).toBe(0);
    expect(zero.cosine).toBe(1); // both all-zero: defined as aligned
    expect(zero.psnr).toBe(Infinity);
    const off = tensorMetrics([3, 4], [0, 0], [2]);
    expect(off.relL2).toBe(Infinity);
    expect(off.cosine).toBeNaN(); // 0 / 0: no direction to compare with
    expect(off.psnr).toBe(-Infinity); // 20 log10(max|ref| = 0 / rmse)
    expect(off.maxAbs).toBe(4);
    expectClose(off.rmse, Math.sqrt(25 / 2));
  });

  test("all-zero ours against a non-zero reference: relL2 1, cosine NaN", () => {
    const m = tensorMetrics([0, 0], [3, 4], [2]);
    expect(m.relL2).toBe(1); // ||0 - ref|| / ||ref||
    expect(m.cosine).toBeNaN();
    expect(m.maxAbs).toBe(4);
    expect(m.worstIndex).toEqual([1]);
  });

  test("NaN and ±Infinity in ours are counted and make the difference infinite", () => {
    const m = tensorMetrics([1, NaN, 3, Infinity, -Infinity], [1, 2, 3, 4, 5], [5]);
    expect(m.nanCount).toBe(1);
    expect(m.infCount).toBe(2);
    expect(m.maxAbs).toBe(Infinity);
    expect(m.worstIndex).toEqual([1]); // the NaN, the first infinite difference
    expect(m.worstOurs).toBeNaN();
    expect(m.worstRef).toBe(2);
    expect(m.meanAbs).toBe(Infinity);
    expect(m.rmse).toBe(Infinity);
    expect(m.relL2).toBe(Infinity);
    expect(m.cosine).toBeNaN();
    expect(m.psnr).toBe(-Infinity); // 20 log10(5 / Infinity)
    expect(m.p99Abs).toBe(Infinity);
  });

  test("NaN in the reference only: an infinite difference, but not counted (the counts are of ours)", () => {
    const m = tensorMetrics([1, 2], [1, NaN], [2]);
    expect(m.nanCount).toBe(0);
    expect(m.infCount).toBe(0);
    expect(m.maxAbs).toBe(Infinity);
    expect(m.worstIndex).toEqual([1]);
    expect(m.relL2).toBe(Infinity);
    // NaN against NaN is a mismatch too, never equal
    const both = tensorMetrics([NaN], [NaN], [1]);
    expect(both.nanCount).toBe(1);
    expect(both.maxAbs).toBe(Infinity);
  });

  test("a length mismatch is refused", () => {
    expect(() => tensorMetrics([1, 2, 3], [1, 2], [2])).toThrow(RangeError);
    expect(() => tensorMetrics([1, 2, 3], [1, 2], [2])).toThrow("metrics: 3 vs 2 elements");
  });

  test("no elements: zero error, cosine 1, PSNR Infinity", () => {
    const m = tensorMetrics(new Float32Array(0), [], [0, 3]);
    expect(m.count).toBe(0);
    expect([m.maxAbs, m.meanAbs, m.rmse, m.relL2, m.p99Abs]).toEqual([0, 0, 0, 0, 0]);
    expect(m.cosine).toBe(1);
    expect(m.psnr).toBe(Infinity);
    expect([m.worstOurs, m.worstRef]).toEqual([0, 0]);
  });

  test("differences are taken in float64, not rounded to float32", () => {
    // 2^24 + 1 has no float32: a float32 subtraction would give 0
    const m = tensorMetrics(Float32Array.of(2 ** 24), [2 ** 24 + 1], [1]);
    expect(m.maxAbs).toBe(1);
    // float32 0.1 against double 0.1: the float32 rounding error itself, about 1.5e-9
    const tenth = tensorMetrics(Float32Array.of(0.1), [0.1], [1]);
    expect(tenth.maxAbs).toBe(Math.abs(Math.fround(0.1) - 0.1));
    expect(tenth.maxAbs).toBeGreaterThan(0);
    // accumulated in float64: after a first d² of 1, 4096 further d² of 2^-24 each add 2^-12
    // (in float32, 1 + 2^-24 rounds back to 1 every time and the sum stays 1)
    const n = 4097;
    const ours = new Array<number>(n).fill(2 ** -12);
    ours[0] = 2;
    const ref = new Array<number>(n).fill(0);
    ref[0] = 1;
    const acc = tensorMetrics(ours, ref, [n]);
    expectClose(acc.relL2, Math.sqrt(1 + 2 ** -12)); // ||ref|| = 1
    expectClose(acc.rmse, Math.sqrt((1 + 2 ** -12) / n));
    expectClose(acc.meanAbs, 2 / n); // (1 + 4096 · 2^-12) / 4097
  });

  test("withUlp: the largest difference in float32 ULPs of the reference value", () => {
    // ref 1: 1 ulp (2^-23); ref 2: 3 ulps of 2^-22 (the spacing above 2, even below it);
    // ref 0: 5 subnormal spacings; ref -4: 7 ulps of 2^-21, the largest
    const ref = [1, 2, 0, -4];
    const ours = [1 + 2 ** -23, 2 - 3 * 2 ** -22, 5 * 2 ** -149, -4 - 7 * 2 ** -21];
    const m = tensorMetrics(ours, ref, [4], true);
    expect(m.maxUlp).toBe(7);
    expect(tensorMetrics(ours.slice(0, 3), ref.slice(0, 3), [3], true).maxUlp).toBe(5);
    expect(tensorMetrics([1, 2], [1, 2], [2], true).maxUlp).toBe(0);
  });
});

describe("imageMetrics", () => {
  /** a w×h RGB picture of one colour */
  const flat = (w: number, h: number, v: number) => new Uint8Array(w * h * 3).fill(v);

  test("identical pictures: PSNR Infinity, no difference, no mismatched pixel", () => {
    const ref = flat(3, 2, 77);
    const m = imageMetrics(ref.slice(), ref, 3, 2);
    expect(m).toEqual({ width: 3, height: 2, psnrU8: Infinity, maxAbsU8: 0, mismatchedPixels: 0 });
  });

  test("PSNR over every channel, the largest |difference|, pixelmatch's count and its diff picture", () => {
    // 3×3 gray 128; ours: the centre pixel black (-128 in each channel) and the corner pixel
    // 0 one red level up. sum d² = 3·128² + 1 over 27 channel values; max |d| = 128 (a drop).
    // pixelmatch (YIQ, threshold 0.1: counted when the squared distance is above 35215·0.1² = 352.15):
    // the black centre is ≈ 0.5053·128² ≈ 8279 away, counted; one red level ≈ 0.16, not counted.
    const ref = flat(3, 3, 128);
    const ours = ref.slice();
    ours.fill(0, 12, 15);
    ours[0] = 129;
    const diff = new Uint8Array(3 * 3 * 4);
    const m = imageMetrics(ours, ref, 3, 3, diff);
    expectClose(m.psnrU8, 20 * Math.log10(255 / Math.sqrt((3 * 128 * 128 + 1) / 27)));
    expect(m.maxAbsU8).toBe(128);
    expect(m.mismatchedPixels).toBe(1);
    expect([m.width, m.height]).toEqual([3, 3]);
    // pixelmatch paints a counted pixel in its diff colour, red, opaque
    expect(Array.from(diff.subarray(16, 20))).toEqual([255, 0, 0, 255]);
    // and the unchanged ones as a faded (not red) copy
    expect(diff[4 * 8]).toBe(diff[4 * 8 + 1]);
  });

  test("the perceptibility threshold is 0.1: a gray step of 27 counts, 26 does not", () => {
    // a gray step k moves only Y (the I and Q weights sum to 0): squared distance 0.5053·k²;
    // 0.5053·27² ≈ 368.4 > 352.15 > 0.5053·26² ≈ 341.6
    const step = (k: number) => {
      const ref = flat(3, 3, 100);
      const ours = ref.slice();
      ours.fill(100 + k, 12, 15);
      return imageMetrics(ours, ref, 3, 3);
    };
    expect(step(27).mismatchedPixels).toBe(1);
    expect(step(26).mismatchedPixels).toBe(0);
    expect(step(26).maxAbsU8).toBe(26);
    expectClose(step(26).psnrU8, 20 * Math.log10(255 / Math.sqrt((3 * 26 * 26) / 27)));
  });
  test("every channel is compared: a step of 100 on red, green or blue alone is a mismatched pixel", () => {
    // from gray 100, one channel up by 100; pixelmatch's squared YIQ distance 0.5053·y² + 0.299·i² + 0.1957·q²:
    //   red   y 29.9, i 59.6, q 21.1  ->  452 + 1062 + 87  ≈ 1601
    //   green y 58.7, i 27.4, q 52.3  -> 1739 +  225 + 535 ≈ 2498
    //   blue  y 11.4, i 32.2, q 31.1  ->   66 +  310 + 189 ≈  565   (all above 352.15)
    for (const c of [0, 1, 2]) {
      const ref = flat(3, 3, 100);
      const ours = ref.slice();
      ours[12 + c] = 200;
      const m = imageMetrics(ours, ref, 3, 3);
      expect([c, m.mismatchedPixels, m.maxAbsU8]).toEqual([c, 1, 100]);
    }
  });
});

describe("diffHeatmap", () => {
  test("max |difference| over channels, scaled to the largest, on a black-red-yellow-white ramp", () => {
    // 6×1, ref all 50; per pixel the largest channel difference m, peak 90, v = m / 90:
    //   m 0 -> black; m 10 (a drop) -> v 1/9: R 255/3 = 85; m 30 -> v 1/3: R 255;
    //   m 50 (G, with smaller R and B) -> v 5/9: R 255, G 255·(5/3 - 1) = 170; m 80 -> v 8/9: R, G 255, B 170;
    //   m 90 -> white
    const ref = new Uint8Array(18).fill(50);
    const ours = Uint8Array.from([50, 50, 50, 40, 50, 50, 50, 80, 50, 60, 100, 30, 50, 50, 130, 140, 50, 50]);
    const h = diffHeatmap(ours, ref, 6, 1);
    expect(h).toHaveLength(18);
    expect(Array.from(h)).toEqual([0, 0, 0, 85, 0, 0, 255, 0, 0, 255, 170, 0, 255, 255, 170, 255, 255, 255]);
  });

  test("channel levels are rounded to nearest", () => {
    // 4×1, ref 0, m = 1, 60, 77, 100 (peak 100): 3v = 0.03, 1.8, 2.31, 3
    //   R 255·0.03 = 7.65 -> 8; G 255·0.8 = 204; B 255·0.31 = 79.05 -> 79; white
    const ref = new Uint8Array(12);
    const ours = Uint8Array.from([1, 0, 0, 0, 60, 0, 0, 0, 77, 100, 100, 100]);
    expect(Array.from(diffHeatmap(ours, ref, 4, 1))).toEqual([8, 0, 0, 255, 204, 0, 255, 255, 79, 255, 255, 255]);
  });

  test("identical pictures are black; the scale never divides by less than 1", () => {
    const ref = new Uint8Array(2 * 2 * 3).fill(9);
    expect(Array.from(diffHeatmap(ref.slice(), ref, 2, 2))).toEqual(new Array(12).fill(0));
    // a single difference of 1 is the peak: white, the rest black
    const ours = ref.slice();
    ours[5] = 10;
    expect(Array.from(diffHeatmap(ours, ref, 2, 2))).toEqual([0, 0, 0, 255, 255, 255, 0, 0, 0, 0, 0, 0]);
  });
});
