/**
 * Verdicts that do not depend on the machine: the figures an Intel Xeon (AVX-512, AMX) measured for
 * the bundled 2-block fixture, replayed through the judging code (the stored metrics, not a re-run),
 * so the rule is checked on both kinds of CPU's numbers whatever CPU runs this test.
 *
 * Measured there (onnxruntime-node 1.30.0, threads 1 and 2 alike): the 7-step DDIM img2img run's
 * final latents at relL2 6.64e-4 from the float32 reference (10.8 of the old one-sample floor
 * 6.13e-5, over its limit of 8), the 6-step DDIM free-running loop's at 1.34e-3 (over the hand-set
 * relL2 1e-3 the fp32 profile had then). The same correct files passed on AMD EPYC (AVX2), the
 * first at 2.77. A correct port must pass on both; a model-level fault must fail on both.
 */
import * as path from "node:path";
import { ReferenceSet } from "../src/conformance/cases/reference-set";
import { listCases, CaseDef } from "../src/conformance/cases/cases";
import { withFloor, hasFloor, floorEnvelope, caseFloor } from "../src/conformance/judge/float64-floor";
import { loadTolerances, resolve, evaluate } from "../src/conformance/judge/tolerances";
import { runConformance } from "../src/conformance/runner";
import { TensorMetrics } from "../src/conformance/types";
import { ROOT } from "./helpers/fixtures";
import { copyPart, scaleValue } from "./helpers/onnx-edit";
import { tempDir } from "./helpers/tmp";
import { renderMarkdown } from "../src/conformance/report";
import { describeMachine, machinesDiffer } from "../src/util/machine";

const MODEL = path.join(ROOT, "fixtures", "models", "tiny-sd-2block-euler-onnx");
const REFS = path.join(ROOT, "fixtures", "references", "tiny-sd-2block-euler", "cpu");

/** case id -> tensor -> relL2 measured on each machine (the figures; AMD's from the last round's table). */
const MEASURED: readonly { id: string; tensor: string; intel: number; amd?: number }[] = [
  { id: "end_to_end:img2img-ddim-strength0.75-7steps-32x32", tensor: "final_latents", intel: 6.64e-4, amd: 2.77 * 6.13e-5 },
  { id: "unet:txt2img-ddim-48x32-negative-clipskip1-free", tensor: "final_latents", intel: 1.34e-3 },
];

/** The tensor metrics a run would report, with only relL2 known (the others do not enter an fp32 verdict). */
function metricsWith(relL2: number): TensorMetrics {
  return {
    count: 1,
    maxAbs: NaN,
    meanAbs: NaN,
    rmse: NaN,
    relL2,
    cosine: NaN,
    psnr: NaN,
    p99Abs: NaN,
    nanCount: 0,
    infCount: 0,
    worstIndex: [0],
    worstOurs: 0,
    worstRef: 0,
  };
}

const tmp = tempDir("sd-replay-");
const refs = ReferenceSet.open(REFS);
const cases = new Map(listCases(refs).map((c) => [c.id, c] as const));
const tol = loadTolerances();

/** The verdict the fp32 profile gives one tensor of one case at this relL2. */
function judge(c: CaseDef, tensor: string, relL2: number): { ok: boolean; excess: number; limit: number } {
  const floored = withFloor(refs, c, { [tensor]: metricsWith(relL2) });
  const limits = resolve(tol, "fp32", c.kind, c.id, "replay", hasFloor(refs, c)).limits;
  const checks = evaluate(limits, floored.metrics);
  const ex = checks.find((k) => k.metric === "excess");
  expect(ex).toBeDefined();
  return { ok: checks.every((k) => k.ok), excess: ex!.value, limit: ex!.limit };
}

