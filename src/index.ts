/** sd-harness public API: the pipeline, its parts, and the conformance runner. */
export { StableDiffusionPipeline, NumericError } from "./pipeline/pipeline";
export type { GenerateParams, GenerateResult, StepInfo, PipelineOptions } from "./pipeline/pipeline";
export { loadModelFolder } from "./pipeline/model-folder";
export type { ModelFolder } from "./pipeline/model-folder";
export { ClipTokenizer } from "./pipeline/tokenizer";
export { TorchGenerator } from "./rng/torch-generator";
export { createScheduler, SCHEDULER_NAMES, SCHEDULERS, findScheduler } from "./schedulers";
export type { Scheduler, SchedulerDescriptor, SigmaScheduleName } from "./schedulers/types";
export { SIGMA_SCHEDULE_NAMES } from "./schedulers/sigma-schedules";
export { HarnessError, InvalidParameter, ExitCode } from "./errors";
export { readSafetensors, writeSafetensors } from "./tensor/safetensors";
