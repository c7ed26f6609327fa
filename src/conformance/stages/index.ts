/**
 * The stage registry: every conformance stage, one object each (./types.ts says what one holds).
 * The case list, the runner, --against, --localize-failed, the float64 floor, the coverage section
 * and the report writers' stage order all read this list; a new stage is a new file and a line here.
 *
 * The order is the pipeline's; it is also the order of the coverage section's stages.
 */
import { HarnessError, ExitCode } from "../../errors";
import { CaseDef, CaseKind, StageContext, StageDef, StageOutcome } from "./types";
import { tokenizer } from "./tokenizer";
import { textEncoder } from "./text-encoder";
import { rng } from "./rng";
import { scheduler } from "./scheduler";
import { unet } from "./unet";
import { unetFree } from "./unet-free";
import { vaeDecode } from "./vae-decode";
import { vaeEncode } from "./vae-encode";
import { vaeRoundtrip } from "./vae-roundtrip";
import { endToEnd } from "./end-to-end";

export type { CaseDef, CaseKind, StageDef, StageContext, StageOutcome, AgainstOutputs, CoverageFacts } from "./types";
export { COST } from "./types";

export const STAGE_DEFS: readonly StageDef[] = [
  tokenizer,
  textEncoder,
  rng,
  scheduler,
  unet,
  unetFree,
  vaeDecode,
  vaeEncode,
  vaeRoundtrip,
  endToEnd,
];

const BY_KIND = new Map<string, StageDef>(STAGE_DEFS.map((d) => [d.kind, d]));

export function stageDef(kind: CaseKind): StageDef {
  const d = BY_KIND.get(kind);
  if (!d) throw new HarnessError(`unknown case kind ${kind}`, ExitCode.internal);
  return d;
}

/** The reported stages (case-id prefixes), in registry order, each once. */
export const REPORTED_STAGES: readonly string[] = [...new Set(STAGE_DEFS.map((d) => d.stage))];

/**
 * The stage definition of a result read back from a report (which records the stage, not the
 * kind): the one claiming its id where several share the stage; undefined for a stage this
 * version does not know.
 */
export function defOfResult(r: { readonly stage: string; readonly id: string }): StageDef | undefined {
  const defs = STAGE_DEFS.filter((d) => d.stage === r.stage);
  return defs.find((d) => d.claims?.(r.id)) ?? defs.find((d) => !d.claims);
}

function lowest(stage: string, rank: (d: StageDef) => number | undefined): number | undefined {
  const ranks = STAGE_DEFS.filter((d) => d.stage === stage)
    .map(rank)
    .filter((x): x is number => x !== undefined);
  return ranks.length ? Math.min(...ranks) : undefined;
}

/** A reported stage's place in the report's tables; undefined for a stage this version does not know. */
export function displayRank(stage: string): number | undefined {
  return lowest(stage, (d) => d.displayRank);
}

/** A reported stage's drift-vs-step plot rank in report.html (lowest first); undefined: not plotted. */
export function plotRank(stage: string): number | undefined {
  return lowest(stage, (d) => d.plotRank);
}

/** Run one case of any stage. */
export function runStage(ctx: StageContext, c: CaseDef, model: string): Promise<StageOutcome> {
  return stageDef(c.kind).run(ctx, c, model);
}
