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
import type { ReferenceSet } from "../cases/reference-set";
import type { CaseResult, TensorMetrics } from "../types";
import { CaseDef, defOfResult, stageDef } from "../stages/index";

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

/** One more correct float32 computation of a tensor: its relL2 against float64 and against the float32 reference. */
export interface SpreadEntry {
  readonly relL2: number;
  readonly relL2Ref: number;
}

/** variant name (threads1, no-onednn, ulp) -> tensor name -> its figures (scripts/refgen/spread.py) */
export type FloorSpread = Readonly<Record<string, Readonly<Record<string, SpreadEntry>>>>;

/** A loop's amplification: two float64 runs whose initial latents differ by one float32 ulp. */
export interface Amplification {
  readonly inputRelL2: number;
  readonly stepsRelL2: readonly number[];
}

/**
 * Where correct float32 computations of a tensor spread this far from float64 (relL2), float32
 * cannot fix the tensor at all: a chaotic loop has turned rounding into a different picture. Such
 * a tensor is reported with its envelope and not judged by `excess`; the case rests on its other
 * tensors and on its teacher-forced U-Net calls.
 */
const UNFIXABLE_REL_L2 = 0.05;

function isNum(v: unknown): v is number {
  return typeof v === "number";
}

/** The case's floors by tensor name, or why there are none ("no (--no-float64)", …), with its spread and amplification. */
export function caseFloor(
  refs: ReferenceSet,
  c: CaseDef,
): {
  floor: Readonly<Record<string, FloorEntry>> | null;
  spread: FloorSpread | null;
  amplification: Amplification | null;
  available: string;
} {
  const manifest = refs.manifest as unknown as { float64_floor?: unknown };
  const meta = refs.has(c.refId) ? (refs.get(c.refId).meta as Record<string, unknown> | undefined) : undefined;
  const floor = meta?.float64_floor;
  const spread = meta?.float32_spread && typeof meta.float32_spread === "object" ? (meta.float32_spread as FloorSpread) : null;
  const amp = meta?.amplification as { input_relL2?: unknown; steps_relL2?: unknown } | undefined;
  const amplification =
    amp && isNum(amp.input_relL2) && Array.isArray(amp.steps_relL2) && amp.steps_relL2.every(isNum)
      ? { inputRelL2: amp.input_relL2, stepsRelL2: amp.steps_relL2 as number[] }
      : null;
  if (floor && typeof floor === "object") return { floor: floor as Record<string, FloorEntry>, spread, amplification, available: "yes" };
  if (manifest.float64_floor === false) return { floor: null, spread: null, amplification: null, available: "no (--no-float64)" };
  return { floor: null, spread: null, amplification: null, available: "no (the reference set records no float64 floor for this case)" };
}

/** Whether a case will be judged against a float64 floor (decides which limits apply: tolerances.json's without_floor). */
export function hasFloor(refs: ReferenceSet, c: CaseDef): boolean {
  return stageDef(c.kind).float64Floor && caseFloor(refs, c).floor !== null;
}

export function excessRatio(relL2: number, floorRelL2: number): number {
  return relL2 / Math.max(floorRelL2, MIN_FLOOR_REL_L2);
}

/**
 * A tensor's floor: the envelope (largest relL2 against float64) over the reference and every other
 * correct float32 computation the set records, and how many computations that is.
 */
export function floorEnvelope(name: string, floor: FloorEntry, spread: FloorSpread | null): { relL2: number; samples: number } {
  let relL2 = floor.relL2;
  let samples = 1;
  for (const v of Object.values(spread ?? {})) {
    const e = v?.[name];
    if (!e || !isNum(e.relL2)) continue;
    samples++;
    if (!(e.relL2 <= relL2)) relL2 = e.relL2;
  }
  return { relL2, samples };
}

/**
 * Adds `excess` (and the floor it used) to every compared tensor that has a floor; says whether the
 * case had one. Cases of stages without a model (tokenizer, rng, scheduler) are left as they are.
 * The divisor is the envelope of the set's correct float32 computations (floorEnvelope), so a
 * port lands in units of how far correct float32 runs land, not of one machine's one run.
 */