describe("the fp32 verdict on both machines' figures", () => {
  test("the fp32 profile judges these stages by excess alone, against a floor spread over several float32 computations", () => {
    for (const { id, tensor } of MEASURED) {
      const c = cases.get(id)!;
      expect(c).toBeDefined();
      const limits = resolve(tol, "fp32", c.kind, c.id, "replay", true).limits;
      expect(Object.keys(limits).filter((k) => k !== "timestepMismatches")).toEqual(["excess"]);
      const { floor, spread } = caseFloor(refs, c);
      const env = floorEnvelope(tensor, floor![tensor], spread);
      // the reference and at least three other correct float32 computations (threads, oneDNN, one ulp)
      expect(env.samples).toBeGreaterThanOrEqual(4);
      expect(env.relL2).toBeGreaterThanOrEqual(floor![tensor].relL2);
    }
  });

  test.each(MEASURED.map((m) => [m.id, m] as const))("%s: the correct files pass on Intel AVX-512 and on AMD", (_id, m) => {
    const c = cases.get(m.id)!;
    const intel = judge(c, m.tensor, m.intel);
    expect(intel).toMatchObject({ ok: true });
    if (m.amd !== undefined) expect(judge(c, m.tensor, m.amd)).toMatchObject({ ok: true });
  });

  test("a model-level fault fails on either machine's numbers", async () => {
    // one value of one U-Net weight x 1.01, as test/faults-model.test.ts does on the bundled model,
    // judged on the measured runs' loops and their teacher-forced U-Net calls
    const dir = copyPart(MODEL, path.join(tmp(), "unet-weight"), "unet");
    scaleValue(path.join(dir, "unet", "model.onnx"), "model.down_blocks.0.resnets.0.conv1.weight", 0, 1.01);
    const runs = ["img2img-ddim-strength0.75-7steps-32x32", "txt2img-ddim-48x32-negative-clipskip1"];
    const report = await runConformance({
      models: [{ label: "fault", dir }],
      references: REFS,
      profile: "fp32",
      outDir: null,
      threads: 1,
      only: runs.flatMap((r) => [`end_to_end:${r}`, `unet:${r}-*`]),
    });
    for (const run of runs) {
      const results = report.results.filter((x) => x.id.includes(run));
      expect(results.length).toBeGreaterThanOrEqual(4);
      // every teacher-forced call fails, far past its limit even at the low end of what Intel would
      // see: the fault's drift less Intel's own correct drift there (triangle inequality), which is
      // at most 8 of the old one-sample floor (Intel passed every teacher-forced case)
      const calls = results.filter((x) => /-step\d+$/.test(x.id));
      expect(calls.length).toBe(2);
      for (const r of calls) {
        const m = r.metrics.out_sample;
        expect(`${r.id} ${r.status}`).toBe(`${r.id} fail`);
        const onIntel = judge(cases.get(r.id)!, "out_sample", m.relL2 - 8 * m.float64RelL2!);
        expect(`${r.id} ${onIntel.ok}`).toBe(`${r.id} false`);
        expect(onIntel.excess).toBeGreaterThan(10 * onIntel.limit);
      }
    }
    // a loop that does not amplify a one-ulp change a hundredfold sees the fault in its own final
    // latents as well, Intel's drift subtracted
    const free = report.results.find((x) => x.id === "unet:txt2img-ddim-48x32-negative-clipskip1-free")!;
    expect(free.status).toBe("fail");
    const onIntel = judge(cases.get(free.id)!, "final_latents", free.metrics.final_latents.relL2 - 1.34e-3);
    expect(onIntel.ok).toBe(false);
  }, 120_000);

  test("every report names the machine of the run and of the reference set, and says when they differ", async () => {
    const report = await runConformance({
      models: [{ label: "ours", dir: MODEL }],
      references: REFS,
      profile: "fp32",
      only: ["vae_decode:16x16"],
      outDir: null,
      threads: 1,
    });
    const manifest = refs.manifest as unknown as { machine: { model: string; isa: string[] } };
    expect(report.references.machine).toMatchObject({ model: manifest.machine.model, isa: manifest.machine.isa });
    expect(report.run.host.isa).toEqual(describeMachine().isa);
    const here = renderMarkdown(report);
    expect(here).toContain(`- **Reference machine:** ${manifest.machine.model}`);
    // the same report as if the set had been made on the Intel machine
    const intel = {
      model: "Intel(R) Xeon(R) Platinum 8488C",
      isa: ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"],
    };
    expect(machinesDiffer({ model: report.run.host.cpus, isa: report.run.host.isa }, intel)).toBe(true);
    const there = renderMarkdown({ ...report, references: { ...report.references, machine: intel } });
    expect(there).toMatch(/Reference machine:.*Xeon.*amx\\?_tile.*another CPU than this run's/);
  }, 60_000);
});
