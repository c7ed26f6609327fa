/**
 * The judge room: how far ours is from the reference and whether that is too far. Drift metrics
 * of two tensors or two pictures (`metrics.ts`), tolerances as data and the verdict of one case
 * (`tolerances.ts`, `cli-limits.ts` for `--atol` / `--max-rel-l2`), PyTorch's own float32 error
 * against float64 as the floor a limit is measured from (`float64-floor.ts`), the one number a
 * stage is summed up by (`headline.ts`), and `--against`: another ONNX model's outputs in place of
 * PyTorch's (`against.ts`). Judging never knows which runtime produced a tensor.
 *
 * Imports go to the files themselves; this index is the room's surface for the CLI.
 */
export { loadTolerances, profiles } from "./tolerances";
export { withCommandLineLimits } from "./cli-limits";
