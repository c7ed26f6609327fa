/**
 * The float64 floor: scripts/make_references.py runs every model stage also in float64 PyTorch on
 * the same inputs and stores, per case and compared tensor, the float32 reference's own error
 * against that run (`meta.float64_floor = {tensor: {relL2, maxAbs, meanAbs}}`). The runner turns
 * it into the excess-error ratio
 *
 *   excess = relL2(ours vs the float32 reference) / relL2(float32 reference vs float64)
 *
 * — drift in units of PyTorch's own float32 error. The set stores no float64 tensors, so ours
 * against float64 is not computed; by the triangle inequality it is at most (excess + 1) floors.
 */
import type { ReferenceSet } from "./reference-set";
import type { CaseResult, TensorMetrics } from "./types";
import { CaseDef, defOfResult, stageDef } from "./stages/index";

/**
 * The smallest floor `excess` divides by: float32's unit roundoff 2^-24. A float32 tensor cannot
 * be closer than that to its float64 counterpart except by being exact (a floor of 0: a tensor
 * the float32 and float64 runs computed identically), and dividing by 0 would make any drift
 * infinite.
 */
export const MIN_FLOOR_REL_L2 = 2 ** -24;

export interface FloorEntry {
  readonly relL2: number;
  readonly maxAbs: number;
  readonly meanAbs: number;
}

/** The case's floors by tensor name, or why there are none ("no (--no-float64)", …). */
export function caseFloor(refs: ReferenceSet, c: CaseDef): { floor: Readonly<Record<string, FloorEntry>> | null; available: string } {
  const manifest = refs.manifest as unknown as { float64_floor?: unknown };
  const meta = refs.has(c.refId) ? (refs.get(c.refId).meta as Record<string, unknown> | undefined) : undefined;
  const floor = meta?.float64_floor;
  if (floor && typeof floor === "object") return { floor: floor as Record<string, FloorEntry>, available: "yes" };
  if (manifest.float64_floor === false) return { floor: null, available: "no (--no-float64)" };
  return { floor: null, available: "no (the reference set records no float64 floor for this case)" };
}

export function excessRatio(relL2: number, floorRelL2: number): number {
  return relL2 / Math.max(floorRelL2, MIN_FLOOR_REL_L2);
}

/**
 * Adds `excess` (and the floor it used) to every compared tensor that has a floor; says whether the
 * case had one. Cases of stages without a model (tokenizer, rng, scheduler) are left as they are.
 */
export function withFloor(refs: ReferenceSet, c: CaseDef, metrics: Readonly<Record<string, TensorMetrics>>): {
  metrics: Record<string, TensorMetrics>; float64Floor?: string;
} {
  if (!stageDef(c.kind).float64Floor) return { metrics: { ...metrics } };
  const { floor, available } = caseFloor(refs, c);
  const out: Record<string, TensorMetrics> = {};
  for (const [name, m] of Object.entries(metrics)) {
    const f = floor?.[name];
    out[name] = f && typeof f.relL2 === "number" ? { ...m, excess: excessRatio(m.relL2, f.relL2), float64RelL2: f.relL2 } : m;
  }
  return { metrics: out, float64Floor: available };
}

/** The largest excess over a case's tensors, with the tensor (null: no tensor had a floor). */
export function worstExcess(metrics: Readonly<Record<string, TensorMetrics>>): { tensor: string; value: number } | null {
  let worst: { tensor: string; value: number } | null = null;
  for (const [tensor, m] of Object.entries(metrics)) {
    if (m.excess === undefined) continue;
    if (worst === null || !(m.excess <= worst.value)) worst = { tensor, value: m.excess };
  }
  return worst;
}

export interface FloorSummaryRow {
  readonly stage: string;
  readonly model: string;
  /** cases with a floor / without one, and why not */
  readonly withFloor: number;
  readonly without: number;
  readonly whyNot: readonly string[];
  /** the largest excess of the group: case, tensor, our relL2, the floor */
  readonly worst: { readonly id: string; readonly tensor: string; readonly excess: number; readonly relL2: number; readonly floor: number } | null;
}

/** Per stage and model: how many cases had a float64 floor, and the worst excess ratio. */
export function floorSummary(results: readonly CaseResult[]): FloorSummaryRow[] {
  const rows = new Map<string, { stage: string; model: string; withFloor: number; without: number; whyNot: Set<string>; worst: FloorSummaryRow["worst"] }>();
  for (const r of results) {
    if (typeof r.float64Floor !== "string" || r.status === "skip") continue;
    // the free-running U-Net cases (unet:<run>-free) are judged by their own limits: a row of their own
    const stage = defOfResult(r)?.kind ?? r.stage;
    const key = `${stage}\u0000${r.model}`;
    const row = rows.get(key) ?? rows.set(key, { stage, model: r.model, withFloor: 0, without: 0, whyNot: new Set(), worst: null }).get(key)!;
    if (r.float64Floor === "yes") row.withFloor++;
    else {
      row.without++;
      row.whyNot.add(r.float64Floor.replace(/^no \((.*)\)$/, "$1"));
    }
    const w = worstExcess(r.metrics);
    if (w && (row.worst === null || !(w.value <= row.worst.excess))) {
      const m = r.metrics[w.tensor];
      row.worst = { id: r.id, tensor: w.tensor, excess: w.value, relL2: m.relL2, floor: m.float64RelL2 ?? NaN };
    }
  }
  return [...rows.values()].map((r) => ({ ...r, whyNot: [...r.whyNot] }));
}

/** The sentence every report prints beside the ratio. */
export const EXCESS_EXPLAINED =
  "excess = our relL2 against the float32 reference ÷ the float32 reference's relL2 against float64 PyTorch: drift in units of PyTorch's own float32 error. " +
  "The reference set stores no float64 tensors, so ours against float64 is not computed (it is at most excess + 1 floors). " +
  `A floor below float32's unit roundoff 2^-24 is taken as 2^-24.`;
