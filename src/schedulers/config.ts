/**
 * scheduler_config.json parsed once into a typed SchedulerConfig, with diffusers' precedence of
 * defaults. The per-class defaults live in each scheduler's descriptor; the registry (index.ts)
 * passes them in, so this module needs no scheduler and no scheduler needs it.
 */
import { HarnessError, ExitCode } from "../errors";
import { SIGMA_SCHEDULES, SIGMA_SCHEDULE_NAMES, sigmaScheduleOfRaw } from "./sigma-schedules";
import { BetaSchedule, PredictionType, SchedulerConfig, SigmaScheduleName, TimestepSpacing } from "./types";

/** The defaults of a diffusers class by `_class_name`, or undefined for a class the registry lacks. */
export type ClassDefaults = (className: string) => Readonly<Record<string, unknown>> | undefined;

function pick<T>(raw: Record<string, unknown>, key: string, fallback: T, file: string, check: (v: unknown) => boolean): T {
  const v = raw[key];
  if (v === undefined || v === null) return fallback;
  if (!check(v)) throw new HarnessError(`${file}: ${key} has an invalid value ${JSON.stringify(v)}`, ExitCode.usage);
  return v as T;
}

const isNum = (v: unknown) => typeof v === "number" && Number.isFinite(v);
const isBool = (v: unknown) => typeof v === "boolean";
const isStr = (v: unknown) => typeof v === "string";
const oneOf =
  (...opts: string[]) =>
  (v: unknown) =>
    typeof v === "string" && opts.includes(v);

/**
 * The __init__ defaults all diffusers 0.35.2 scheduler classes share; each descriptor adds its own
 * class's. They differ per class (DDIM clips by default, Euler spaces by "linspace", PNDM by
 * "leading"...), so a missing key must be filled from the right class, as `Cls.from_config` does.
 */
export const COMMON_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  steps_offset: 0,
} as const;

/**
 * The raw config a `targetClass.from_config(config)` would see, with diffusers' precedence: keys in the
 * file win; then the defaults of the file's own `_class_name` (a loaded pipeline's `scheduler.config`
 * holds all of them -- SD 1.5's PNDM config thereby carries timestep_spacing "leading" into Euler);
 * then the target class's defaults. Unknown classes contribute nothing.
 */
export function resolveRawConfig(
  defaultsOf: ClassDefaults,
  raw: Readonly<Record<string, unknown>>,
  targetClass?: string,
): Record<string, unknown> {
  const source = typeof raw._class_name === "string" ? defaultsOf(raw._class_name) : undefined;
  const target = targetClass ? defaultsOf(targetClass) : undefined;
  const out: Record<string, unknown> = { ...(target ?? {}), ...(source ?? {}) };
  for (const [k, v] of Object.entries(raw)) if (v !== undefined) out[k] = v;
  if (targetClass) out._class_name = targetClass;
  return out;
}

/** The same config as seen by another scheduler class (its defaults fill keys the file lacks). */
export function configForClass(defaultsOf: ClassDefaults, config: SchedulerConfig, targetClass: string): SchedulerConfig {
  // the file's own _class_name stays the "source" whose defaults beat the target's
  return parseSchedulerConfig(defaultsOf, resolveRawConfig(defaultsOf, config.raw, targetClass));
}

/**
 * Parse scheduler_config.json's object into a typed config. Missing keys take the defaults of the
 * file's `_class_name` (see resolveRawConfig), then generic fallbacks.
 */
