/**
 * The scheduler registry: every descriptor is complete and consistent, the names written into PNGs
 * are AUTOMATIC1111's, and each descriptor's sigma schedules are what its factory really honours.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { a1111Parameters } from "../src/cli/commands/generate";
import { cliMessage } from "../src/cli/flags";
import { InvalidParameter } from "../src/errors";
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
  SIGMA_SCHEDULE_NAMES,
  sigmaScheduleKeys,
  SigmaScheduleName,
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

/**
 * A1111's "Schedule type" labels (modules/sd_schedulers.py, written out as the specification); its
 * default ("Automatic") is not written, nor for a sampler whose name says the schedule.
 */
const A1111_SCHEDULE: Readonly<Record<SigmaScheduleName, string | undefined>> = {
  default: undefined,
  karras: "Karras",
  exponential: "Exponential",
  beta: "Beta",
};

/**
 * diffusers 0.35.2's sigma-schedule keys per class (inspect.signature(cls.__init__)), written out as
 * the specification: PNDM, DDIM and DDPM have no sigmas, Euler ancestral has sigmas but none of the keys.
 */
const DIFFUSERS_KEYS: Readonly<Record<string, readonly string[]>> = {
  PNDMScheduler: [],
  DDIMScheduler: [],
  DDPMScheduler: [],
  EulerAncestralDiscreteScheduler: [],
  LMSDiscreteScheduler: ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"],
  EulerDiscreteScheduler: ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"],
  HeunDiscreteScheduler: ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"],
  DPMSolverMultistepScheduler: ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"],
  UniPCMultistepScheduler: ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"],
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
    const params = a1111Parameters({
      prompt: "p",
      steps: 10,
      scheduler: s.name,
      guidance: 7.5,
      seed: 1n,
      width: 64,
      height: 64,
      model: "m",
      clipSkip: 0,
    });
    expect(params).toContain(`Sampler: ${expected}, CFG scale`);
  });

  test("chosen by id from another model's config, it runs as itself", () => {
    const other = parseSchedulerConfig({ ...SD, _class_name: "PNDMScheduler", skip_prk_steps: true });
    const s = createScheduler(d.id, other, 10);
    expect(s.name).toBe(d.id);
    expect(s.config.className).toBe(d.className);
  });

  test(`sigma schedules [${d.sigmaSchedules.join(", ")}] are the config keys its diffusers class has, each honoured by its factory`, () => {
    // a choice that forces its schedule (dpm++2m-karras) lists that one; the others list "default"
    // plus one per key of the class (a class with sigmas but no keys: "default" alone)
    const forced = SIGMA_SCHEDULE_NAMES.filter(
      (n) => n !== "default" && d.overrides?.[Object.keys(sigmaScheduleKeys(n)).find((k) => sigmaScheduleKeys(n)[k])!] === true,
    );
    const fromKeys = SIGMA_SCHEDULE_NAMES.filter(
      (n) => n !== "default" && DIFFUSERS_KEYS[d.className].some((k) => sigmaScheduleKeys(n)[k]),
    );
    const withSigmas = d.create(parseSchedulerConfig({ ...SD, _class_name: d.className }), 10).sigmas.length > 0;
    expect(d.sigmaSchedules).toEqual(forced.length > 0 ? forced : withSigmas ? ["default", ...fromKeys] : []);
    // the factory honours each listed key and ignores the others, as from_config drops keys a class lacks
    const sigmasWith = (n: SigmaScheduleName) =>
      JSON.stringify(Array.from(d.create(parseSchedulerConfig({ ...SD, ...sigmaScheduleKeys(n), _class_name: d.className }), 10).sigmas));
    const plain = sigmasWith("default");
    for (const n of SIGMA_SCHEDULE_NAMES.filter((x) => x !== "default")) {
      if (fromKeys.includes(n)) expect(`${n}: ${sigmasWith(n) === plain}`).toBe(`${n}: false`);
      else expect(`${n}: ${sigmasWith(n)}`).toBe(`${n}: ${plain}`);
    }
  });

  test("the sigmas option: each accepted schedule runs, different from the others; any other is refused naming it", () => {
    const cfg = parseSchedulerConfig({ ...SD, _class_name: "PNDMScheduler", skip_prk_steps: true });
    const seen = new Set<string>();
    for (const n of SIGMA_SCHEDULE_NAMES) {
      if (d.sigmaSchedules.includes(n)) {
        const s = createScheduler(d.id, cfg, 10, { sigmas: n });
        expect(s.sigmas.length).toBeGreaterThan(0);
        // and it is the schedule the model's own config key selects
        const own = parseSchedulerConfig({ ...SD, _class_name: "PNDMScheduler", skip_prk_steps: true, ...sigmaScheduleKeys(n) });
        expect(Array.from(createScheduler(d.id, own, 10).sigmas)).toEqual(Array.from(s.sigmas));
        seen.add(JSON.stringify(Array.from(s.sigmas)));
        continue;
      }
      let error: unknown;
      try {
        createScheduler(d.id, cfg, 10, { sigmas: n });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(InvalidParameter);
      expect((error as InvalidParameter).parameter).toBe("sigmas");
      const accepts =
        d.sigmaSchedules.length > 0
          ? `accepts ${d.sigmaSchedules.join(", ")}`
          : "accepts none (it steps over alphas_cumprod by timestep and has no sigmas)";
      expect((error as Error).message).toBe(`sigmas ${n}: scheduler ${d.id} ${accepts}`);
      expect(cliMessage(error as Error)).toBe(`--sigmas ${n}: scheduler ${d.id} ${accepts}`);
    }
    expect(seen.size).toBe(d.sigmaSchedules.length);
  });

  test("PNG parameters: A1111's sampler name, and its Schedule type for a schedule the name does not say", () => {
    for (const n of d.sigmaSchedules) {
      const id = createScheduler(d.id, parseSchedulerConfig({ ...SD, _class_name: d.className }), 10, { sigmas: n }).name;
      const params = a1111Parameters({
        prompt: "p",
        steps: 10,
        scheduler: id,
        sigmas: n,
        guidance: 7.5,
        seed: 1n,
        width: 64,
        height: 64,
        model: "m",
        clipSkip: 0,
      });
      // what ran may be another choice whose name says the schedule (dpm++2m on karras is dpm++2m-karras)
      const label = findScheduler(id)!.sigmaSchedules.length > 1 ? A1111_SCHEDULE[n] : undefined;
      expect(params).toContain(`Sampler: ${a1111SamplerName(id)}, ${label ? `Schedule type: ${label}, ` : ""}CFG scale`);
    }
  });
});

