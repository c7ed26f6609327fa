/**
 * The scheduler interface. Unlike diffusers, a scheduler object holds no hidden step counter:
 * every call names the step index `i` into `timesteps`, and history that multistep methods need
 * (PNDM's ets, LMS's derivatives, DPM-Solver's model outputs, UniPC's corrector inputs) lives in an
 * explicit state of the scheduler's own type S, created by `initialState()` and passed to every
 * `step`, so any single step can be tested on its own from a recorded state.
 */

export type BetaSchedule = "linear" | "scaled_linear" | "squaredcos_cap_v2";
export type PredictionType = "epsilon" | "v_prediction" | "sample";
export type TimestepSpacing = "leading" | "linspace" | "trailing";

/** scheduler_config.json, parsed once into camelCase; every key has diffusers' default. */
export interface SchedulerConfig {
  readonly className: string;
  readonly numTrainTimesteps: number;
  readonly betaStart: number;
  readonly betaEnd: number;
  readonly betaSchedule: BetaSchedule;
  readonly trainedBetas: readonly number[] | null;
  readonly predictionType: PredictionType;
  readonly timestepSpacing: TimestepSpacing;
  readonly stepsOffset: number;
  readonly clipSample: boolean;
  readonly clipSampleRange: number;
  readonly setAlphaToOne: boolean;
  readonly skipPrkSteps: boolean;
  /** the sigma schedule use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas select (at most one) */
  readonly sigmaSchedule: SigmaScheduleName;
  readonly varianceType: string;
  readonly interpolationType: string;
  readonly solverOrder: number;
  readonly algorithmType: string;
  readonly solverType: string;
  readonly lowerOrderFinal: boolean;
  readonly finalSigmasType: string;
  readonly predictX0: boolean;
  readonly disableCorrector: readonly number[];
  readonly timestepType: string;
  readonly rescaleBetasZeroSnr: boolean;
  /** all raw keys, for reports */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** A source of standard-normal noise of a given shape (the pipeline's seeded TorchGenerator). */
export interface NoiseSource {
  randn(dims: readonly number[]): Float32Array;
}

/** The state of a scheduler without history (every step depends on its index alone). */
export type NoState = Readonly<Record<string, never>>;

export interface StepResult {
  readonly prevSample: Float32Array;
  /** the scheduler's estimate of the clean sample, where it computes one */
  readonly predOriginalSample?: Float32Array;
}

/**
 * A scheduler whose per-run history has type S (LmsState, DpmState...; NoState for the single-step
 * ones). Callers that hold any scheduler see Scheduler<unknown>: they pass back what initialState()
 * gave them, and each multistep scheduler still checks the state's shape at run time.
 */
export interface Scheduler<S = unknown> {
  readonly name: string;
  readonly config: SchedulerConfig;
  readonly numInferenceSteps: number;
  /** the timesteps fed to the U-Net, one per model call (Heun / PNDM-PRK repeat entries) */
  readonly timesteps: Float32Array;
  /** sigma-based schedulers: sigmas[i] for each model call plus the final sigma; else empty */
  readonly sigmas: Float32Array;
  /** diffusers' scheduler.order: model calls per "step" (2 for Heun), used for img2img's t_start */
  readonly order: number;
  /** the sigma schedule it runs on, as createScheduler resolved it (undefined: a scheduler without sigmas) */
  readonly sigmaSchedule?: SigmaScheduleName;
  /** the std of the initial noise (sigma_max-based for the k-diffusion family) */
  readonly initNoiseSigma: number;
  initialState(): S;
  /** input scaling before the U-Net call at index i (1/sqrt(sigma²+1) for k-diffusion schedulers) */
  scaleModelInput(sample: Float32Array, i: number): Float32Array;
  /** one update; draws noise from `noise` only where the algorithm is stochastic, documented per scheduler */
  step(modelOutput: Float32Array, i: number, sample: Float32Array, state: S, noise?: NoiseSource, dims?: readonly number[]): StepResult;
  /** forward diffusion q(x_t | x_0) at the timestep of call index i (img2img's starting point) */
  addNoise(original: Float32Array, noise: Float32Array, i: number): Float32Array;
}

export interface SchedulerOptions {
  /** DDIM's eta (0: deterministic) */
  readonly eta?: number;
  /**
   * the sigma schedule to run on instead of the one the model's config selects (diffusers:
   * `Cls.from_config(config, use_exponential_sigmas=True)`); must be one the scheduler accepts
   */
  readonly sigmas?: SigmaScheduleName;
}

export type SchedulerFactory = (config: SchedulerConfig, numInferenceSteps: number, opts?: SchedulerOptions) => Scheduler;

/**
 * The sigma schedules a scheduler can run on, each selected in diffusers 0.35.2 by one boolean config
 * key (at most one may be set): "default" (the training sigmas interpolated at the timesteps),
 * "karras" (Karras et al. 2022 eq. 5, rho 7), "exponential" (uniform in log sigma) and "beta"
 * (Lee et al. 2024, "Beta Sampling is All You Need": sigma_min + (sigma_max - sigma_min) times the
 * quantiles of Beta(0.6, 0.6)). See sigma-schedules.ts.
 */
export type SigmaScheduleName = "default" | "karras" | "exponential" | "beta";

/** Per sigma schedule: diffusers' config key and AUTOMATIC1111's "Schedule type" label (null: none). */
export interface SigmaScheduleInfo {
  readonly configKey: string | null;
  readonly a1111Label: string | null;
}

/**
 * Everything the rest of the project knows about one scheduler choice, kept beside its algorithm.
 * The registry (index.ts) lists these; the CLI, PNG metadata, tests and conformance iterate it.
 */
export interface SchedulerDescriptor {
  /** the CLI's short name (`--scheduler euler-a`) */
  readonly id: string;
  /** diffusers' `_class_name` */
  readonly className: string;
  /**
   * the sampler name AUTOMATIC1111's web UI writes into its `parameters` text (k-diffusion names:
   * "Euler a", "DPM++ 2M Karras"), so a PNG reads back in that ecosystem; see each descriptor for
   * the ones A1111 lacks
   */
  readonly a1111Name: string;
  /** diffusers 0.35.2's __init__ defaults of this class for the keys SchedulerConfig holds */
  readonly defaults: Readonly<Record<string, unknown>>;
  /** raw config keys this choice forces on top of the model's file (dpm++2m-karras: use_karras_sigmas) */
  readonly overrides?: Readonly<Record<string, unknown>>;
  /**
   * the sigma schedules it accepts (diffusers' use_karras_sigmas / use_exponential_sigmas /
   * use_beta_sigmas); empty for the schedulers that step over alphas_cumprod indexed by integer
   * timestep (PNDM, DDIM, DDPM), which have no sigmas
   */
  readonly sigmaSchedules: readonly SigmaScheduleName[];
  readonly create: SchedulerFactory;
}