export function parseSchedulerConfig(
  defaultsOf: ClassDefaults,
  input: Record<string, unknown>,
  file = "scheduler_config.json",
): SchedulerConfig {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new HarnessError(`${file}: not a JSON object`, ExitCode.usage);
  }
  const raw = resolveRawConfig(defaultsOf, input);
  const numTrainTimesteps = pick(
    raw,
    "num_train_timesteps",
    1000,
    file,
    (v) => Number.isInteger(v) && (v as number) > 1 && (v as number) <= 100000,
  );
  const trained = raw.trained_betas;
  if (
    trained !== undefined &&
    trained !== null &&
    (!Array.isArray(trained) || trained.length !== numTrainTimesteps || !trained.every(isNum))
  ) {
    throw new HarnessError(`${file}: trained_betas must be ${numTrainTimesteps} numbers`, ExitCode.usage);
  }
  // Each beta is a per-step noise variance: 1 - beta must stay in (0, 1) for alphas_cumprod and its
  // square roots. Checked here, naming the key, rather than as "NaN at step 0" of a later scheduler.
  if (Array.isArray(trained)) {
    const k = (trained as number[]).findIndex((b) => !(b >= 0 && b < 1));
    if (k >= 0) throw new HarnessError(`${file}: trained_betas[${k}] ${JSON.stringify(trained[k])} must be in [0, 1)`, ExitCode.usage);
  } else if (raw.beta_schedule !== "squaredcos_cap_v2") {
    // linear and scaled_linear interpolate between these two; the cosine schedule ignores them
    for (const key of ["beta_start", "beta_end"]) {
      const v = raw[key];
      if (typeof v === "number" && !(v > 0 && v < 1))
        throw new HarnessError(`${file}: "${key}" ${JSON.stringify(v)} must be in (0, 1) (a per-step noise variance)`, ExitCode.usage);
    }
  }
  const className = pick(raw, "_class_name", "PNDMScheduler", file, isStr);
  return {
    className,
    numTrainTimesteps,
    betaStart: pick(raw, "beta_start", 0.0001, file, isNum),
    betaEnd: pick(raw, "beta_end", 0.02, file, isNum),
    betaSchedule: pick<BetaSchedule>(raw, "beta_schedule", "linear", file, oneOf("linear", "scaled_linear", "squaredcos_cap_v2")),
    trainedBetas: Array.isArray(trained) ? (trained as number[]) : null,
    predictionType: pick<PredictionType>(raw, "prediction_type", "epsilon", file, oneOf("epsilon", "v_prediction", "sample")),
    timestepSpacing: pick<TimestepSpacing>(raw, "timestep_spacing", "leading", file, oneOf("leading", "linspace", "trailing")),
    stepsOffset: pick(raw, "steps_offset", 0, file, (v) => Number.isInteger(v) && (v as number) >= 0),
    clipSample: pick(raw, "clip_sample", false, file, isBool),
    clipSampleRange: pick(raw, "clip_sample_range", 1.0, file, isNum),
    setAlphaToOne: pick(raw, "set_alpha_to_one", false, file, isBool),
    skipPrkSteps: pick(raw, "skip_prk_steps", false, file, isBool),
    sigmaSchedule: sigmaSchedule(raw, defaultsOf(className), file),
    varianceType: pick(raw, "variance_type", "fixed_small", file, isStr),
    interpolationType: pick(raw, "interpolation_type", "linear", file, isStr),
    solverOrder: pick(raw, "solver_order", 2, file, (v) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 3),
    algorithmType: pick(raw, "algorithm_type", "dpmsolver++", file, isStr),
    solverType: pick(raw, "solver_type", "midpoint", file, isStr),
    lowerOrderFinal: pick(raw, "lower_order_final", true, file, isBool),
    finalSigmasType: pick(raw, "final_sigmas_type", "zero", file, isStr),
    predictX0: pick(raw, "predict_x0", true, file, isBool),
    disableCorrector: pick<number[]>(raw, "disable_corrector", [], file, (v) => Array.isArray(v)),
    timestepType: pick(raw, "timestep_type", "discrete", file, isStr),
    rescaleBetasZeroSnr: pick(raw, "rescale_betas_zero_snr", false, file, isBool),
    raw: { ...input },
  };
}

/**
 * The sigma schedule the config's use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas
 * select, for a class that has those keys (its defaults list them); "default" for one without,
 * whose from_config ignores them. Two set at once is refused, as diffusers' __init__ refuses it.
 */
function sigmaSchedule(
  raw: Record<string, unknown>,
  classDefaults: Readonly<Record<string, unknown>> | undefined,
  file: string,
): SigmaScheduleName {
  for (const n of SIGMA_SCHEDULE_NAMES) {
    const key = SIGMA_SCHEDULES[n].configKey;
    if (key !== null) pick(raw, key, false, file, isBool);
  }
  const honoured = SIGMA_SCHEDULE_NAMES.filter((n) => {
    const key = SIGMA_SCHEDULES[n].configKey;
    return key === null || (classDefaults !== undefined && key in classDefaults);
  });
  const chosen = sigmaScheduleOfRaw(
    Object.fromEntries(Object.entries(raw).filter(([k]) => honoured.some((n) => SIGMA_SCHEDULES[n].configKey === k))),
  );
  if (typeof chosen !== "string") {
    throw new HarnessError(
      `${file}: ${chosen.conflict.join(" and ")} are all true; at most one sigma schedule can be chosen`,
      ExitCode.usage,
    );
  }
  return chosen;
}

/** Refuse diffusers options this harness does not implement, naming the key. */
export function rejectUnsupported(
  config: SchedulerConfig,
  className: string,
  keys: Readonly<Record<string, (v: unknown) => boolean>>,
): void {
  for (const [key, bad] of Object.entries(keys)) {
    const v = config.raw[key];
    if (v !== undefined && v !== null && bad(v)) {
      throw new HarnessError(`${className}: ${key}=${JSON.stringify(v)} is not supported by this harness`, ExitCode.usage);
    }
  }
}
