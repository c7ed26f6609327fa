/**
 * What a run exercised and what it did not: stages, schedulers, tasks (txt2img / img2img /
 * inpaint), sizes and precisions, and for every gap the reason. A reference set made without an
 * inpainting model, a model without hidden-state outputs, an --only filter: each leaves part of the
 * port unchecked, and a report that says PASS must also say what that PASS does not cover.
 */
import { ReferenceSet } from "./reference-set";
import { CaseDef } from "./cases";
import { CaseResult, Coverage, CoverageGap } from "../types";

export type { Coverage, CoverageGap } from "../types";
import { SCHEDULERS } from "../../schedulers";
import { CoverageFacts, REPORTED_STAGES, stageDef } from "../stages/index";

const TASKS = ["txt2img", "img2img", "inpaint"] as const;
/** The diffusers classes sd-harness implements, in the scheduler registry's order. */
export const SCHEDULER_CLASSES: readonly string[] = [...new Set(SCHEDULERS.map((d) => d.className))];

type Meta = Record<string, unknown>;

function metaOf(refs: ReferenceSet, id: string): Meta {
  return (refs.has(id) ? (refs.get(id).meta as Meta | undefined) : undefined) ?? {};
}

/** What a case adds to coverage when judged, as its stage says (src/conformance/stages). */
function factsOf(refs: ReferenceSet, c: CaseDef): CoverageFacts {
  return stageDef(c.kind).coverage?.(metaOf(refs, c.refId)) ?? {};
}

export function computeCoverage(
  refs: ReferenceSet,
  all: readonly CaseDef[],
  selected: readonly CaseDef[],
  results: readonly CaseResult[],
  precisions: Readonly<Record<string, string>>,
  profile: string,
): Coverage {
  const judged = results.filter((r) => r.status !== "skip" && r.status !== "error");
  const judgedIds = new Set(judged.map((r) => r.id));
  const defById = new Map(all.map((c) => [c.id, c]));
  const gaps: CoverageGap[] = [];

  const stages: Record<string, { inSet: number; selected: number; judged: number }> = {};
  for (const stage of REPORTED_STAGES) {
    const inSet = all.filter((c) => c.stage === stage).length;
    const sel = selected.filter((c) => c.stage === stage).length;
    const ok = new Set(judged.filter((r) => r.stage === stage).map((r) => r.id)).size;
    stages[stage] = { inSet, selected: sel, judged: ok };
    if (inSet === 0) gaps.push({ what: `stage ${stage}`, why: "the reference set has no cases for it" });
    else if (sel === 0) gaps.push({ what: `stage ${stage}`, why: `all ${inSet} cases left out by --only / --skip / --shard` });
    else if (ok === 0) {
      const r = results.find((x) => x.stage === stage && (x.status === "skip" || x.status === "error"));
      gaps.push({ what: `stage ${stage}`, why: r?.message ? `no case judged: ${r.message}` : "no case judged" });
    }
  }

  // schedulers: a trace's class, or an end-to-end run's scheduler_class
  const schedulers = new Set<string>();
  for (const id of judgedIds) {
    const def = defById.get(id);
    if (!def) continue;
    const cls = factsOf(refs, def).scheduler;
    if (cls !== undefined) schedulers.add(cls);
  }
  for (const cls of SCHEDULER_CLASSES) {
    if (schedulers.has(cls)) continue;
    const inSet = all.some((c) => factsOf(refs, c).scheduler === cls);
    gaps.push({
      what: `scheduler ${cls}`,
      why: inSet ? "its cases were left out or skipped in this run" : "the reference set has no trace or run for it",
    });
  }

  // tasks: end-to-end runs judged per kind
  const tasks: Record<string, number> = {};
  for (const task of TASKS) {
    const defs = all.filter((c) => factsOf(refs, c).task === task);
    const n = defs.filter((c) => judgedIds.has(c.id)).length;
    tasks[task] = n;
    if (n > 0) continue;
    if (defs.length === 0) {
      const hint = task === "inpaint" ? " (make_references.py --inpaint-model)" : "";
      gaps.push({ what: `task ${task}`, why: `the reference set has no end-to-end ${task} run${hint}` });
    } else {
      const r = results.find((x) => defs.some((d) => d.id === x.id) && x.status === "skip");
      gaps.push({
        what: `task ${task}`,
        why: r?.message ?? `its ${defs.length} end-to-end runs were left out by --only / --skip / --shard`,
      });
    }
  }

  const sizes = new Set<string>();
  for (const id of judgedIds) {
    const def = defById.get(id);
    const size = def ? factsOf(refs, def).size : undefined;
    if (size !== undefined) sizes.add(size);
  }

  // parts of cases that could not be compared (a text encoder without hidden states, ...)
  const partial = new Map<string, number>();
  for (const r of results) if (r.uncovered) partial.set(r.uncovered, (partial.get(r.uncovered) ?? 0) + 1);
  for (const [why, n] of partial) gaps.push({ what: `${n} case${n === 1 ? "" : "s"} in part`, why });
  // whole cases skipped for a reason not already named above
  const skipped = new Map<string, number>();
  for (const r of results) if (r.status === "skip" && r.message) skipped.set(r.message, (skipped.get(r.message) ?? 0) + 1);
  for (const [why, n] of skipped) {
    if (!gaps.some((g) => g.why === why)) gaps.push({ what: `${n} case${n === 1 ? "" : "s"} skipped`, why });
  }

  const bySize = (a: string, b: string) => {
    const [aw, ah] = a.split("x").map(Number);
    const [bw, bh] = b.split("x").map(Number);
    return aw * ah - bw * bh || aw - bw;
  };
  return { stages, schedulers: [...schedulers].sort(), tasks, sizes: [...sizes].sort(bySize), precisions, profile, gaps };
}

