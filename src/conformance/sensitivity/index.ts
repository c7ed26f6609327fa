/**
 * The sensitivity room (`sd-harness sensitivity`): how large a weight fault of each layer kind the
 * tolerances can see. `layer-kinds.ts` names the kinds of initializer per component and maps a
 * model's initializers onto them; `sensitivity.ts` edits weights in copies of the model folder,
 * runs the conformance cases each component reaches and finds the smallest fault that fails.
 * Its writers are in `../report/sensitivity.ts`.
 *
 * Imports go to the files themselves; this index is the room's surface for the CLI.
 */
export { runSensitivity, DEFAULT_RELATIVES, DEFAULT_SCALES } from "./sensitivity";
export type { SensitivityReport } from "./sensitivity";
export { LAYER_KINDS } from "./layer-kinds";
