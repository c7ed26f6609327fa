/**
 * Reading report.json back (for --baseline and `report merge`) and reading the report's assets.
 *
 * A report.json can come from anywhere (a CI artifact, a colleague's mail), so nothing in it is
 * trusted: every field the writers or the merge read is type-checked here, asset paths must be
 * plain relative paths under assets/, and the asset reader only returns regular files whose real
 * path (symlinks resolved) lies inside the report folder. A bad report is one HarnessError naming
 * the file and the field, never another exception.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { HarnessError, ExitCode, ExitCodeValue, oneLine } from "../../errors";
import { Report, Status } from "../types";
import { metricNames } from "../judge/metric-table";
import { LOCALIZE_COMPONENTS } from "../localize/localize-components";

const REPORT_FORMAT = "sd-harness-report/1";

/** report.json is a few MB even for SD 1.5 with series; a larger file is not one we wrote. */
const MAX_REPORT_BYTES = 256 << 20;
/** one PNG of a triplet; SD 1.5's 512x512 RGB is under 1 MB */
const MAX_ASSET_BYTES = 64 << 20;

const STATUSES: ReadonlySet<string> = new Set<Status>(["pass", "fail", "xfail", "xpass", "error", "skip"]);

/** One path segment of an asset file: what safeFileName produces (no separators, no leading dot). */
const ASSET_SEGMENT = /^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,199}$/;

/**
 * A file or folder name made from an id or label: only [A-Za-z0-9._-], no leading dot (so never
 * "." / ".." / a hidden file), no "..", at most 120 characters. Used for every asset name.
 */
export function safeFileName(text: string): string {
  const s = text
    .replace(/[^A-Za-z0-9._-]+/g, "_")
    .replace(/\.{2,}/g, ".")
    .replace(/^[.]+/, "_")
    .slice(0, 120);
  return s || "_";
}

/**
 * Why `rel` is not an acceptable asset path (relative, POSIX separators, under assets/, every
 * segment a plain name), or null when it is.
 */
function assetPathProblem(rel: string): string | null {
  if (rel.length === 0 || rel.length > 512) return "is empty or too long";
  if (path.isAbsolute(rel) || path.win32.isAbsolute(rel) || rel.startsWith("/")) return "is an absolute path";
  const parts = rel.split("/");
  if (parts.some((p) => p === ".." || p === ".")) return "contains a '..' or '.' segment";
  if (parts[0] !== "assets" || parts.length < 2) return "is not under assets/";
  if (!parts.slice(1).every((p) => ASSET_SEGMENT.test(p))) return "has a segment that is not a plain file name";
  return null;
}

function isInside(root: string, file: string): boolean {
  const r = path.relative(root, file);
  return r !== "" && !r.startsWith("..") && !path.isAbsolute(r);
}

/**
 * The bytes of an asset `rel` under `dir`, or null when it is absent. Throws a HarnessError when
 * the path is not a plain relative asset path, when its real path (after symlinks) leaves `dir`,
 * or when it is not a regular file of a sensible size: a report can never make us read elsewhere.
 */
export function readAssetConfined(dir: string, rel: string, what = rel): Buffer | null {
  const problem = assetPathProblem(rel);
  if (problem) throw new HarnessError(`${what}: asset path ${JSON.stringify(oneLine(rel, 80))} ${problem}`, ExitCode.usage);
  const file = path.join(dir, ...rel.split("/"));
  let real: string;
  let root: string;
  try {
    root = fs.realpathSync(dir);
    real = fs.realpathSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ENOTDIR") return null;
    throw new HarnessError(`${what}: cannot resolve asset ${rel} (${(e as NodeJS.ErrnoException).code})`, ExitCode.usage);
  }
  if (!isInside(root, real)) throw new HarnessError(`${what}: asset ${rel} resolves outside ${dir} (symlink)`, ExitCode.usage);
  const st = fs.statSync(real);
  if (!st.isFile()) throw new HarnessError(`${what}: asset ${rel} is not a regular file`, ExitCode.usage);
  if (st.size > MAX_ASSET_BYTES)
    throw new HarnessError(`${what}: asset ${rel} is ${st.size} bytes, over the ${MAX_ASSET_BYTES}-byte limit`, ExitCode.usage);
  return fs.readFileSync(real);
}

