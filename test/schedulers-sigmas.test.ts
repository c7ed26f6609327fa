/**
 * The sigma re-spacings (src/schedulers/sigma-schedules.ts) against their definitions. The trace
 * cases (schedulers.test.ts, schedulers-multistep.test.ts) check them against diffusers itself; here
 * the Beta quantile is checked against the closed forms some Beta distributions have, and each
 * schedule against the property that defines it.
 */
import { betaCdf, betaQuantile, betaSigmas, exponentialSigmas, karrasSigmas } from "../src/schedulers/sigma-schedules";

/** |a - b| in units of the float64 spacing at b */
const ulps = (a: number, b: number) => Math.abs(a - b) / (b === 0 ? Number.MIN_VALUE : 2 ** (Math.floor(Math.log2(Math.abs(b))) - 52));

const PS = [1e-100, 1e-15, 1e-9, 1e-4, 0.01, 0.1, 0.25, 1 / 3, 0.5, 0.6, 0.75, 0.9, 0.99, 1 - 1e-9, 1 - 1e-15];

describe("Beta quantile", () => {
  // distributions whose CDF inverts in closed form: Beta(1, 1) = U(0, 1); Beta(2, 1): x^2;
  // Beta(1, 2): 1 - (1 - x)^2; Beta(1/2, 1/2), the arcsine law: (2/pi) asin(sqrt(x))
  const CLOSED: [string, number, number, (p: number) => number][] = [
    ["Beta(1, 1)", 1, 1, (p) => p],
    ["Beta(2, 1)", 2, 1, (p) => Math.sqrt(p)],
    ["Beta(1, 2)", 1, 2, (p) => -Math.expm1(0.5 * Math.log1p(-p))],
    ["Beta(1/2, 1/2)", 0.5, 0.5, (p) => Math.sin((Math.PI / 2) * p) ** 2],
  ];
  test.each(CLOSED)("%s matches its closed form to a few ulps", (_name, a, b, exact) => {
    for (const p of PS) {
      const want = exact(p);
      const got = betaQuantile(p, a, b);
      // a relative bound: the closed forms are themselves rounded a few times
      expect(`p=${p}: ${Math.abs(got - want) <= 16 * Number.EPSILON * want}`).toBe(`p=${p}: true`);
    }
  });

  test("Beta(0.6, 0.6): the CDF of the quantile is p, and the quantile is symmetric about 1/2", () => {
    let worst = 0;
    for (let k = 1; k < 1000; k++) {
      const p = k / 1000;
      const x = betaQuantile(p, 0.6, 0.6);
      expect(x).toBeGreaterThan(0);
      expect(x).toBeLessThan(1);
      worst = Math.max(worst, ulps(betaCdf(x, 0.6, 0.6), p));
      // F^-1(1 - p) = 1 - F^-1(p) for a = b
      expect(Math.abs(betaQuantile(1 - p, 0.6, 0.6) - (1 - x))).toBeLessThanOrEqual(4 * Number.EPSILON);
    }
    expect(worst).toBeLessThanOrEqual(16);
    expect(betaQuantile(0.5, 0.6, 0.6)).toBeCloseTo(0.5, 15);
    expect([betaQuantile(0, 0.6, 0.6), betaQuantile(1, 0.6, 0.6)]).toEqual([0, 1]);
    expect(betaQuantile(1.5, 0.6, 0.6)).toBeNaN();
  });

  test("the CDF is increasing and the quantile inverts it", () => {
    let prev = 0;
    for (let x = 0.001; x < 1; x += 0.001) {
      const c = betaCdf(x, 0.6, 0.6);
      expect(c).toBeGreaterThan(prev);
      prev = c;
      expect(Math.abs(betaQuantile(c, 0.6, 0.6) - x)).toBeLessThanOrEqual(64 * Number.EPSILON);
    }
  });
});

describe("sigma re-spacings between sigma_max and sigma_min", () => {
  const MIN = 0.0291675;
  const MAX = 14.6146;

  test("exponential: equal ratios from sigma_max down to sigma_min", () => {
    const s = exponentialSigmas(12, MIN, MAX);
    expect(s.length).toBe(12);
    expect(s[0]).toBeCloseTo(MAX, 12);
    expect(s[11]).toBeCloseTo(MIN, 14);
    const ratio = (MIN / MAX) ** (1 / 11);
    for (let i = 1; i < 12; i++) expect(Math.abs(s[i] / s[i - 1] - ratio)).toBeLessThan(1e-13);
  });

  test("karras: equal steps in sigma^(1/7)", () => {
    const s = karrasSigmas(12, MIN, MAX);
    const step = (MIN ** (1 / 7) - MAX ** (1 / 7)) / 11;
    for (let i = 1; i < 12; i++) expect(Math.abs(s[i] ** (1 / 7) - s[i - 1] ** (1 / 7) - step)).toBeLessThan(1e-13);
  });

  test("beta: sigma_min + (sigma_max - sigma_min) F^-1(1 - i/(n-1)), decreasing, denser at both ends", () => {
    const n = 12;
    const s = betaSigmas(n, MIN, MAX);
    expect(s[0]).toBeCloseTo(MAX, 12);
    expect(s[n - 1]).toBe(MIN);
    for (let i = 0; i < n; i++) {
      // the definition, through the CDF: (sigma - min) / (max - min) has CDF 1 - i / (n - 1)
      expect(betaCdf((s[i] - MIN) / (MAX - MIN), 0.6, 0.6)).toBeCloseTo(1 - i / (n - 1), 12);
      if (i > 0) expect(s[i]).toBeLessThan(s[i - 1]);
    }
    // Beta(0.6, 0.6) puts more mass near 0 and 1: the end steps are shorter than the middle one
    const gap = (i: number) => s[i] - s[i + 1];
    expect(gap(0)).toBeLessThan(gap(5));
    expect(gap(n - 2)).toBeLessThan(gap(5));
    // symmetric about the midpoint of [sigma_min, sigma_max]
    for (let i = 0; i < n; i++) expect(s[i] - MIN).toBeCloseTo(MAX - s[n - 1 - i], 12);
  });
});
