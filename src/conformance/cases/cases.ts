/**
 * The case list, derived from a reference set's manifest: every reference case is a conformance
 * case with the same id, and each end-to-end run also yields a free-running U-Net case
 * (`unet:<run>-free`). Filtering (--only / --skip globs) and sharding (--shard i/n) act on ids.
 */
import { HarnessError, ExitCode, oneLine } from "../../errors";
import { ReferenceSet } from "./reference-set";
import { globToRegExp } from "../judge/tolerances";
import { CaseDef, STAGE_DEFS, stageDef } from "../stages/index";

export type { CaseDef, CaseKind } from "../stages/index";
export { COST } from "../stages/index";

/** Every case the stage registry lists from the set's reference cases, by id. */
export function listCases(refs: ReferenceSet): CaseDef[] {
  const out: CaseDef[] = [];
  for (const c of refs.cases) {
    for (const d of STAGE_DEFS) {
      if (d.source !== c.stage) continue;
      // tensor stages read safetensors cases; other files in a set (an index, notes) are not cases
      if (d.readsTensors && !c.file.endsWith(".safetensors")) continue;
      out.push({ id: d.caseId(c), stage: d.stage, kind: d.kind, refId: c.id });
    }
  }
  return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export function filterCases(cases: readonly CaseDef[], only: readonly string[], skip: readonly string[]): CaseDef[] {
  const o = only.map(globToRegExp);
  const s = skip.map(globToRegExp);
  return cases.filter((c) => (o.length === 0 || o.some((r) => r.test(c.id))) && !s.some((r) => r.test(c.id)));
}

export function parseShard(text: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  // compared as whole numbers: 9007199254740993 would round to a neighbour as a double
  const big = m ? [BigInt(m[1]), BigInt(m[2])] : null;
  if (big && big[1] > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new HarnessError(
      `--shard: ${JSON.stringify(oneLine(text, 60))}: n is larger than any number of shards can be (at most ${Number.MAX_SAFE_INTEGER}, and at most one shard per case is useful)`,
      ExitCode.usage,
    );
  }
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!m || count < 1 || index < 1 || index > count) {
    throw new HarnessError(`--shard: ${JSON.stringify(oneLine(text, 60))} must be i/n with 1 <= i <= n (for example 2/4)`, ExitCode.usage);
  }
  return { index, count };
}

/** Relative cost of one case in U-Net calls (COST), as its stage estimates it from the reference case's meta. */
export function caseCost(refs: ReferenceSet, c: CaseDef): number {
  const meta = (refs.has(c.refId) ? (refs.get(c.refId).meta as Record<string, unknown> | undefined) : undefined) ?? {};
  return stageDef(c.kind).cost(meta);
}

/**
 * Shard i of n, balanced by estimated cost (U-Net calls), not by count: the longest-processing-time
 * rule (cases by cost, largest first, each to the shard with the least so far; ties by id and by
 * shard number), so every shard process computes the same partition from the same list.
 */
export function shardCases(
  cases: readonly CaseDef[],
  shard: { index: number; count: number },
  cost: (c: CaseDef) => number = () => 1,
): CaseDef[] {
  const order = cases.map((c, k) => ({ c, k, w: cost(c) })).sort((a, b) => b.w - a.w || (a.c.id < b.c.id ? -1 : a.c.id > b.c.id ? 1 : 0));
  // only the first min(n, cases) shards can ever receive a case (an empty shard with the lowest
  // number is always the least loaded), so more shards than cases need no more room than that
  const load = new Array<number>(Math.min(shard.count, cases.length)).fill(0);
  if (shard.index > load.length) return [];
  const mine = new Set<number>();
  for (const { k, w } of order) {
    let best = 0;
    for (let s = 1; s < load.length; s++) if (load[s] < load[best]) best = s;
    load[best] += w;
    if (best === shard.index - 1) mine.add(k);
  }
  return cases.filter((_, k) => mine.has(k));
}

/** Estimated cost of each shard of a case list (for reports and the balance test). */
export function shardLoads(cases: readonly CaseDef[], count: number, cost: (c: CaseDef) => number): number[] {
  return Array.from({ length: count }, (_, i) => shardCases(cases, { index: i + 1, count }, cost).reduce((s, c) => s + cost(c), 0));
}
