/**
 * sd-harness's public API, the package's one code entry point (package.json "exports"): the
 * pipeline and its options, the model-folder loader, the CLIP tokenizer, torch's CPU generator, the
 * scheduler registry and factory, the project's errors and exit codes, and safetensors I/O. The
 * conformance suite is not part of it: it runs through the CLI (`sd-harness conformance`,
 * `report merge`, `sensitivity`), and other tools read its report.json.
 */
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
