/**
 * The scheduler registry: one descriptor per choice (id, diffusers class, A1111 name, config
 * defaults, sigma schedules, factory), each written beside its algorithm. The CLI's choices and
 * help, the PNG metadata, the tests and conformance all iterate SCHEDULERS; adding a scheduler is
 * its own file plus one line here.
 *
 * `createScheduler` re-reads the model's scheduler_config.json for the chosen class, so keys the
 * file lacks take that class's diffusers defaults (after the file's own class's), exactly as
 * `ChosenScheduler.from_config(pipe.scheduler.config)` does.
 */
import { ExitCode, HarnessError, invalid, param } from "../errors";
import * as config from "./config";
import { ddimDescriptor } from "./ddim";
import { ddpmDescriptor } from "./ddpm";
import { dpmSolverMultistepDescriptor, dpmSolverMultistepKarrasDescriptor } from "./dpm-solver-multistep";
import { eulerDescriptor } from "./euler";
import { eulerAncestralDescriptor } from "./euler-ancestral";
import { heunDescriptor } from "./heun";
import { lmsDescriptor } from "./lms";
import { pndmDescriptor } from "./pndm";
import { isSigmaSchedule, SIGMA_SCHEDULE_NAMES, SIGMA_SCHEDULES, sigmaScheduleKeys } from "./sigma-schedules";
import { Scheduler, SchedulerConfig, SchedulerDescriptor, SchedulerOptions, SigmaScheduleName } from "./types";
import { uniPCDescriptor } from "./unipc";

export type { SchedulerDescriptor, SchedulerFactory, SigmaScheduleName } from "./types";
export { SIGMA_SCHEDULE_NAMES, SIGMA_SCHEDULES, sigmaScheduleKeys } from "./sigma-schedules";

/** Every scheduler choice, in help order. For a class with several choices the plain one comes first. */
export const SCHEDULERS: readonly SchedulerDescriptor[] = [
  pndmDescriptor,
  ddimDescriptor,
  ddpmDescriptor,
  lmsDescriptor,
  eulerDescriptor,
  eulerAncestralDescriptor,
  heunDescriptor,
  dpmSolverMultistepDescriptor,
  dpmSolverMultistepKarrasDescriptor,
  uniPCDescriptor,
];

/** The CLI's short names, in help order. */
export const SCHEDULER_NAMES: readonly string[] = SCHEDULERS.map((d) => d.id);

/** diffusers class name -> short name (the first choice registered for a class). */
export const SCHEDULER_CLASSES: Readonly<Record<string, string>> = Object.fromEntries(
  [...SCHEDULERS].reverse().map((d) => [d.className, d.id]),
);

/** The diffusers defaults of a class, or undefined for a class no scheduler here implements. */
export function classDefaults(className: string): Readonly<Record<string, unknown>> | undefined {
  return SCHEDULERS.find((d) => d.className === className)?.defaults;
}

/** The descriptor for a short name or a diffusers class name (case-insensitive), or undefined. */
export function findScheduler(nameOrClass: string): SchedulerDescriptor | undefined {
  const lower = nameOrClass.trim().toLowerCase();
  return SCHEDULERS.find((d) => d.id === lower) ?? SCHEDULERS.find((d) => d.className.toLowerCase() === lower);
}

/**
 * The choice a resolved config runs as: among the class's descriptors, the last whose overrides the
 * config satisfies, so a model whose own DPMSolverMultistep config sets use_karras_sigmas runs (and
 * is named) as dpm++2m-karras.
 */
function schedulerFor(cfg: SchedulerConfig): SchedulerDescriptor | undefined {
  let found: SchedulerDescriptor | undefined;
  for (const d of SCHEDULERS) {
    if (d.className === cfg.className && Object.entries(d.overrides ?? {}).every(([k, v]) => cfg.raw[k] === v)) found = d;
  }
  return found;
}

/** Where the registry's data is committed for the Python reference generator (see schedulersJson). */
export const SCHEDULERS_JSON = "scripts/refgen/schedulers.json";

/**
 * The registry as data, for the Python reference generator (scripts/refgen), which needs each
 * choice's class, forced config keys and defaults but cannot import TypeScript. Written to
 * SCHEDULERS_JSON and committed; test/scheduler-registry.test.ts checks the file equals this.
 */
