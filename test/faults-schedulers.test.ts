/**
 * Detection power per scheduler: for every id in the scheduler registry, a small code-level fault
 * (one step's output × (1 + 1e-4), injected by wrapping the registry's createScheduler through
 * jest.mock) must fail that scheduler's trace in the scheduler stage while the unwrapped code
 * passes the same cases; and a small model-level fault (beta_end × (1 + 1e-4) in a copy of the
 * model's scheduler_config.json) must be caught.
 *
 * Where a model-level scheduler fault can be seen: the scheduler stage replays the reference set's
 * own scheduler config (its manifest meta), never the model's, so it cannot see one. The model's
 * config is read by generate, so end_to_end and the free-running U-Net cases see it, and before
 * any case runs the runner compares the config with the reference set's fingerprint. The bundled
 * set has end_to_end runs of pndm, ddim, euler and euler-a only: for the other schedulers the
 * fingerprint is the one guard against a changed model config.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { runConformance, PipelineFactory } from "../src/conformance/runner";
import { Report } from "../src/conformance/types";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline";
import { listCases } from "../src/conformance/cases/cases";
import { ReferenceSet } from "../src/conformance/cases/reference-set";
import { SCHEDULER_NAMES } from "../src/schedulers";
import type { Scheduler } from "../src/schedulers/types";
import { TINY, REFS } from "./helpers/fixtures";
import { copyPart, editJson } from "./helpers/onnx-edit";
import { describeModel, expectCaughtByMargin, resultOf, statusesOf } from "./helpers/fault-matrix";
import { tempDir } from "./helpers/tmp";

// The code-level fault: while `on`, every scheduler the registry builds returns step `at(n)`'s
// prevSample × (1 + 1e-4), where n is the number of model calls in its schedule. `made` records
// the registry id each built scheduler runs as (its `name`), to show the stage built the one meant.
const mockFault = { on: false, relative: 1e-4, made: new Set<string>() };
jest.mock("../src/schedulers", () => {
  const actual = jest.requireActual("../src/schedulers");
  return {
    ...actual,
    createScheduler: (...args: unknown[]) => {
      const s = actual.createScheduler(...args) as Scheduler;
      if (!mockFault.on) return s;
      mockFault.made.add(s.name);
      const at = Math.floor(s.timesteps.length / 2);
      const wrapped = Object.create(s) as Scheduler;
      Object.defineProperty(wrapped, "step", {
        value: (...a: Parameters<Scheduler["step"]>) => {
          const r = s.step(...a);
          return a[1] === at ? { ...r, prevSample: r.prevSample.map((v) => v * (1 + mockFault.relative)) } : r;
        },
      });
      return wrapped;
    },
  };
});

const GOOD = "good";
const BAD = "broken";

const tmp = tempDir("sd-faults-schedulers-");

/** One trace per registry id: its 10-step "leading" epsilon trace (every scheduler has one). */
function traceOf(id: string): string {
  const want = `scheduler:${id}-leading-eps-10`;
  const found = listCases(ReferenceSet.open(REFS)).find((c) => c.id === want);
  if (!found) throw new Error(`the reference set has no ${want}: scheduler ${id} has no trace to judge it by`);
  return want;
}