/** The HTML writer's asset reader for a report folder: confined, and a refused path is a missing picture. */
export function confinedAssetReader(dir: string): (rel: string) => Buffer | null {
  return (rel) => {
    try {
      return readAssetConfined(dir, rel);
    } catch (e) {
      if (e instanceof HarnessError) return null;
      throw e;
    }
  };
}

// --- structural validation -------------------------------------------------------------------

class Invalid extends Error {}

type Obj = Record<string, unknown>;

function fail(field: string, problem: string): never {
  throw new Invalid(`${field} ${problem}`);
}

function obj(v: unknown, field: string): Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v)) fail(field, "is missing or not an object");
  return v as Obj;
}

function arr(v: unknown, field: string): unknown[] {
  if (!Array.isArray(v)) fail(field, "is missing or not a list");
  return v;
}

function str(v: unknown, field: string): string {
  if (typeof v !== "string") fail(field, "is missing or not a string");
  return v;
}

function num(v: unknown, field: string): number {
  // report.json writes non-finite numbers as strings; parseReportJson has revived them
  if (typeof v !== "number") fail(field, "is missing or not a number");
  return v;
}

/**
 * A measured value: a number, or null where a tool that rewrote the file turned a non-finite
 * number into JSON's null (JSON.stringify does): read back as NaN, "not known", never a crash.
 */
function metric(o: Obj, k: string, field: string): number {
  if (o[k] === null) o[k] = NaN;
  return num(o[k], `${field}.${k}`);
}

function optional<T>(v: unknown, field: string, check: (v: unknown, field: string) => T): T | undefined {
  return v === undefined ? undefined : check(v, field);
}

function strRecord(v: unknown, field: string): void {
  for (const [k, x] of Object.entries(obj(v, field))) str(x, `${field}[${JSON.stringify(oneLine(k, 40))}]`);
}

/** the metric table's fields, in its order (judge/metric-table.ts) */
const REQUIRED_TENSOR = metricNames("tensor", (d) => !d.optional);
const OPTIONAL_TENSOR = metricNames("tensor", (d) => d.optional === true);
const IMAGE = metricNames("image");

function tensorMetrics(v: unknown, field: string): void {
  const m = obj(v, field);
  for (const k of REQUIRED_TENSOR) metric(m, k, field);
  arr(m.worstIndex, `${field}.worstIndex`).forEach((x, i) => num(x, `${field}.worstIndex[${i}]`));
  // maxUlp (scheduler / rng stages) and the float64 floor's figures (present when the reference set records one)
  for (const k of OPTIONAL_TENSOR) if (m[k] !== undefined) metric(m, k, field);
}

function imageMetrics(v: unknown, field: string): void {
  const m = obj(v, field);
  num(m.width, `${field}.width`);
  num(m.height, `${field}.height`);
  for (const k of IMAGE) metric(m, k, field);
  for (const k of ["refPng", "oursPng", "diffPng"]) {
    const rel = optional(m[k], `${field}.${k}`, str);
    if (rel === undefined) continue;
    const problem = assetPathProblem(rel);
    if (problem) fail(`${field}.${k}`, `${JSON.stringify(oneLine(rel, 80))} ${problem}`);
  }
}

