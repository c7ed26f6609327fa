/**
 * The cases room: what a run can check. The reference set a PyTorch run wrote (`reference-set.ts`:
 * manifest, tensors, sha256 checks), the case list the stage registry derives from it with
 * `--only` / `--skip` / `--shard` (`cases.ts`), the model-folder fingerprint a set expects
 * (`fingerprint.ts`), and what a run exercised and what it left out (`coverage.ts`).
 * Which stages exist and what each runs is the stage registry (`../stages/`).
 *
 * Imports go to the files themselves; this index is the room's surface for the CLI.
 */
export { listCases, filterCases, parseShard, shardCases, caseCost } from "./cases";
export { ReferenceSet } from "./reference-set";
