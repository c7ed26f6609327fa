/**
 * The scheduler registry: every descriptor is complete and consistent, the names written into PNGs
 * are AUTOMATIC1111's, and each descriptor's sigma schedules are what its factory really honours.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { a1111Parameters } from "../src/cli/commands/generate";
import {
  a1111SamplerName,
  classDefaults,
  createScheduler,
  findScheduler,
  parseSchedulerConfig,
  SCHEDULER_NAMES,
  SCHEDULERS,
  SCHEDULERS_JSON,
  schedulersJson,
} from "../src/schedulers";

const ROOT = path.join(__dirname, "..");

/**
 * AUTOMATIC1111's sampler names (modules/sd_samplers_kdiffusion.py and sd_samplers_timesteps.py),
 * written out here as the specification. A1111 calls PNDM's linear multistep method "PLMS"; it has
 * no DDPM sampler, so "DDPM" names the algorithm.
 */
const A1111: Readonly<Record<string, string>> = {
  PNDMScheduler: "PLMS",
  DDIMScheduler: "DDIM",
  DDPMScheduler: "DDPM",
  LMSDiscreteScheduler: "LMS",
  EulerDiscreteScheduler: "Euler",
  EulerAncestralDiscreteScheduler: "Euler a",
  HeunDiscreteScheduler: "Heun",
  DPMSolverMultistepScheduler: "DPM++ 2M",
  UniPCMultistepScheduler: "UniPC",
};

/** SD 1.5's scheduler file, as the model folders carry it */
const SD = { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, steps_offset: 1 };

test("ids and class names are unique where they must be, and every class has its defaults", () => {
  expect(new Set(SCHEDULER_NAMES).size).toBe(SCHEDULERS.length);
  for (const d of SCHEDULERS) {
    expect(d.id).toMatch(/^[a-z0-9+-]+$/);
    expect(classDefaults(d.className)).toBe(d.defaults);
    expect(d.defaults.num_train_timesteps).toBe(1000);
    expect(findScheduler(d.id)).toBe(d);
    expect(findScheduler(d.className.toUpperCase())?.className).toBe(d.className);
  }
});

describe.each(SCHEDULERS.map((d) => [d.id, d] as const))("%s", (_id, d) => {
  test("a model whose own scheduler is this one names it by its id and A1111's sampler name", () => {
    // what the pipeline does without --scheduler: the file's _class_name picks the scheduler
    const own = parseSchedulerConfig({ ...SD, ...d.overrides, _class_name: d.className });
    const s = createScheduler(own.className, own, 10);
    expect(s.name).toBe(d.id);
    const expected = `${A1111[d.className]}${d.overrides?.use_karras_sigmas ? " Karras" : ""}`;
    expect(a1111SamplerName(s.name)).toBe(expected);
    const params = a1111Parameters({ prompt: "p", steps: 10, scheduler: s.name, guidance: 7.5, seed: 1n, width: 64, height: 64, model: "m", clipSkip: 0 });
    expect(params).toContain(`Sampler: ${expected}, CFG scale`);
  });

  test("chosen by id from another model's config, it runs as itself", () => {
    const other = parseSchedulerConfig({ ...SD, _class_name: "PNDMScheduler", skip_prk_steps: true });
    const s = createScheduler(d.id, other, 10);
    expect(s.name).toBe(d.id);
    expect(s.config.className).toBe(d.className);
  });

  test(`sigma schedules [${d.sigmaSchedules.join(", ")}] are the ones its factory honours`, () => {
    const sigmasWith = (karras: boolean) =>
      Array.from(d.create(parseSchedulerConfig({ ...SD, ...d.overrides, use_karras_sigmas: karras, _class_name: d.className }), 10).sigmas);
    if (d.sigmaSchedules.length === 0) {
      // the alphas_cumprod schedulers step by timestep and have no sigmas
      expect(sigmasWith(false)).toEqual([]);
      return;
    }
    const plain = sigmasWith(false);
    const karras = sigmasWith(true);
    expect(plain.length).toBeGreaterThan(0);
    if (d.sigmaSchedules.includes("karras")) expect(karras).not.toEqual(plain);
    else expect(karras).toEqual(plain);
  });
});