function caseResult(v: unknown, field: string): void {
  const r = obj(v, field);
  str(r.id, `${field}.id`);
  str(r.stage, `${field}.stage`);
  str(r.model, `${field}.model`);
  if (typeof r.status !== "string" || !STATUSES.has(r.status)) fail(`${field}.status`, `is not one of ${[...STATUSES].join(", ")}`);
  optional(r.message, `${field}.message`, str);
  optional(r.uncovered, `${field}.uncovered`, str);
  optional(r.float64Floor, `${field}.float64Floor`, str);
  if (r.amplification !== undefined) metric(r, "amplification", field);
  for (const [k, m] of Object.entries(obj(r.metrics, `${field}.metrics`)))
    tensorMetrics(m, `${field}.metrics[${JSON.stringify(oneLine(k, 40))}]`);
  optional(r.images, `${field}.images`, arr)?.forEach((im, i) => imageMetrics(im, `${field}.images[${i}]`));
  arr(r.checks, `${field}.checks`).forEach((c, i) => {
    const f = `${field}.checks[${i}]`;
    const ch = obj(c, f);
    str(ch.tensor, `${f}.tensor`);
    str(ch.metric, `${f}.metric`);
    metric(ch, "value", f);
    num(ch.limit, `${f}.limit`);
    if (ch.kind !== "max" && ch.kind !== "min") fail(`${f}.kind`, 'is not "max" or "min"');
    if (typeof ch.ok !== "boolean") fail(`${f}.ok`, "is not a boolean");
  });
  optional(r.series, `${field}.series`, arr)?.forEach((s, i) => {
    const f = `${field}.series[${i}]`;
    const o = obj(s, f);
    str(o.name, `${f}.name`);
    str(o.metric, `${f}.metric`);
    const values = arr(o.values, `${f}.values`);
    values.forEach((_, j) => metric(values as unknown as Obj, String(j), `${f}.values`));
  });
  if (r.nonFinite !== undefined) {
    const nf = obj(r.nonFinite, `${field}.nonFinite`);
    str(nf.stage, `${field}.nonFinite.stage`);
    if (nf.step !== null) num(nf.step, `${field}.nonFinite.step`);
    str(nf.what, `${field}.nonFinite.what`);
  }
  const t = obj(r.tolerance, `${field}.tolerance`);
  str(t.profile, `${field}.tolerance.profile`);
  str(t.source, `${field}.tolerance.source`);
  optional(t.reason, `${field}.tolerance.reason`, str);
  num(r.timeMs, `${field}.timeMs`);
  if (r.regression !== undefined) {
    const g = obj(r.regression, `${field}.regression`);
    str(g.metric, `${field}.regression.metric`);
    for (const k of ["before", "after", "factor"]) metric(g, k, `${field}.regression`);
    if (typeof g.flagged !== "boolean") fail(`${field}.regression.flagged`, "is not a boolean");
  }
}

/** The coverage section (optional: reports of older versions have none). */
function coverage(v: unknown, field: string): void {
  const c = obj(v, field);
  for (const [k, s] of Object.entries(obj(c.stages, `${field}.stages`))) {
    const f = `${field}.stages[${JSON.stringify(oneLine(k, 40))}]`;
    const o = obj(s, f);
    for (const n of ["inSet", "selected", "judged"]) num(o[n], `${f}.${n}`);
  }
  arr(c.schedulers, `${field}.schedulers`).forEach((x, i) => str(x, `${field}.schedulers[${i}]`));
  for (const [k, n] of Object.entries(obj(c.tasks, `${field}.tasks`))) num(n, `${field}.tasks[${JSON.stringify(oneLine(k, 40))}]`);
  arr(c.sizes, `${field}.sizes`).forEach((x, i) => str(x, `${field}.sizes[${i}]`));
  strRecord(c.precisions, `${field}.precisions`);
  str(c.profile, `${field}.profile`);
  arr(c.gaps, `${field}.gaps`).forEach((g, i) => {
    const o = obj(g, `${field}.gaps[${i}]`);
    str(o.what, `${field}.gaps[${i}].what`);
    str(o.why, `${field}.gaps[${i}].why`);
  });
}

function bool(v: unknown, field: string): boolean {
  if (typeof v !== "boolean") fail(field, "is not a boolean");
  return v;
}

function oneOf<T extends string>(v: unknown, field: string, values: readonly T[]): T {
  if (typeof v !== "string" || !(values as readonly string[]).includes(v)) fail(field, `is not one of ${values.join(", ")}`);
  return v as T;
}

/** A number or null ("not known": a module whose input drift is unknown). */
function numOrNull(o: Obj, k: string, field: string): void {
  if (o[k] !== null) num(o[k], `${field}.${k}`);
}

/** A model as report.json records it (models[], against). */
function modelInfo(v: unknown, field: string): void {
  const o = obj(v, field);
  str(o.label, `${field}.label`);
  str(o.dir, `${field}.dir`);
  strRecord(o.hashes, `${field}.hashes`);
  optional(o.corrections, `${field}.corrections`, arr)?.forEach((x, j) => str(x, `${field}.corrections[${j}]`));
}

const NAMINGS = ["scope", "parameter", "module"] as const;

