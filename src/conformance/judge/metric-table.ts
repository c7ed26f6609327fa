/**
 * The drift metrics, one row each: every figure a tolerance can limit and a report prints. The
 * judge (tolerances.ts: which bound a limit is), report.json's reader (report-file.ts: which fields
 * a tensor or image must carry), the number formats (report/format.ts) and sensitivity (which
 * figures move in whole steps) read this table; `metrics.ts` computes the tensor and image rows.
 * Data only: the report writers load it without the metric code (pixelmatch).
 *
 * Adding a metric: a row here, and its computation in metrics.ts (or the stage that reports a case
 * figure); the field on `TensorMetrics` / `ImageMetrics` in ../types.ts is its type.
 */

export interface MetricDef {
  readonly name: string;
  /** a field of every compared tensor (`TensorMetrics`), of every compared picture (`ImageMetrics`), or one figure of a case a stage reports (`StageOutcome.extra`) */
  readonly of: "tensor" | "image" | "case";
  /** which direction is worse: "higher" (an error; a limit is a maximum) or "lower" (a similarity; a limit is a minimum) */
  readonly worse: "higher" | "lower";
  /** how every report prints it: decibels, a cosine's nines, a whole count, or a plain number */
  readonly format: "psnr" | "cosine" | "count" | "number";
  /** moves in whole steps (a uint8 picture, ULPs, mismatch counts): a one-level flip says nothing about how close a miss came (sensitivity) */
  readonly discrete?: boolean;
  /** a tensor field only some stages have (absent reads as not measured) */
  readonly optional?: boolean;
  /** a record of the comparison, not a drift figure a tolerance would limit (the worst element's values, the float64 floor's samples) */
  readonly record?: boolean;
}

/** In report.json's field order (report-file.ts validates in this order, so its first complaint is stable). */
export const METRICS: readonly MetricDef[] = [
  { name: "count", of: "tensor", worse: "higher", format: "count", record: true },
  { name: "maxAbs", of: "tensor", worse: "higher", format: "number" },
  { name: "meanAbs", of: "tensor", worse: "higher", format: "number" },
  { name: "rmse", of: "tensor", worse: "higher", format: "number" },
  { name: "relL2", of: "tensor", worse: "higher", format: "number" },
  { name: "cosine", of: "tensor", worse: "lower", format: "cosine" },
  { name: "psnr", of: "tensor", worse: "lower", format: "psnr" },
  { name: "p99Abs", of: "tensor", worse: "higher", format: "number" },
  { name: "nanCount", of: "tensor", worse: "higher", format: "count" },
  { name: "infCount", of: "tensor", worse: "higher", format: "count" },
  { name: "worstOurs", of: "tensor", worse: "higher", format: "number", record: true },
  { name: "worstRef", of: "tensor", worse: "higher", format: "number", record: true },
  { name: "maxUlp", of: "tensor", worse: "higher", format: "number", discrete: true, optional: true },
  { name: "excess", of: "tensor", worse: "higher", format: "number", optional: true },
  { name: "float64RelL2", of: "tensor", worse: "higher", format: "number", optional: true, record: true },
  { name: "floorRelL2", of: "tensor", worse: "higher", format: "number", optional: true, record: true },
  { name: "floorSamples", of: "tensor", worse: "higher", format: "number", optional: true, record: true },
  { name: "psnrU8", of: "image", worse: "lower", format: "psnr", discrete: true },
  { name: "maxAbsU8", of: "image", worse: "higher", format: "number", discrete: true },
  { name: "mismatchedPixels", of: "image", worse: "higher", format: "count", discrete: true },
  { name: "mismatches", of: "case", worse: "higher", format: "count", discrete: true },
  { name: "timestepMismatches", of: "case", worse: "higher", format: "count", discrete: true },
  { name: "scheduleLengthDiff", of: "case", worse: "higher", format: "number", discrete: true },
];

const BY_NAME = new Map(METRICS.map((m) => [m.name, m]));

/** The row of a metric; undefined for a name this version does not know (a newer report's, a tolerance file's typo). */
export function metricDef(name: string): MetricDef | undefined {
  return BY_NAME.get(name);
}

/** The metrics whose limit is a minimum (higher is better). */
export const LOWER_BOUND_METRICS: ReadonlySet<string> = new Set(METRICS.filter((m) => m.worse === "lower").map((m) => m.name));

/** The names of one kind's metrics, in table order. */
export function metricNames(of: MetricDef["of"], which: (m: MetricDef) => boolean = () => true): string[] {
  return METRICS.filter((m) => m.of === of && which(m)).map((m) => m.name);
}
