/**
 * Joining sharded conformance reports. Shards are only comparable when they ran the same models
 * (sha256 of every ONNX file, per label), the same reference set (sha256 of its manifest.json and
 * its fingerprint when it has one), the same tolerance profile, the same tolerance file and the
 * same --against model (label and file hashes), and, where they localized (--localize), the same
 * module set, module limits and floor; any difference is refused with one line naming the two
 * shard files and the differing field. The --localize sections join call by call (the union per
 * model and call: every shard localizes with the same inputs, so a call two shards ran is kept
 * once, from the first).
 */
import { HarnessError, ExitCode, oneLine } from "../../errors";
import { CaseResult, ModelInfo, Report, summarize } from "../types";
import { mergeCoverage } from "../cases/coverage";
import type { CallLocalization, LocalizeReport } from "../types";
import { LOCALIZE_COMPONENTS } from "../localize/localize-components";

export interface Shard {
  readonly report: Report;
  /** the report.json it was read from, for messages */
  readonly file: string;
}

function short(v: unknown): string {
  const s = typeof v === "string" ? v : (JSON.stringify(v) ?? "none");
  return oneLine(/^[0-9a-f]{64}$/.test(s) ? `${s.slice(0, 12)}…` : s, 60);
}

function stable(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stable).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stable((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v) ?? "undefined";
}

/** The identity fields two shards must share, as (field, value) pairs. */
function identity(s: Shard): [string, unknown][] {
  const r = s.report;
  const out: [string, unknown][] = [["profile", r.profile]];
  out.push(["references.sha256", r.references.sha256]);
  if (r.references.fingerprint !== undefined) out.push(["references.fingerprint", stable(r.references.fingerprint)]);
  out.push(["tolerances.sha256", r.tolerances?.sha256]);
  // another port as the reference: the same model by label and file hashes (its folder may differ per machine)
  out.push(["against", r.against ? stable({ label: r.against.label, hashes: r.against.hashes }) : "none"]);
  // drift measured on one runtime says nothing of another's: shards must share the runtime (the device may differ)
  out.push(["runtime", runtimeIdentity(r)]);
  return out;
}

/** The runtime of a report's models: name, package, version, execution provider (older reports: onnxruntime-node's CPU provider). */
function runtimeIdentity(r: Report): string {
  const of = (m: ModelInfo) => {
    const d = m.runtime ?? {
      runtime: "ort-node",
      package: "onnxruntime-node",
      version: r.run.versions["onnxruntime-node"] ?? "?",
      executionProvider: "cpu",
    };
    return `${d.runtime} ${d.package} ${d.version} ${d.executionProvider}`;
  };
  return [...new Set([...r.models, ...(r.against ? [r.against] : [])].map(of))].join("; ");
}

/** What two shards' --localize sections must share to be joined. */
function localizeIdentity(l: LocalizeReport): [string, unknown][] {
  return [
    ["localize.references.sha256", l.references.sha256],
    ["localize.profile", l.profile],
    ["localize.limits", stable({ profiles: l.limits.profiles, overrides: l.limits.overrides })],
    ["localize.floor", l.floor],
    ["localize.against.label", l.against?.label ?? "none"],
  ];
}

/** The shards' --localize sections as one: calls joined per model and call, in model then component order. */
function mergeLocalize(shards: readonly Shard[], modelOrder: readonly string[]): LocalizeReport | undefined {
  const parts = shards.filter((s) => s.report.localize !== undefined);
  if (parts.length === 0) return undefined;
  const [first] = parts;
  const want = new Map(localizeIdentity(first.report.localize!));
  for (const s of parts.slice(1)) {
    for (const [field, value] of localizeIdentity(s.report.localize!)) {
      if (want.get(field) !== value)
        throw new HarnessError(
          `report merge: ${first.file} and ${s.file} differ in ${field} (${short(want.get(field))} vs ${short(value)})`,
          ExitCode.usage,
        );
    }
  }
  const byKey = new Map<string, CallLocalization>();
  for (const s of parts) {
    for (const c of s.report.localize!.calls) {
      const key = `${c.model}\u0000${c.call}`;
      if (!byKey.has(key)) byKey.set(key, c);
    }
  }
  const rank = (c: CallLocalization) => [modelOrder.indexOf(c.model), LOCALIZE_COMPONENTS.indexOf(c.component)];
  // a stable sort keeps each component's calls in the order the module set lists them
  const calls = [...byKey.values()].sort((a, b) => {
    const [ma, ca] = rank(a);
    const [mb, cb] = rank(b);
    return ma - mb || ca - cb;
  });
  return { ...first.report.localize!, calls, timeMs: parts.reduce((t, s) => t + s.report.localize!.timeMs, 0) };
}