function moduleDrift(v: unknown, field: string): void {
  const m = obj(v, field);
  str(m.module, `${field}.module`);
  str(m.class, `${field}.class`);
  for (const k of ["position", "count", "stride", "nonFinite", "limit"]) num(m[k], `${field}.${k}`);
  for (const k of ["relL2", "maxAbs", "cosine"]) metric(m, k, field);
  bool(m.over, `${field}.over`);
  if (m.input !== null) str(m.input, `${field}.input`);
  numOrNull(m, "inputRelL2", field);
  numOrNull(m, "introduced", field);
  oneOf(m.how, `${field}.how`, NAMINGS);
}

/** The --localize section (src/conformance/localize/localize.ts: LocalizeReport). */
function localizeSection(v: unknown, field: string): void {
  const l = obj(v, field);
  const refs = obj(l.references, `${field}.references`);
  for (const k of ["dir", "model", "sha256", "command"]) str(refs[k], `${field}.references.${k}`);
  strRecord(refs.versions, `${field}.references.versions`);
  str(l.profile, `${field}.profile`);
  const limits = obj(l.limits, `${field}.limits`);
  str(limits.file, `${field}.limits.file`);
  for (const [p, x] of Object.entries(obj(limits.profiles, `${field}.limits.profiles`))) {
    const f = `${field}.limits.profiles[${JSON.stringify(oneLine(p, 40))}]`;
    const o = obj(x, f);
    num(o.relL2, `${f}.relL2`);
    str(o.reason, `${f}.reason`);
  }
  arr(limits.overrides, `${field}.limits.overrides`).forEach((x, i) => {
    const f = `${field}.limits.overrides[${i}]`;
    const o = obj(x, f);
    for (const k of ["module", "profile", "reason"]) str(o[k], `${f}.${k}`);
    num(o.relL2, `${f}.relL2`);
  });
  num(l.floor, `${field}.floor`);
  if (l.against !== undefined) {
    const a = obj(l.against, `${field}.against`);
    str(a.label, `${field}.against.label`);
    str(a.dir, `${field}.against.dir`);
  }
  num(l.timeMs, `${field}.timeMs`);
  arr(l.calls, `${field}.calls`).forEach((x, i) => {
    const f = `${field}.calls[${i}]`;
    const c = obj(x, f);
    str(c.model, `${f}.model`);
    oneOf(c.component, `${f}.component`, LOCALIZE_COMPONENTS);
    str(c.call, `${f}.call`);
    num(c.total, `${f}.total`);
    num(c.timeMs, `${f}.timeMs`);
    arr(c.modules, `${f}.modules`).forEach((m, j) => moduleDrift(m, `${f}.modules[${j}]`));
    arr(c.growth, `${f}.growth`).forEach((m, j) => moduleDrift(m, `${f}.growth[${j}]`));
    if (c.first !== null) moduleDrift(c.first, `${f}.first`);
    arr(c.unmapped, `${f}.unmapped`).forEach((u, j) => {
      const o = obj(u, `${f}.unmapped[${j}]`);
      str(o.module, `${f}.unmapped[${j}].module`);
      str(o.why, `${f}.unmapped[${j}].why`);
    });
    oneOf(c.naming, `${f}.naming`, NAMINGS);
    optional(c.error, `${f}.error`, str);
  });
}

