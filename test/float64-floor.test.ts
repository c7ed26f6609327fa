/**
 * The float64 floor (issue 10, item 1): the tiny set's manifest carries, for every model-stage case,
 * the float32 reference's own error against float64 for each tensor the runner compares; the runner
 * turns it into `excess` (our relL2 ÷ that floor), judges it when a profile names it, and says so
 * when a set has no floor.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ReferenceSet } from "../src/conformance/cases/reference-set";
import { runConformance } from "../src/conformance/runner";
import { loadTolerances, ToleranceFile } from "../src/conformance/judge/tolerances";
import { MIN_FLOOR_REL_L2, excessRatio, FloorEntry, FloorSpread } from "../src/conformance/judge/float64-floor";
import { renderMarkdown } from "../src/conformance/report";
import { REFS, TINY } from "./helpers/fixtures";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-floor-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The tensors the runner compares per model stage, each of which must have a floor. */
const COMPARED: Readonly<Record<string, readonly string[]>> = {
  text_encoder: ["last_hidden_state", "penultimate_normed"],
  unet: ["out_sample"],
  vae_decode: ["image"],
  vae_encode: ["mean", "std"],
  vae_roundtrip: ["latents", "reconstruction"],
  end_to_end: ["final_latents", "latents_steps", "image_float"],
};

test("the tiny set's manifest carries a float64 floor for every model-stage case and compared tensor", () => {
  const set = ReferenceSet.open(REFS);
  expect((set.manifest as unknown as { float64_floor: unknown }).float64_floor).toBe(true);
  let checked = 0;
  for (const c of set.cases) {
    const names = COMPARED[c.stage];
    if (!names) continue;
    const floor = (c.meta as { float64_floor?: Record<string, { relL2: number; maxAbs: number; meanAbs: number }> }).float64_floor;
    expect(`${c.id}: ${floor ? "floor" : "NO FLOOR"}`).toBe(`${c.id}: floor`);
    for (const n of names) {
      const f = floor![n];
      // PyTorch's float32 against float64: above float32's rounding of a single value, far below any limit
      expect(`${c.id} ${n} ${f && f.relL2 > 1e-8 && f.relL2 < 1e-4 && f.maxAbs >= f.meanAbs && f.meanAbs > 0}`).toBe(`${c.id} ${n} true`);
    }
    checked++;
  }
  expect(checked).toBeGreaterThan(90);
});

function tolerancesWith(stage: string, limits: Record<string, number>): ToleranceFile {
  const t = loadTolerances();
  return {
    ...t,
    file: undefined,
    sha256: undefined,
    profiles: { ...t.profiles, fp32: { ...t.profiles.fp32, [stage]: { ...t.profiles.fp32[stage], ...limits } } },
  };
}

test("the runner reports excess = relL2 / floor per tensor, and an excess limit judges it", async () => {
  const set = ReferenceSet.open(REFS);
  const ids = ["vae_decode:64x64", "unet:txt2img-pndm-64x64-step03", "text_encoder:astronaut"];
  const lines: string[] = [];
  const report = await runConformance({
    models: [{ label: "fp32", dir: TINY }],
    references: REFS,
    profile: "fp32",
    only: ids,
    outDir: null,
    threads: 1,
    log: (l) => lines.push(l),
  });
  for (const id of ids) {
    const r = report.results.find((x) => x.id === id)!;
    expect(r.status).toBe("pass");
    expect(r.float64Floor).toBe("yes");
    const meta = set.get(id).meta as { float64_floor: Record<string, FloorEntry>; float32_spread?: FloorSpread };
    for (const [name, m] of Object.entries(r.metrics)) {
      expect(m.float64RelL2).toBe(meta.float64_floor[name].relL2);
      // the divisor: the largest error against float64 over the reference and the set's other float32 runs
      const spread = Object.values(meta.float32_spread ?? {}).map((v) => v[name]?.relL2 ?? 0);
      const envelope = Math.max(meta.float64_floor[name].relL2, ...spread);
      expect(m.floorRelL2).toBe(envelope);
      expect(m.floorSamples).toBe(1 + spread.length);
      expect(m.excess).toBe(m.relL2 / Math.max(envelope, MIN_FLOOR_REL_L2));
    }
    expect(lines.find((l) => l.includes(` ${id} `))).toMatch(/excess \d\S* ?x float32 floor/);
  }
  expect(renderMarkdown(report)).toContain("drift in units of how far PyTorch's own float32 runs land");

  // a limit on excess is a limit like any other: far below the measured ratio, the case fails on it
  const strict = await runConformance({
    models: [{ label: "fp32", dir: TINY }],
    references: REFS,
    profile: "fp32",
    only: ["vae_decode:64x64"],
    outDir: null,
    threads: 1,
    tolerances: tolerancesWith("vae_decode", { excess: 1e-3 }),
  });
  const r = strict.results[0];
  expect(r.status).toBe("fail");
  expect(r.checks.find((k) => !k.ok)).toMatchObject({ tensor: "image", metric: "excess", limit: 1e-3 });
});

