/**
 * The headline metric: the one number a case is summed up by — in the terminal line, in
 * summary.md's verdict table, in results.csv, and as what --baseline compares run to run.
 *
 * It is the worst relative L2 error (‖ours − ref‖ / ‖ref‖) over the case's compared tensors:
 * scale-free, so a stage of values near 1 and one near 1e-3 read alike, and it is what every
 * tolerance profile bounds. A stage may name another tensor metric in the registry (rng: maxUlp,
 * where a draw is either bit-exact or not); a case that compared no tensor but judged a case-level
 * measure (the tokenizer's mismatches) is summed up by that. Nothing measured: relL2 NaN.
 *
 * The other figures (max abs, PSNR, cosine, image PSNR) are shown beside it: report/format.ts.
 */
import { CaseResult } from "../types";
import { defOfResult } from "../stages/index";

export interface Headline {
  readonly metric: string;
  readonly value: number;
  /** the tensor the value is from ("case" for a case-level measure); absent when nothing was measured */
  readonly tensor?: string;
}

/** The largest value with its tensor, NaN first (as Math.max: a NaN drift never hides behind a finite one). */
function worst(entries: readonly [string, number][], metric: string, start?: number): Headline {
  let out: Headline = { metric, value: start ?? NaN };
  for (const [tensor, value] of entries) {
    if (out.tensor !== undefined && Number.isNaN(out.value)) break;
    if (out.tensor === undefined ? !(start !== undefined && value < start) : Number.isNaN(value) || value > out.value)
      out = { metric, value, tensor };
  }
  return out;
}

export function headline(r: CaseResult): Headline {
  const ms = Object.entries(r.metrics);
  const extra = r.checks.find((c) => c.tensor === "case");
  if (extra && ms.length === 0) return { metric: extra.metric, value: extra.value, tensor: "case" };
  const metric = defOfResult(r)?.headlineMetric;
  // an optional metric (maxUlp): a tensor without it counts as 0, and no tensor at all as 0
  if (metric !== undefined)
    return worst(
      ms.map(([t, m]) => [t, m[metric] ?? 0]),
      metric,
      0,
    );
  return worst(
    ms.map(([t, m]) => [t, m.relL2]),
    "relL2",
  );
}

/**
 * The worst headline over several cases (a stage of one model), per metric in order of first
 * appearance, `tensor` holding the worst case's id; cases that measured nothing (skipped, errors)
 * are left out.
 */
export function worstHeadlines(cases: readonly CaseResult[]): Headline[] {
  const by = new Map<string, [string, number][]>();
  for (const c of cases) {
    const h = headline(c);
    if (h.tensor === undefined) continue;
    const list = by.get(h.metric) ?? by.set(h.metric, []).get(h.metric)!;
    list.push([c.id, h.value]);
  }
  // the worst case's id in place of a tensor name
  return [...by].map(([metric, values]) => worst(values, metric));
}