/** Checks every field the writers, --baseline and merge read; throws Invalid naming the first bad one. */
function checkReport(v: unknown): Report {
  const r = obj(v, "the top level");
  if (r.format !== REPORT_FORMAT) fail("format", `is not ${JSON.stringify(REPORT_FORMAT)} (not an sd-harness report.json)`);
  arr(r.results, "results");
  const run = obj(r.run, "run");
  str(run.started, "run.started");
  str(run.finished, "run.finished");
  num(run.durationMs, "run.durationMs");
  arr(run.argv, "run.argv").forEach((a, i) => str(a, `run.argv[${i}]`));
  const host = obj(run.host, "run.host");
  for (const k of ["platform", "arch", "cpus"]) str(host[k], `run.host.${k}`);
  num(host.cores, "run.host.cores");
  optional(host.os, "run.host.os", str);
  optional(host.isa, "run.host.isa", arr)?.forEach((x, i) => str(x, `run.host.isa[${i}]`));
  num(run.threads, "run.threads");
  if (run.ort !== undefined) {
    const o = obj(run.ort, "run.ort");
    for (const k of ["createMs", "runMs", "runs"]) num(o[k], `run.ort.${k}`);
  }
  strRecord(run.versions, "run.versions");
  if (run.shard !== undefined) {
    const s = obj(run.shard, "run.shard");
    num(s.index, "run.shard.index");
    num(s.count, "run.shard.count");
  }
  str(r.profile, "profile");
  arr(r.models, "models").forEach((m, i) => modelInfo(m, `models[${i}]`));
  if (r.against !== undefined) modelInfo(r.against, "against");
  const refs = obj(r.references, "references");
  for (const k of ["dir", "model", "device", "deviceName", "command"]) str(refs[k], `references.${k}`);
  strRecord(refs.versions, "references.versions");
  optional(refs.sha256, "references.sha256", str);
  if (refs.machine !== undefined) {
    const m = obj(refs.machine, "references.machine");
    str(m.model, "references.machine.model");
    optional(m.os, "references.machine.os", str);
    optional(m.isa, "references.machine.isa", arr)?.forEach((x, i) => str(x, `references.machine.isa[${i}]`));
    if (m.threads !== undefined) num(m.threads, "references.machine.threads");
  }
  if (r.tolerances !== undefined) {
    const t = obj(r.tolerances, "tolerances");
    str(t.file, "tolerances.file");
    str(t.sha256, "tolerances.sha256");
  }
  arr(r.results, "results").forEach((c, i) => caseResult(c, `results[${i}]`));
  obj(r.summary, "summary");
  if (r.coverage !== undefined) coverage(r.coverage, "coverage");
  if (r.localize !== undefined) localizeSection(r.localize, "localize");
  if (r.warnings !== undefined) arr(r.warnings, "warnings").forEach((w, i) => str(w, `warnings[${i}]`));
  if (r.baseline !== undefined) {
    const b = obj(r.baseline, "baseline");
    str(b.file, "baseline.file");
    num(b.factor, "baseline.factor");
    num(b.regressions, "baseline.regressions");
  }
  return r as unknown as Report;
}

/** report.json stores non-finite numbers (PSNR of identical tensors) as strings; this revives them. */
function revive(text: string): unknown {
  return JSON.parse(text, (_k, v) => (v === "Infinity" ? Infinity : v === "-Infinity" ? -Infinity : v === "NaN" ? NaN : v));
}

/**
 * A report.json's text as a Report, every field checked. `what` names the source in the message
 * (a file, or "--baseline FILE"); problems are HarnessErrors with `exitCode` (usage by default).
 */
export function parseReportText(text: string, what: string, exitCode: ExitCodeValue = ExitCode.usage): Report {
  let data: unknown;
  try {
    data = revive(text);
  } catch (e) {
    throw new HarnessError(`${what}: not valid JSON (${oneLine((e as Error).message, 120)})`, exitCode);
  }
  try {
    return checkReport(data);
  } catch (e) {
    if (e instanceof Invalid) throw new HarnessError(`${what}: not a usable sd-harness report: ${oneLine(e.message, 200)}`, exitCode);
    throw e;
  }
}

/** A report given as report.json or as its folder; `role` prefixes messages (for example "--baseline"). */
export function readReportFile(p: string, role?: string): { report: Report; file: string; dir: string } {
  let file = p;
  try {
    if (fs.statSync(p).isDirectory()) file = path.join(p, "report.json");
  } catch {
    /* reported below as unreadable */
  }
  const what = role ? `${role} ${file}` : file;
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new HarnessError(`${what}: cannot read a report (${(e as NodeJS.ErrnoException).code ?? "unreadable"})`, ExitCode.usage);
  }
  if (!st.isFile()) throw new HarnessError(`${what}: not a regular file`, ExitCode.usage);
  if (st.size > MAX_REPORT_BYTES)
    throw new HarnessError(`${what}: ${st.size} bytes, over the ${MAX_REPORT_BYTES}-byte limit for a report.json`, ExitCode.usage);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new HarnessError(`${what}: cannot read a report (${(e as NodeJS.ErrnoException).code ?? "unreadable"})`, ExitCode.usage);
  }
  return { report: parseReportText(text, what), file, dir: path.dirname(file) };
}