export function schedulersJson(): string {
  const doc = {
    generatedBy: "src/schedulers/index.ts schedulersJson(); do not edit by hand",
    sigmaSchedules: SIGMA_SCHEDULES,
    schedulers: SCHEDULERS.map((d) => ({
      id: d.id,
      className: d.className,
      a1111Name: d.a1111Name,
      overrides: d.overrides ?? {},
      sigmaSchedules: d.sigmaSchedules,
      defaults: d.defaults,
    })),
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/** The sampler name A1111 writes for a short name; an unknown name is passed through. */
export function a1111SamplerName(id: string): string {
  return SCHEDULERS.find((d) => d.id === id)?.a1111Name ?? id;
}

/**
 * A1111's "Schedule type" label for a run of scheduler `id` on sigma schedule `sigmas` ("Karras",
 * "Exponential", "Beta"), or undefined where A1111 writes none: the default schedule, a scheduler
 * without sigmas, and a choice whose sampler name already says it (dpm++2m-karras: "DPM++ 2M Karras",
 * as A1111 wrote it before its separate field and still reads it).
 */
export function a1111ScheduleType(id: string, sigmas: SigmaScheduleName | undefined): string | undefined {
  const d = SCHEDULERS.find((x) => x.id === id);
  if (!d || sigmas === undefined || d.sigmaSchedules.length <= 1 || !d.sigmaSchedules.includes(sigmas)) return undefined;
  return SIGMA_SCHEDULES[sigmas].a1111Label ?? undefined;
}

/** What a scheduler accepts, in words: "default, karras, exponential, beta", or why nothing. */
function accepted(d: SchedulerDescriptor): string {
  return d.sigmaSchedules.length > 0 ? d.sigmaSchedules.join(", ") : "none (it steps over alphas_cumprod by timestep and has no sigmas)";
}

/**
 * Check the `sigmas` option against a scheduler choice: an InvalidParameter naming `sigmas` (the
 * CLI's --sigmas) when it is no sigma schedule or one the scheduler does not accept.
 */
export function checkSigmaSchedule(descriptor: SchedulerDescriptor, sigmas: unknown): SigmaScheduleName {
  parseSigmaSchedule(sigmas);
  if (!descriptor.sigmaSchedules.includes(sigmas as SigmaScheduleName)) {
    throw invalid("sigmas")`${param("sigmas")} ${sigmas}: scheduler ${descriptor.id} accepts ${accepted(descriptor)}`;
  }
  return sigmas as SigmaScheduleName;
}

/** The `sigmas` option as a sigma schedule name, or an InvalidParameter naming `sigmas` listing the names. */
export function parseSigmaSchedule(sigmas: unknown): SigmaScheduleName {
  if (!isSigmaSchedule(sigmas)) {
    throw invalid(
      "sigmas",
    )`${param("sigmas")}: unknown sigma schedule ${JSON.stringify(sigmas)}; choose one of ${SIGMA_SCHEDULE_NAMES.join(", ")}`;
  }
  return sigmas;
}

/** The scheduler choice for a short name or class name, or the HarnessError listing the choices. */
function choice(nameOrClass: string): SchedulerDescriptor {
  const descriptor = findScheduler(nameOrClass);
  if (!descriptor) {
    throw new HarnessError(
      `unknown scheduler ${JSON.stringify(nameOrClass)}; choose one of ${SCHEDULER_NAMES.join(", ")} (or a diffusers class name: ${Object.keys(SCHEDULER_CLASSES).join(", ")})`,
      ExitCode.usage,
    );
  }
  return descriptor;
}

/**
 * What `createScheduler(nameOrClass, cfg, n, { sigmas })` runs, without building it: the config the
 * chosen class sees (the model's file, the choice's forced keys, then the sigma schedule's keys), the
 * registry choice it runs as, and its sigma schedule (undefined for the schedulers without sigmas).
 */
function resolveChoice(
  nameOrClass: string,
  cfg: SchedulerConfig,
  sigmas?: SigmaScheduleName,
): { descriptor: SchedulerDescriptor; config: SchedulerConfig; runsAs: SchedulerDescriptor; sigmaSchedule: SigmaScheduleName | undefined } {
  const descriptor = choice(nameOrClass);
  if (sigmas !== undefined) checkSigmaSchedule(descriptor, sigmas);
  const forced = { ...(descriptor.overrides ?? {}), ...(sigmas !== undefined ? sigmaScheduleKeys(sigmas) : {}) };
  let resolved = configForClass(cfg, descriptor.className);
  if (Object.keys(forced).length > 0) resolved = configForClass({ ...resolved, raw: { ...resolved.raw, ...forced } }, descriptor.className);
  // PNDM, LMS and Heun have no rescale_betas_zero_snr in diffusers 0.35.2 (their defaults here lack
  // it too): from_config ignores the key there, so a config that sets it must not rescale them
  if (!("rescale_betas_zero_snr" in descriptor.defaults)) resolved = { ...resolved, rescaleBetasZeroSnr: false };
  const runsAs = schedulerFor(resolved) ?? descriptor;
  return { descriptor, config: resolved, runsAs, sigmaSchedule: descriptor.sigmaSchedules.length > 0 ? resolved.sigmaSchedule : undefined };
}

/** scheduler_config.json's object as a typed config (defaults from the registry's classes). */
export function parseSchedulerConfig(input: Record<string, unknown>, file = "scheduler_config.json"): SchedulerConfig {
  return config.parseSchedulerConfig(classDefaults, input, file);
}

/** The raw config a `targetClass.from_config(raw)` would see (see config.resolveRawConfig). */
export function resolveRawConfig(raw: Readonly<Record<string, unknown>>, targetClass?: string): Record<string, unknown> {
  return config.resolveRawConfig(classDefaults, raw, targetClass);
}

/** The same config as seen by another scheduler class (its defaults fill keys the file lacks). */
export function configForClass(cfg: SchedulerConfig, targetClass: string): SchedulerConfig {
  return config.configForClass(classDefaults, cfg, targetClass);
}

/**
 * Build a scheduler by short name ("euler-a") or diffusers class name ("EulerAncestralDiscreteScheduler")
 * from the model's scheduler config. Unknown names throw a HarnessError listing the valid choices;
 * `opts.sigmas` picks the sigma schedule instead of the config (an InvalidParameter naming `sigmas`
 * where the scheduler does not accept it). The scheduler's `name` is the registry id of what it
 * runs (see schedulerFor).
 */
export function createScheduler(
  nameOrClass: string,
  cfg: SchedulerConfig,
  numInferenceSteps: number,
  opts: SchedulerOptions = {},
): Scheduler {
  const descriptor = choice(nameOrClass);
  if (opts.sigmas !== undefined) checkSigmaSchedule(descriptor, opts.sigmas);
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1) {
    throw invalid("numInferenceSteps")`${param("numInferenceSteps")} must be a positive integer, got ${numInferenceSteps}`;
  }
  const { config: resolved, runsAs, sigmaSchedule } = resolveChoice(descriptor.id, cfg, opts.sigmas);
  const scheduler = descriptor.create(resolved, numInferenceSteps, opts);
  // e.g. 1000 "leading" steps with steps_offset 1 reach timestep 1000, past the end of
  // alphas_cumprod, which PNDM / DDIM / DDPM (the schedulers without sigmas) index by timestep
  // (diffusers raises an IndexError there; the sigma-interpolating schedulers clamp, as np.interp
  // does). A sentence, not a RangeError mid-loop.
  let last = -Infinity;
  for (const t of scheduler.timesteps) last = Math.max(last, t);
  if (descriptor.sigmaSchedules.length === 0 && last >= resolved.numTrainTimesteps) {
    throw invalid(
      "numInferenceSteps",
    )`${param("numInferenceSteps")} ${numInferenceSteps}: ${descriptor.id}'s "${resolved.timestepSpacing}" schedule with steps_offset ${resolved.stepsOffset} reaches timestep ${last}, past the ${resolved.numTrainTimesteps} training timesteps; use fewer steps`;
  }
  return { ...scheduler, name: runsAs.id, sigmaSchedule };
}