test(`${SCHEDULERS_JSON} is what the registry writes`, () => {
  // regenerate after changing a descriptor:
  //   npx tsc -p tsconfig.json && node -e 'process.stdout.write(require("./dist/schedulers").schedulersJson())' > scripts/refgen/schedulers.json
  expect(fs.readFileSync(path.join(ROOT, SCHEDULERS_JSON), "utf8")).toBe(schedulersJson());
});

test("the reference set's scheduler cases use the registry's ids, classes and forced keys", () => {
  // scripts/refgen/scheduler_refs.py reads the registry (schedulers.json); a set made before a
  // registry change must still agree with it
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
  const HAVE_IT = [
    "DDIMScheduler",
    "DDPMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
  ];
  for (const d of SCHEDULERS) {
    const run = (rescale: boolean) => {
      const s = createScheduler(d.id, parseSchedulerConfig({ ...SD, _class_name: d.className, rescale_betas_zero_snr: rescale }), 10);
      // the first step from pure noise shows the schedule: sigmas, or alphas_cumprod through the update
      const x = new Float32Array(4).fill(1);
      return [
        ...Array.from(s.sigmas),
        ...Array.from(
          s.step(
            new Float32Array(4).fill(0.5),
            0,
            x,
            s.initialState(),
            { randn: (dims) => new Float32Array(dims.reduce((a, b) => a * b, 1)) },
            [4],
          ).prevSample,
        ),
      ];
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
  const cfg = parseSchedulerConfig({
    _class_name: "HeunDiscreteScheduler",
    beta_schedule: "linear",
    use_karras_sigmas: true,
    timestep_spacing: "trailing",
    steps_offset: 1,
  });
  const s = createScheduler("heun", cfg, 61);
  expect(s.timesteps.length).toBe(121);
  expect(Array.from(s.timesteps.subarray(0, 4))).toEqual([999.0, 986.927001953125, 986.927001953125, 974.5889892578125]);
});

test("a model config with exponential or beta sigmas loads and runs; two schedule keys at once are refused", () => {
  for (const key of ["use_exponential_sigmas", "use_beta_sigmas"]) {
    for (const d of SCHEDULERS.filter((x) => x.sigmaSchedules.length > 1)) {
      const cfg = parseSchedulerConfig({ ...SD, _class_name: d.className, [key]: true });
      const s = createScheduler(cfg.className, cfg, 10);
      expect(s.name).toBe(d.id);
      const x = new Float32Array(4).fill(1);
      const out = s.step(new Float32Array(4).fill(0.5), 0, x, s.initialState(), undefined, [4]).prevSample;
      expect(out.every(Number.isFinite)).toBe(true);
    }
  }
  // diffusers' __init__: "Only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be used"
  expect(() =>
    parseSchedulerConfig({ ...SD, _class_name: "EulerDiscreteScheduler", use_karras_sigmas: true, use_beta_sigmas: true }),
  ).toThrow(/use_karras_sigmas and use_beta_sigmas are all true; at most one sigma schedule/);
  // a class without the keys ignores them (from_config drops them), so its own file may carry any
  expect(parseSchedulerConfig({ ...SD, _class_name: "PNDMScheduler", use_karras_sigmas: true, use_beta_sigmas: true }).sigmaSchedule).toBe(
    "default",
  );
});

test("an unknown sigmas value is refused with the list of schedules", () => {
  const cfg = parseSchedulerConfig({ ...SD, _class_name: "EulerDiscreteScheduler" });
  expect(() => createScheduler("euler", cfg, 10, { sigmas: "cosine" as SigmaScheduleName })).toThrow(
    'sigmas: unknown sigma schedule "cosine"; choose one of default, karras, exponential, beta',
  );
});