describe("a code-level fault in each scheduler of the registry", () => {
  const traces = SCHEDULER_NAMES.map((id) => [id, traceOf(id)] as const);
  // the loop cases of the schedulers the bundled set runs end to end (the rest have none)
  const loops = [
    "end_to_end:txt2img-pndm-64x64",
    "end_to_end:txt2img-ddim-batch2",
    "end_to_end:txt2img-euler-128x64-negative",
    "end_to_end:txt2img-euler-a-64x64",
  ];
  let good: Report;
  let bad: Report;
  beforeAll(async () => {
    const only = [...traces.map(([, c]) => c), ...loops];
    // the fault is global (the registry's factory), so the unbroken and broken runs are two runs
    const run = () =>
      runConformance({ models: [{ label: GOOD, dir: TINY }], references: REFS, profile: "fp32", only, outDir: null, threads: 1 });
    good = await run();
    mockFault.on = true;
    try {
      bad = await run();
    } finally {
      mockFault.on = false;
    }
    console.log(describeModel(bad, GOOD).replace(GOOD, "one scheduler step x (1 + 1e-4)"));
  }, 600_000);

  test("the registry has the ten schedulers the issue names, and each trace built its own", () => {
    expect([...SCHEDULER_NAMES].sort()).toEqual(
      expect.arrayContaining(["ddim", "ddpm", "dpm++2m", "dpm++2m-karras", "euler", "euler-a", "heun", "lms", "pndm", "unipc"]),
    );
    for (const id of SCHEDULER_NAMES) expect(mockFault.made).toContain(id);
  });

  test("unwrapped, every trace and loop case passes", () => {
    expect(Object.values(statusesOf(good, GOOD)).every((s) => s === "pass")).toBe(true);
    expect(Object.keys(statusesOf(good, GOOD)).sort()).toEqual([...traces.map(([, c]) => c), ...loops].sort());
  });

  test.each(SCHEDULER_NAMES.map((id) => [id]))("%s: one step x (1 + 1e-4) fails its scheduler trace", (id) => {
    const r = resultOf(bad, GOOD, traceOf(id));
    expect(r.status).toBe("fail");
    expectCaughtByMargin(bad, GOOD, [r.id]);
    // it is the step's output that is judged: the schedule itself is unchanged
    expect(r.checks.find((k) => k.metric === "scheduleLengthDiff")?.ok).toBe(true);
    expect(r.checks.find((k) => k.tensor === "prev_samples" && k.metric === "relL2")?.ok).toBe(false);
  });

  test("the same fault in the loop: end_to_end catches it too", () => {
    for (const id of loops) expect({ id, status: resultOf(bad, GOOD, id).status }).toEqual({ id, status: "fail" });
  });
});

describe("a model-level fault: beta_end x (1 + 1e-4) in the model's scheduler_config.json", () => {
  let dir: string;
  beforeAll(() => {
    dir = copyPart(TINY, path.join(tmp(), "beta-end"), "scheduler");
    editJson(path.join(dir, "scheduler", "scheduler_config.json"), (j) => {
      expect(j.beta_end).toBe(0.012);
      j.beta_end = 0.012 * (1 + 1e-4);
    });
  });

  test("is refused before any case runs: the config differs from the reference set's fingerprint", async () => {
    await expect(
      runConformance({ models: [{ label: BAD, dir }], references: REFS, profile: "fp32", only: ["scheduler:*"], outDir: null, threads: 1 }),
    ).rejects.toThrow(/scheduler\.beta_end is 0\.012 in the reference set, 0\.0120012\d* in the model's configs/);
  });

  test("past the fingerprint, end_to_end and the free-running U-Net fail for every scheduler they run; the scheduler stage cannot see it", async () => {
    // the runner checks the folder it is given; the factory then loads the changed copy behind it,
    // as if the fingerprint had not recorded beta_end
    const behind = path.join(tmp(), "beta-end-behind");
    fs.symlinkSync(TINY, behind);
    const factory: PipelineFactory = (d, options) => StableDiffusionPipeline.load(d === behind ? dir : d, options);
    const loops = [
      "end_to_end:txt2img-pndm-64x64",
      "end_to_end:txt2img-ddim-batch2",
      "end_to_end:txt2img-euler-128x64-negative",
      "end_to_end:txt2img-euler-a-64x64",
      "unet:txt2img-pndm-64x64-free",
    ];
    const traces = ["scheduler:pndm-leading-eps-10", "scheduler:euler-leading-eps-10"];
    const report = await runConformance({
      models: [
        { label: GOOD, dir: TINY },
        { label: BAD, dir: behind },
      ],
      references: REFS,
      profile: "fp32",
      only: [...loops, ...traces],
      outDir: null,
      threads: 1,
      pipelineFactory: factory,
    });
    console.log(describeModel(report, BAD).replace(BAD, "beta_end x (1 + 1e-4), past the fingerprint"));
    expect(Object.values(statusesOf(report, GOOD)).every((s) => s === "pass")).toBe(true);
    expect(statusesOf(report, BAD)).toEqual({
      ...Object.fromEntries(loops.map((id) => [id, "fail"])),
      ...Object.fromEntries(traces.map((id) => [id, "pass"])),
    });
    expectCaughtByMargin(report, BAD, loops);
  }, 300_000);
});