/** Refuses shards that cannot be joined; see the file comment. */
function checkShardsMatch(shards: readonly Shard[]): void {
  for (const s of shards) {
    if (typeof s.report.references.sha256 !== "string") {
      throw new HarnessError(
        `report merge: ${s.file} has no references.sha256 (written before shards carried the reference set's identity; run the shard again)`,
        ExitCode.usage,
      );
    }
    if (typeof s.report.tolerances?.sha256 !== "string") {
      throw new HarnessError(
        `report merge: ${s.file} has no tolerances.sha256 (written before shards recorded their tolerance file; run the shard again)`,
        ExitCode.usage,
      );
    }
    if (s.report.models.length === 0 || s.report.models.some((m) => Object.keys(m.hashes).length === 0)) {
      throw new HarnessError(
        `report merge: ${s.file} has a model without file hashes (models[].hashes), so its model cannot be matched`,
        ExitCode.usage,
      );
    }
  }
  const [first, ...rest] = shards;
  const want = new Map(identity(first));
  for (const s of rest) {
    for (const [field, value] of identity(s)) {
      if (want.get(field) !== value) {
        throw new HarnessError(
          `report merge: ${first.file} and ${s.file} differ in ${field} (${short(want.get(field))} vs ${short(value)})`,
          ExitCode.usage,
        );
      }
    }
  }
  const byLabel = new Map<string, { file: string; hashes: Readonly<Record<string, string>> }>();
  for (const s of shards) {
    for (const m of s.report.models) {
      const seen = byLabel.get(m.label);
      if (!seen) {
        byLabel.set(m.label, { file: s.file, hashes: m.hashes });
        continue;
      }
      const keys = new Set([...Object.keys(seen.hashes), ...Object.keys(m.hashes)]);
      for (const k of [...keys].sort()) {
        if (seen.hashes[k] !== m.hashes[k]) {
          throw new HarnessError(
            `report merge: ${seen.file} and ${s.file} differ in models[${JSON.stringify(oneLine(m.label, 40))}].hashes[${JSON.stringify(oneLine(k, 60))}] (${short(seen.hashes[k] ?? "absent")} vs ${short(m.hashes[k] ?? "absent")}): not the same model`,
            ExitCode.usage,
          );
        }
      }
    }
  }
}

export function mergeReports(shards: readonly Shard[]): Report {
  if (shards.length === 0) throw new HarnessError("report merge: no input reports", ExitCode.usage);
  checkShardsMatch(shards);
  const parts = shards.map((s) => s.report);
  const [first] = parts;
  const seen = new Map<string, string>();
  const results: CaseResult[] = [];
  for (const s of shards) {
    for (const r of s.report.results) {
      const key = `${r.model}\u0000${r.id}`;
      const other = seen.get(key);
      if (other !== undefined) {
        throw new HarnessError(
          `report merge: case ${JSON.stringify(oneLine(r.id, 80))} (${oneLine(r.model, 40)}) appears in both ${other} and ${s.file}`,
          ExitCode.usage,
        );
      }
      seen.set(key, s.file);
      results.push(r);
    }
  }
  results.sort((a, b) => (a.model + a.id < b.model + b.id ? -1 : 1));
  const models = [...new Map(parts.flatMap((p) => p.models).map((m) => [m.label, m])).values()];
  const started = parts.map((p) => p.run.started).sort()[0];
  const finished = parts
    .map((p) => p.run.finished)
    .sort()
    .slice(-1)[0];
  const localize = mergeLocalize(
    shards,
    models.map((m) => m.label),
  );
  return {
    ...first,
    run: {
      ...first.run,
      started,
      finished,
      durationMs: parts.reduce((s, p) => s + p.run.durationMs, 0),
      shard: undefined,
      // summed like the duration; absent when a shard did not record it
      ort: parts.every((p) => p.run.ort)
        ? {
            createMs: parts.reduce((s, p) => s + p.run.ort!.createMs, 0),
            runMs: parts.reduce((s, p) => s + p.run.ort!.runMs, 0),
            runs: parts.reduce((s, p) => s + p.run.ort!.runs, 0),
          }
        : undefined,
    },
    models,
    results,
    summary: summarize(results),
    coverage: mergeCoverage(parts.map((p) => p.coverage)),
    baseline: first.baseline ? { ...first.baseline, regressions: results.filter((r) => r.regression?.flagged).length } : undefined,
    localize,
    // every shard's, once each (shards on one machine say the same thing)
    warnings: parts.some((p) => p.warnings) ? [...new Set(parts.flatMap((p) => p.warnings ?? []))] : undefined,
  };
}
