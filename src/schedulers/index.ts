/**
 * The scheduler registry: diffusers class names and the CLI's short names, each mapped to a factory.
 * `createScheduler` re-reads the model's scheduler_config.json for the chosen class, so keys the
 * file lacks take that class's diffusers defaults (after the file's own class's), exactly as
 * `ChosenScheduler.from_config(pipe.scheduler.config)` does.
 */
import { ExitCode, HarnessError } from "../errors";
import { createDDIMScheduler } from "./ddim";
import { createDDPMScheduler } from "./ddpm";
import { createDpmSolverMultistepScheduler } from "./dpm-solver-multistep";
import { createEulerScheduler } from "./euler";
import { createEulerAncestralScheduler } from "./euler-ancestral";
import { createHeunScheduler } from "./heun";
import { createLMSScheduler } from "./lms";
import { createPNDMScheduler } from "./pndm";
import { configForClass } from "./schedules";
import { Scheduler, SchedulerConfig, SchedulerOptions } from "./types";
import { createUniPCScheduler } from "./unipc";

export type SchedulerFactory = (config: SchedulerConfig, numInferenceSteps: number, opts?: SchedulerOptions) => Scheduler;

interface Entry {
  readonly className: string;
  /** raw config keys this short name forces (dpm++2m-karras: use_karras_sigmas) */
  readonly overrides?: Readonly<Record<string, unknown>>;
  readonly factory: SchedulerFactory;
}

const ENTRIES: Readonly<Record<string, Entry>> = {
  pndm: { className: "PNDMScheduler", factory: (c, n) => createPNDMScheduler(c, n) },
  ddim: { className: "DDIMScheduler", factory: (c, n, o) => createDDIMScheduler(c, n, o) },
  ddpm: { className: "DDPMScheduler", factory: (c, n) => createDDPMScheduler(c, n) },
  lms: { className: "LMSDiscreteScheduler", factory: (c, n) => createLMSScheduler(c, n) },
  euler: { className: "EulerDiscreteScheduler", factory: (c, n) => createEulerScheduler(c, n) },
  "euler-a": { className: "EulerAncestralDiscreteScheduler", factory: (c, n) => createEulerAncestralScheduler(c, n) },
  heun: { className: "HeunDiscreteScheduler", factory: (c, n, o) => createHeunScheduler(c, n, o) },
  "dpm++2m": { className: "DPMSolverMultistepScheduler", factory: (c, n, o) => createDpmSolverMultistepScheduler(c, n, o) },
  "dpm++2m-karras": {
    className: "DPMSolverMultistepScheduler",
    overrides: { use_karras_sigmas: true },
    factory: (c, n, o) => createDpmSolverMultistepScheduler(c, n, o),
  },
  unipc: { className: "UniPCMultistepScheduler", factory: (c, n, o) => createUniPCScheduler(c, n, o) },
};

/** The CLI's short names, in help order. */
export const SCHEDULER_NAMES: readonly string[] = Object.keys(ENTRIES);

/** diffusers class name -> short name (the first short name registered for a class). */
export const SCHEDULER_CLASSES: Readonly<Record<string, string>> = Object.fromEntries(
  Object.entries(ENTRIES)
    .reverse()
    .map(([short, e]) => [e.className, short]),
);

/** The short name for a short name or a diffusers class name (case-insensitive), or undefined. */
export function resolveSchedulerName(nameOrClass: string): string | undefined {
  const key = nameOrClass.trim();
  const lower = key.toLowerCase();
  if (lower in ENTRIES) return lower;
  for (const [cls, short] of Object.entries(SCHEDULER_CLASSES)) if (cls.toLowerCase() === lower) return short;
  return undefined;
}

/**
 * Build a scheduler by short name ("euler-a") or diffusers class name ("EulerAncestralDiscreteScheduler")
 * from the model's scheduler config. Unknown names throw a HarnessError listing the valid choices.
 */
export function createScheduler(nameOrClass: string, config: SchedulerConfig, numInferenceSteps: number, opts: SchedulerOptions = {}): Scheduler {
  const short = resolveSchedulerName(nameOrClass);
  if (!short) {
    throw new HarnessError(
      `unknown scheduler ${JSON.stringify(nameOrClass)}; choose one of ${SCHEDULER_NAMES.join(", ")} (or a diffusers class name: ${Object.keys(SCHEDULER_CLASSES).join(", ")})`,
      ExitCode.usage,
    );
  }
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1) {
    throw new HarnessError(`--steps must be a positive integer, got ${numInferenceSteps}`, ExitCode.usage);
  }
  const entry = ENTRIES[short];
  let cfg = configForClass(config, entry.className);
  if (entry.overrides) cfg = configForClass({ ...cfg, raw: { ...cfg.raw, ...entry.overrides } }, entry.className);
  const scheduler = entry.factory(cfg, numInferenceSteps, opts);
  // e.g. 1000 "leading" steps with steps_offset 1 reach timestep 1000, past the end of
  // alphas_cumprod, which PNDM / DDIM / DDPM index by timestep (diffusers raises an IndexError
  // there; the sigma-interpolating schedulers clamp, as np.interp does). A sentence, not a
  // RangeError mid-loop.
  let last = -Infinity;
  for (const t of scheduler.timesteps) last = Math.max(last, t);
  if ((short === "pndm" || short === "ddim" || short === "ddpm") && last >= cfg.numTrainTimesteps) {
    throw new HarnessError(
      `--steps ${numInferenceSteps}: ${short}'s "${cfg.timestepSpacing}" schedule with steps_offset ${cfg.stepsOffset} reaches timestep ${last}, past the ${cfg.numTrainTimesteps} training timesteps; use fewer steps`,
      ExitCode.usage,
    );
  }
  return scheduler;
}