export function withFloor(
  refs: ReferenceSet,
  c: CaseDef,
  metrics: Readonly<Record<string, TensorMetrics>>,
): {
  metrics: Record<string, TensorMetrics>;
  float64Floor?: string;
  amplification?: Amplification;
  unfixable?: string[];
} {
  if (!stageDef(c.kind).float64Floor) return { metrics: { ...metrics } };
  const { floor, spread, amplification, available } = caseFloor(refs, c);
  const out: Record<string, TensorMetrics> = {};
  const unfixable: string[] = [];
  for (const [name, m] of Object.entries(metrics)) {
    const f = floor?.[name];
    if (!f || !isNum(f.relL2)) {
      out[name] = m;
      continue;
    }
    const env = floorEnvelope(name, f, spread);
    const withEnv = { ...m, float64RelL2: f.relL2, floorRelL2: env.relL2, floorSamples: env.samples };
    if (env.relL2 > UNFIXABLE_REL_L2) {
      unfixable.push(`${name} (correct float32 runs spread to relL2 ${env.relL2.toExponential(2)} from float64)`);
      out[name] = withEnv;
    } else out[name] = { ...withEnv, excess: excessRatio(m.relL2, env.relL2) };
  }
  return {
    metrics: out,
    float64Floor: available,
    ...(amplification ? { amplification } : {}),
    ...(unfixable.length ? { unfixable } : {}),
  };
}

/** The largest amplification of a loop over its steps (relL2 after the step ÷ the initial one-ulp relL2). */
export function peakAmplification(a: Amplification): number {
  let peak = 0;
  for (const s of a.stepsRelL2) if (s / a.inputRelL2 > peak) peak = s / a.inputRelL2;
  return peak;
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
  readonly worst: {
    readonly id: string;
    readonly tensor: string;
    readonly excess: number;
    readonly relL2: number;
    readonly floor: number;
  } | null;
}

/** Per stage and model: how many cases had a float64 floor, and the worst excess ratio. */
export function floorSummary(results: readonly CaseResult[]): FloorSummaryRow[] {
  const rows = new Map<
    string,
    { stage: string; model: string; withFloor: number; without: number; whyNot: Set<string>; worst: FloorSummaryRow["worst"] }
  >();
  for (const r of results) {
    if (typeof r.float64Floor !== "string" || r.status === "skip") continue;
    // the free-running U-Net cases (unet:<run>-free) are judged by their own limits: a row of their own
    const stage = defOfResult(r)?.kind ?? r.stage;
    const key = `${stage}\u0000${r.model}`;
    const row =
      rows.get(key) ?? rows.set(key, { stage, model: r.model, withFloor: 0, without: 0, whyNot: new Set(), worst: null }).get(key)!;
    if (r.float64Floor === "yes") row.withFloor++;
    else {
      row.without++;
      row.whyNot.add(r.float64Floor.replace(/^no \((.*)\)$/, "$1"));
    }
    const w = worstExcess(r.metrics);
    if (w && (row.worst === null || !(w.value <= row.worst.excess))) {
      const m = r.metrics[w.tensor];
      row.worst = { id: r.id, tensor: w.tensor, excess: w.value, relL2: m.relL2, floor: m.floorRelL2 ?? m.float64RelL2 ?? NaN };
    }
  }
  return [...rows.values()].map((r) => ({ ...r, whyNot: [...r.whyNot] }));
}

/** "yes; envelope of 4 correct float32 computations; the loop amplifies a one-ulp change … ×374" */
export function floorText(c: CaseResult): string {
  const samples = Math.max(0, ...Object.values(c.metrics).map((m) => m.floorSamples ?? 0));
  const parts = [c.float64Floor ?? ""];
  if (samples > 1) parts.push(`envelope of ${samples} correct float32 computations`);
  if (c.amplification !== undefined)
    parts.push(`the loop amplifies a one-ulp change of its initial latents x${Number(c.amplification.toPrecision(3))}`);
  return parts.join("; ");
}

/** The sentence every report prints beside the ratio. */
export const EXCESS_EXPLAINED =
  "excess = our relL2 against the float32 reference ÷ the float32 floor: the largest relL2 against float64 PyTorch among the correct float32 computations the reference set records " +
  "(the reference itself and, where the set has them, the same stage with one thread, with oneDNN off and with its inputs one ulp off): drift in units of how far PyTorch's own float32 runs land. " +
  "The reference set stores no float64 tensors, so ours against float64 is not computed (it is at most excess + 1 floors). " +
  `A floor below float32's unit roundoff 2^-24 is taken as 2^-24; a tensor whose correct float32 runs spread beyond relL2 ${UNFIXABLE_REL_L2} is shown, not judged.`;