test(`${SCHEDULERS_JSON} is what the registry writes`, () => {
  // regenerate after changing a descriptor:
  //   npx tsc -p tsconfig.json && node -e 'process.stdout.write(require("./dist/schedulers").schedulersJson())' > scripts/refgen/schedulers.json
  expect(fs.readFileSync(path.join(ROOT, SCHEDULERS_JSON), "utf8")).toBe(schedulersJson());
});

test("the reference set's scheduler cases use the registry's ids, classes and forced keys", () => {
  // scripts/refgen/scheduler_refs.py still keeps its own name maps: they must agree with the registry
  const index = JSON.parse(fs.readFileSync(path.join(ROOT, "fixtures/references/tiny-sd/cpu/scheduler/index.json"), "utf8")) as {
    cases: Record<string, { short: string; class_name: string; config: Record<string, unknown> }>;
  };
  const cases = Object.values(index.cases);
  for (const d of SCHEDULERS) {
    const mine = cases.filter((c) => c.short === d.id);
    expect(`${d.id}: ${mine.length > 0}`).toBe(`${d.id}: true`);
    for (const c of mine) {
      expect(c.class_name).toBe(d.className);
      for (const [k, v] of Object.entries(d.overrides ?? {})) expect(c.config[k]).toEqual(v);
    }
  }
  expect(new Set(cases.map((c) => c.short))).toEqual(new Set(SCHEDULER_NAMES));
});

test("rescale_betas_zero_snr rescales only the classes that have it in diffusers 0.35.2", () => {
  // inspect.signature(cls.__init__) in diffusers 0.35.2: PNDM, LMS and Heun lack the parameter, so
  // from_config drops it and they keep the plain schedule
  const HAVE_IT = ["DDIMScheduler", "DDPMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"];
  for (const d of SCHEDULERS) {
    const run = (rescale: boolean) => {
      const s = createScheduler(d.id, parseSchedulerConfig({ ...SD, _class_name: d.className, rescale_betas_zero_snr: rescale }), 10);
      // the first step from pure noise shows the schedule: sigmas, or alphas_cumprod through the update
      const x = new Float32Array(4).fill(1);
      return [...Array.from(s.sigmas), ...Array.from(s.step(new Float32Array(4).fill(0.5), 0, x, s.initialState(), { randn: (dims) => new Float32Array(dims.reduce((a, b) => a * b, 1)) }, [4]).prevSample)];
    };
    if (HAVE_IT.includes(d.className)) expect(`${d.id} ${JSON.stringify(run(true))}`).not.toBe(`${d.id} ${JSON.stringify(run(false))}`);
    else expect(`${d.id} ${JSON.stringify(run(true))}`).toBe(`${d.id} ${JSON.stringify(run(false))}`);
  }
});

test("Heun's Karras schedule has one sigma per step when trailing spacing yields n + 1 timesteps", () => {
  // diffusers 0.35.2, HeunDiscreteScheduler(beta_schedule="linear", use_karras_sigmas=True,
  // timestep_spacing="trailing", steps_offset=1).set_timesteps(61): 121 timesteps starting
  // [999.0, 986.927001953125, 986.927001953125, 974.5889892578125] (np.arange gives 62 trailing
  // timesteps for n = 61; Karras is spaced over the 61 steps asked for)
  const cfg = parseSchedulerConfig({ _class_name: "HeunDiscreteScheduler", beta_schedule: "linear", use_karras_sigmas: true, timestep_spacing: "trailing", steps_offset: 1 });
  const s = createScheduler("heun", cfg, 61);
  expect(s.timesteps.length).toBe(121);
  expect(Array.from(s.timesteps.subarray(0, 4))).toEqual([999.0, 986.927001953125, 986.927001953125, 974.5889892578125]);
});
