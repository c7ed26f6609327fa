/** Tolerances as data (conformance/tolerances.json): per stage and profile, overridable per case with a reason. */
import * as path from "node:path";
import * as crypto from "node:crypto";
import { HarnessError, ExitCode, oneLine } from "../../errors";
import { PACKAGE_ROOT } from "../../util/package";
import { Check, TensorMetrics, ImageMetrics } from "../types";
import { LOWER_BOUND_METRICS, metricDef } from "./metric-table";
import { compileGlob, GlobMatcher } from "../../util/glob";
import { readInputFile, INPUT_LIMITS } from "../../util/read-input";

export type Limits = Readonly<Record<string, number>>;

export interface ToleranceFile {
  readonly profiles: Readonly<Record<string, Readonly<Record<string, Limits>>>>;
  readonly overrides: readonly { readonly case: string; readonly profile?: string; readonly limits: Limits; readonly reason: string }[];
  readonly expected_failures: readonly {
    readonly case: string;
    readonly profile?: string;
    readonly model?: string;
    readonly reason: string;
  }[];
  /**
   * profile -> stage -> the limits that stand in for `excess` where a case has no float64 floor (a
   * set made with --no-float64, an older set, --against): the only hand-set limits of a profile
   * whose model stages are judged in units of the measured floor
   */
  readonly without_floor?: Readonly<Record<string, Readonly<Record<string, Limits>>>>;
  /**
   * the versions the limits were measured with (top-level "measured_with", e.g. {"onnxruntime-node":
   * "1.30.0"}): a run on another version is warned about, since drift near a limit may then be the
   * runtime's (versionWarnings)
   */
  readonly measured_with?: Readonly<Record<string, string>>;
  /**
   * profile -> stage (or "*" for all) -> why its limits are what they are (top-level "reasons"):
   * shown with every case the profile judges, unless an override gives its own reason
   */
  readonly reasons?: Readonly<Record<string, Readonly<Record<string, string>>>>;
  /** where it was read from and the sha256 of its bytes (recorded in reports; merge compares it) */
  readonly file?: string;
  readonly sha256?: string;
}

export const DEFAULT_TOLERANCES = path.join(PACKAGE_ROOT, "conformance", "tolerances.json");

/** A case-id glob (`*`, `?`), matched in linear-ish time (src/util/glob.ts; no regular expression). */
export function globToRegExp(glob: string): GlobMatcher {
  return compileGlob(glob);
}

export function loadTolerances(file = DEFAULT_TOLERANCES): ToleranceFile {
  let t: ToleranceFile;
  let sha256: string;
  try {
    const bytes = readInputFile(file, "tolerances", INPUT_LIMITS.manifest);
    sha256 = crypto.createHash("sha256").update(bytes).digest("hex");
    t = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    if (e instanceof HarnessError) throw e;
    throw new HarnessError(`${file}: cannot read tolerances (${(e as Error).message.split("\n")[0]})`, ExitCode.usage);
  }
  if (!t || typeof t.profiles !== "object") throw new HarnessError(`${file}: no "profiles" object`, ExitCode.usage);
  for (const o of t.overrides ?? []) {
    if (!o.reason) throw new HarnessError(`${file}: override for ${o.case} has no reason; every override must say why`, ExitCode.usage);
  }
  const mw = (t as { measured_with?: unknown }).measured_with;
  if (
    mw !== undefined &&
    (typeof mw !== "object" || mw === null || Array.isArray(mw) || Object.values(mw).some((v) => typeof v !== "string"))
  ) {
    throw new HarnessError(
      `${file}: "measured_with" must map package names to versions, e.g. {"onnxruntime-node": "1.30.0"}`,
      ExitCode.usage,
    );
  }
  const reasons = (t as { reasons?: unknown }).reasons;
  if (
    reasons !== undefined &&
    (typeof reasons !== "object" ||
      reasons === null ||
      Array.isArray(reasons) ||
      Object.values(reasons).some(
        (r) => typeof r !== "object" || r === null || Array.isArray(r) || Object.values(r).some((v) => typeof v !== "string"),
      ))
  ) {
    throw new HarnessError(`${file}: "reasons" must map profiles to {stage or "*": reason}`, ExitCode.usage);
  }
  return {
    profiles: t.profiles,
    overrides: t.overrides ?? [],
    expected_failures: t.expected_failures ?? [],
    ...(t.without_floor ? { without_floor: t.without_floor } : {}),
    ...(mw ? { measured_with: mw as Record<string, string> } : {}),
    ...(reasons ? { reasons: reasons as Record<string, Record<string, string>> } : {}),
    file,
    sha256,
  };
}

/**
 * One line for each package whose version in this run differs from the one the limits were
 * measured with (none when the file does not say, or the versions match).
 */