/** Coverage of shards joined by `report merge`: counts add up, sets join, and a gap stays only where no shard closed it. */
export function mergeCoverage(parts: readonly (Coverage | undefined)[]): Coverage | undefined {
  const cs = parts.filter((c): c is Coverage => c !== undefined);
  if (cs.length === 0 || cs.length !== parts.length) return undefined;
  const stages: Record<string, { inSet: number; selected: number; judged: number }> = {};
  const tasks: Record<string, number> = {};
  for (const c of cs) {
    for (const [k, v] of Object.entries(c.stages)) {
      const s = (stages[k] ??= { inSet: v.inSet, selected: 0, judged: 0 });
      s.selected += v.selected;
      s.judged += v.judged;
    }
    for (const [k, v] of Object.entries(c.tasks)) tasks[k] = (tasks[k] ?? 0) + v;
  }
  const schedulers = [...new Set(cs.flatMap((c) => c.schedulers))].sort();
  const sizes = [...new Set(cs.flatMap((c) => c.sizes))];
  const precisions = Object.assign({}, ...cs.map((c) => c.precisions)) as Record<string, string>;
  const seen = new Set<string>();
  const gaps: CoverageGap[] = [];
  for (const g of cs.flatMap((c) => c.gaps)) {
    const key = `${g.what}\u0000${g.why}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const [kind, name] = g.what.split(" ", 2);
    if (kind === "stage" && (stages[name]?.judged ?? 0) > 0) continue;
    if (kind === "scheduler" && schedulers.includes(name)) continue;
    if (kind === "task" && (tasks[name] ?? 0) > 0) continue;
    if (/left out by --only \/ --skip \/ --shard/.test(g.why) && kind === "stage" && (stages[name]?.selected ?? 0) > 0) continue;
    gaps.push(g);
  }
  return { stages, schedulers, tasks, sizes, precisions, profile: cs[0].profile, gaps };
}

/** Short lines for the terminal and summary.md. */
export function coverageLines(c: Coverage): string[] {
  const judgedStages = Object.entries(c.stages)
    .filter(([, v]) => v.judged > 0)
    .map(([k]) => k);
  const lines = [
    `stages judged: ${judgedStages.join(", ") || "none"}`,
    `schedulers: ${c.schedulers.length ? c.schedulers.join(", ") : "none"}`,
    `tasks (end-to-end runs): ${Object.entries(c.tasks)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ")}`,
    `sizes: ${c.sizes.join(", ") || "none"}`,
    `precisions: ${Object.entries(c.precisions)
      .map(([k, v]) => `${k} (U-Net ${v})`)
      .join(", ")}, profile ${c.profile}`,
  ];
  return lines;
}