test("a zero floor divides by float32's unit roundoff, not by zero", () => {
  expect(excessRatio(3e-7, 0)).toBeCloseTo(3e-7 / 2 ** -24, 12);
  expect(Number.isFinite(excessRatio(1e-6, 0))).toBe(true);
});

/** A copy of two cases of the tiny set whose manifest lost its floors. */
function setWithoutFloor(name: string, noFloat64Flag: boolean): string {
  const dir = path.join(tmp, name);
  const manifest = JSON.parse(fs.readFileSync(path.join(REFS, "manifest.json"), "utf8"));
  manifest.cases = manifest.cases.filter((c: { id: string }) => c.id === "vae_decode:64x64" || c.id === "rng:seed42-3");
  for (const c of manifest.cases) {
    delete c.meta?.float64_floor;
    fs.mkdirSync(path.dirname(path.join(dir, c.file)), { recursive: true });
    fs.copyFileSync(path.join(REFS, c.file), path.join(dir, c.file));
  }
  if (noFloat64Flag) manifest.float64_floor = false;
  else delete manifest.float64_floor;
  fs.writeFileSync(path.join(dir, "manifest.json"), JSON.stringify(manifest));
  return dir;
}

test.each([
  ["--no-float64", true, "no (--no-float64)"],
  ["an older set", false, "no (the reference set records no float64 floor for this case)"],
])("a set without floors (%s) is reported as such, and judged as before", async (_what, flag, expected) => {
  const refs = setWithoutFloor(`nofloor-${flag}`, flag);
  const lines: string[] = [];
  const report = await runConformance({
    models: [{ label: "fp32", dir: TINY }],
    references: refs,
    profile: "fp32",
    outDir: null,
    threads: 1,
    log: (l) => lines.push(l),
  });
  const vae = report.results.find((x) => x.id === "vae_decode:64x64")!;
  expect(vae.status).toBe("pass");
  expect(vae.float64Floor).toBe(expected);
  expect(vae.metrics.image.excess).toBeUndefined();
  // no floor to divide by: the profile's stand-in limits judge it (tolerances.json without_floor)
  expect(vae.tolerance.source).toBe("without_floor.fp32.vae_decode");
  expect(vae.checks.map((k) => k.metric).sort()).toEqual(["maxAbs", "psnrU8"]);
  // not a model stage: no floor to have
  expect(report.results.find((x) => x.id === "rng:seed42-3")!.float64Floor).toBeUndefined();
  expect(lines.find((l) => l.includes(" vae_decode:64x64 "))).toContain("(float64 floor: no)");
  expect(renderMarkdown(report)).toContain(`no (1: ${expected.replace(/^no \((.*)\)$/, "$1").replace(/([\\`*_[\]<>|#~!])/g, "\\$1")})`);
});

test("a tensor whose correct float32 runs spread beyond float32's reach is shown, not judged; a case with nothing else is skipped with why", async () => {
  const dir = path.join(tmp, "unfixable");
  const manifest = JSON.parse(fs.readFileSync(path.join(REFS, "manifest.json"), "utf8"));
  manifest.cases = manifest.cases.filter((c: { id: string }) => c.id === "vae_decode:64x64" || c.id === "vae_roundtrip:64x64");
  for (const c of manifest.cases) {
    fs.mkdirSync(path.dirname(path.join(dir, c.file)), { recursive: true });
    fs.copyFileSync(path.join(REFS, c.file), path.join(dir, c.file));
  }
  // as if a loop had turned one ulp into a different picture: one variant 10 % from float64
  manifest.cases[0].meta.float32_spread = { ulp: { image: { relL2: 0.1, relL2Ref: 0.1 } } };
  manifest.cases[1].meta.float32_spread = { ulp: { latents: { relL2: 0.1, relL2Ref: 0.1 } } };
  fs.writeFileSync(path.join(dir, "manifest.json"), JSON.stringify(manifest));
  const report = await runConformance({
    models: [{ label: "fp32", dir: TINY }],
    references: dir,
    profile: "fp32",
    outDir: null,
    threads: 1,
  });
  const dec = report.results.find((x) => x.id === "vae_decode:64x64")!;
  expect(dec.status).toBe("skip");
  expect(dec.message).toContain("float32 cannot fix: image (correct float32 runs spread to relL2 1.00e-1");
  expect(dec.metrics.image.excess).toBeUndefined();
  expect(dec.metrics.image.floorRelL2).toBe(0.1);
  // the round trip's reconstruction is still judged; its latents are shown with their envelope only
  const rt = report.results.find((x) => x.id === "vae_roundtrip:64x64")!;
  expect(rt.status).toBe("pass");
  expect(rt.checks.map((k) => `${k.tensor} ${k.metric}`)).toEqual(["reconstruction excess"]);
  expect(rt.message).toContain("not judged, float32 cannot fix: latents");
}, 60_000);