export function versionWarnings(t: ToleranceFile, running: Readonly<Record<string, string>>): string[] {
  const out: string[] = [];
  for (const [pkg, measured] of Object.entries(t.measured_with ?? {})) {
    const now = running[pkg];
    if (now === undefined || now === measured) continue;
    out.push(
      `the limits in ${t.file ?? "the tolerance file"} were measured with ${pkg} ${oneLine(measured, 40)}; this run uses ${pkg} ${now}, so drift near a limit may come from the runtime rather than the port`,
    );
  }
  return out;
}

/** The sha256 a report records for tolerances: of the file's bytes, or of the object when built in code. */
export function toleranceSha256(t: ToleranceFile): string {
  if (t.sha256) return t.sha256;
  const { profiles: p, overrides, expected_failures, without_floor } = t;
  return crypto
    .createHash("sha256")
    .update(JSON.stringify({ profiles: p, overrides, expected_failures, ...(without_floor ? { without_floor } : {}) }))
    .digest("hex");
}

/**
 * No limit must never mean pass: a case whose resolved limits are empty cannot be judged, so it
 * is refused up front, naming the tolerance file, the profile and the stage.
 */
export function requireLimits(t: ToleranceFile, profile: string, stageKey: string, caseId: string, resolved: Resolved): void {
  const where = t.file ?? "tolerances";
  for (const [metric, limit] of Object.entries(resolved.limits)) {
    if (typeof limit !== "number" || Number.isNaN(limit)) {
      throw new HarnessError(
        `${where}: limit ${metric} for ${resolved.source} (profile ${JSON.stringify(profile)}) is ${JSON.stringify(limit)}, not a number`,
        ExitCode.usage,
      );
    }
  }
  if (Object.keys(resolved.limits).length > 0) return;
  throw new HarnessError(
    `${where}: profile ${JSON.stringify(profile)} has no limits for stage ${stageKey} (case ${caseId}); a case without a limit cannot pass: add limits for ${profile}.${stageKey} or skip the stage`,
    ExitCode.usage,
  );
}

export function profiles(t: ToleranceFile): string[] {
  return Object.keys(t.profiles);
}

export interface Resolved {
  readonly limits: Limits;
  readonly source: string;
  readonly reason?: string;
  readonly expectedFailure?: string;
}

/** The limits for one case: the stage's profile defaults, then matching overrides in order. */
export function resolve(t: ToleranceFile, profile: string, stageKey: string, caseId: string, model: string, floor = true): Resolved {
  const p = t.profiles[profile];
  if (!p) throw new HarnessError(`--profile: unknown profile ${JSON.stringify(profile)}; known: ${profiles(t).join(", ")}`, ExitCode.usage);
  let limits: Record<string, number> = { ...(p[stageKey] ?? {}) };
  let source = `${profile}.${stageKey}`;
  const fallback = floor ? undefined : t.without_floor?.[profile]?.[stageKey];
  if (fallback) {
    // no floor to divide by: the profile's excess cannot be judged, its stand-in limits are
    delete limits.excess;
    limits = { ...limits, ...fallback };
    source = `without_floor.${profile}.${stageKey}`;
  }
  let reason: string | undefined = t.reasons?.[profile]?.[stageKey] ?? t.reasons?.[profile]?.["*"];
  for (const o of t.overrides) {
    if ((o.profile === undefined || o.profile === profile) && globToRegExp(o.case).test(caseId)) {
      limits = { ...limits, ...o.limits };
      source = `override ${o.case}`;
      reason = o.reason;
    }
  }
  const xf = t.expected_failures.find(
    (x) =>
      (x.profile === undefined || x.profile === profile) &&
      (x.model === undefined || x.model === model) &&
      globToRegExp(x.case).test(caseId),
  );
  return { limits, source, reason, expectedFailure: xf?.reason };
}

/** Evaluate limits against every compared tensor (and image). Metrics a tensor lacks are not checked for it. */
export function evaluate(
  limits: Limits,
  metrics: Readonly<Record<string, TensorMetrics>>,
  images: readonly ImageMetrics[] = [],
  extra: Readonly<Record<string, number>> = {},
): Check[] {
  const checks: Check[] = [];
  for (const [metric, limit] of Object.entries(limits)) {
    const lower = LOWER_BOUND_METRICS.has(metric);
    const push = (tensor: string, value: number) => {
      const ok = Number.isNaN(value) ? false : lower ? value >= limit : value <= limit;
      checks.push({ tensor, metric, value, limit, kind: lower ? "min" : "max", ok });
    };
    if (metric in extra) {
      push("case", extra[metric]);
      continue;
    }
    if (metricDef(metric)?.of === "image") {
      images.forEach((im, i) => push(`image${images.length > 1 ? i : ""}`, (im as unknown as Record<string, number>)[metric]));
      continue;
    }
    for (const [tensor, m] of Object.entries(metrics)) {
      const v = (m as unknown as Record<string, number | undefined>)[metric];
      if (typeof v === "number") push(tensor, v);
    }
  }
  return checks;
}
