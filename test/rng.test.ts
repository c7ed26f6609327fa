/**
 * TorchGenerator against real torch: every reference case in fixtures/references/tiny-sd/cpu/rng
 * (written by scripts/refgen/rng_refs.py) is replayed from its seed, draw by draw, and compared bit
 * for bit. Cases named `...-cpudefault` come from torch's generic (non-AVX2) kernel and are held to
 * the ULP bound measured for the "generic" kernel; all others must be bit-exact.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { readSafetensors } from "../src/tensor/safetensors";
import { MT19937, TorchGenerator, fmaF32, normalizeSeed } from "../src/rng";

const REF_DIR = path.join(__dirname, "..", "fixtures", "references", "tiny-sd", "cpu", "rng");
/** Measured for the generic kernel (glibc logf/cosf/sinf are not correctly rounded). */
const GENERIC_MAX_ULP = 3;

const f32bits = new Float32Array(1);
const i32bits = new Int32Array(f32bits.buffer);

/** Map a float32 to an integer whose order and spacing match the floats (so |a - b| counts ULPs). */
function ordinal(x: number): number {
  f32bits[0] = x;
  const i = i32bits[0];
  return i < 0 ? -(i & 0x7fffffff) : i;
}

interface Comparison {
  n: number;
  exact: number;
  maxUlp: number;
}

function compare(ours: Float32Array, ref: Float32Array): Comparison {
  let exact = 0;
  let maxUlp = 0;
  for (let i = 0; i < ref.length; i++) {
    if (Object.is(ours[i], ref[i])) {
      exact++;
    } else {
      maxUlp = Math.max(maxUlp, Number.isNaN(ours[i]) ? Infinity : Math.abs(ordinal(ours[i]) - ordinal(ref[i])));
    }
  }
  return { n: ref.length, exact, maxUlp };
}

const files = fs.existsSync(REF_DIR)
  ? fs
      .readdirSync(REF_DIR)
      .filter((f) => f.endsWith(".safetensors"))
      .sort()
  : [];
const totals = { avx2: { n: 0, exact: 0, maxUlp: 0 }, generic: { n: 0, exact: 0, maxUlp: 0 } };

describe("TorchGenerator vs torch reference draws", () => {
  test("reference cases are present", () => {
    expect(files.length).toBeGreaterThanOrEqual(30);
  });

  describe.each(files)("%s", (file) => {
    const name = file.replace(/\.safetensors$/, "");
    const seedMatch = /^seed(\d+)-/.exec(name);
    const kernel = name.endsWith("-cpudefault") ? "generic" : "avx2";
    const bound = kernel === "avx2" ? "bit-exact" : `<= ${GENERIC_MAX_ULP} ULP`;

    test(`${kernel} kernel, ${bound}`, () => {
      expect(seedMatch).not.toBeNull();
      const seed = BigInt(seedMatch![1]);
      const { tensors } = readSafetensors(path.join(REF_DIR, file));
      const gen = new TorchGenerator(seed, { normalKernel: kernel });
      const lines: string[] = [];
      for (let i = 0; ; i++) {
        const t = tensors.get(`draw${i}`);
        if (!t) {
          expect(i).toBe(tensors.size);
          expect(i).toBeGreaterThan(0);
          break;
        }
        expect(t.dtype).toBe("float32");
        const ours = gen.randn(t.dims);
        const c = compare(ours, t.data as Float32Array);
        const tot = totals[kernel];
        tot.n += c.n;
        tot.exact += c.exact;
        tot.maxUlp = Math.max(tot.maxUlp, c.maxUlp);
        lines.push(`draw${i} [${t.dims.join("x")}]: ${c.exact}/${c.n} bit-exact, max ${c.maxUlp} ULP`);
        if (kernel === "avx2") {
          expect(c.exact).toBe(c.n);
        } else {
          expect(c.maxUlp).toBeLessThanOrEqual(GENERIC_MAX_ULP);
        }
      }
      if (lines.some((l) => !l.includes(" 0 ULP"))) console.log(`${name}: ${lines.join("; ")}`);
    });
  });

  afterAll(() => {
    const pct = (t: Comparison) => (t.n ? ((100 * t.exact) / t.n).toFixed(4) : "n/a");
    console.log(
      `rng vs torch: avx2 kernel ${totals.avx2.exact}/${totals.avx2.n} bit-exact (${pct(totals.avx2)}%), max ${totals.avx2.maxUlp} ULP; ` +
        `generic kernel ${totals.generic.exact}/${totals.generic.n} bit-exact (${pct(totals.generic)}%), max ${totals.generic.maxUlp} ULP`,
    );
  });
});

describe("MT19937 engine", () => {
  test("matches the reference mt19937 stream (first output and the C++ standard's 10000th)", () => {
    const m = new MT19937(5489);
    expect(m.nextUint32()).toBe(3499211612);
    for (let i = 2; i < 10000; i++) m.nextUint32();
    expect(m.nextUint32()).toBe(4123659995);
  });

  test("only the low 32 bits of the seed reach the state; seeds are taken modulo 2**64", () => {
    const a = new TorchGenerator(5);
    const b = new TorchGenerator(2n ** 32n + 5n);
    for (let i = 0; i < 1000; i++) expect(a.random()).toBe(b.random());
    expect(b.initialSeed()).toBe(2n ** 32n + 5n);
    expect(normalizeSeed(-1)).toBe(2n ** 64n - 1n);
    expect(() => normalizeSeed(2n ** 64n)).toThrow(RangeError);
    expect(() => normalizeSeed(0.5)).toThrow(RangeError);
  });

  test("random64 puts the first draw in the high half", () => {
    const a = new TorchGenerator(42);
    const b = new TorchGenerator(42);
    const hi = BigInt(b.random());
    const lo = BigInt(b.random());
    expect(a.random64()).toBe((hi << 32n) | lo);
  });

  test("snapshot mirrors torch's left_/next_ counters", () => {
    const m = new MT19937(42);
    expect(m.snapshot()).toMatchObject({ next: 0, left: 1 });
    m.nextUint32();
    m.nextUint32();
    expect(m.snapshot()).toMatchObject({ next: 2, left: 623 });
  });
});

describe("TorchGenerator state", () => {
  test("clone and getState continue the identical stream, cached normal included", () => {
    const g = new TorchGenerator(1234);
    g.randn([3]); // odd count: leaves a cached normal on the generator
    const c = g.clone();
    const s = g.getState();
    const next = g.randn([5]);
    expect(c.randn([5])).toEqual(next);
    expect(TorchGenerator.fromState(s).randn([5])).toEqual(next);
  });

  test("the small-tensor cache survives a >= 16 draw and is cleared by manualSeed", () => {
    const g = new TorchGenerator(42);
    const first = g.randn([1]);
    g.randn([16]);
    const h = new TorchGenerator(42);
    h.normalDouble();
    const cached = Math.fround(h.normalDouble());
    expect(g.randn([1])[0]).toBe(cached);
    g.manualSeed(42);
    expect(g.randn([1])).toEqual(first);
  });

  test("an empty shape draws nothing", () => {
    const g = new TorchGenerator(0);
    expect(g.randn([2, 0, 3]).length).toBe(0);
    expect(g.randn([1])).toEqual(new TorchGenerator(0).randn([1]));
  });
});

describe("fmaF32", () => {
  test("rounds once, where a double sum then float32 rounding would round twice", () => {
    const a = 1 + 2 ** -12;
    const b = 1 + 2 ** -12; // a * b = 1 + 2**-11 + 2**-24, a float32 midpoint
    expect(Math.fround(a * b + 2 ** -80)).toBe(1 + 2 ** -11); // double rounding: tie to even
    expect(fmaF32(a, b, 2 ** -80)).toBe(1 + 2 ** -11 + 2 ** -23);
    expect(fmaF32(a, b, -(2 ** -80))).toBe(1 + 2 ** -11);
    expect(fmaF32(-a, b, -(2 ** -80))).toBe(-(1 + 2 ** -11 + 2 ** -23));
    expect(fmaF32(0.5, 3, 0.25)).toBe(1.75);
  });
});
