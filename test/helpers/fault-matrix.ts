/**
 * Reading fault runs: which check decided a failed case and by how much (its margin: how far the
 * measured value is past the limit), and the closest a passing case came to a limit. Used by the
 * fault tests to assert "caught by a margin" and to print the figures conformance/README.md records.
 */
import { CaseResult, Check, Report, Status } from "../../src/conformance/types";

/**
 * How far a check's value is from its limit, as a factor: > 1 past it, < 1 within it. Upper bounds:
 * value / limit. Lower bounds: for cosine (1 − value) / (1 − limit); for PSNR-like ones
 * limit / value (dB). A NaN / Inf value counts as infinitely far.
 */
export function margin(c: Check): number {
  if (c.kind === "min" && c.value === Infinity) return 0; // identical: PSNR is infinite
  if (!Number.isFinite(c.value)) return Infinity;
  if (c.kind === "max") return c.limit === 0 ? (c.value === 0 ? 0 : Infinity) : c.value / c.limit;
  if (c.metric === "cosine") return (1 - c.value) / (1 - c.limit);
  return c.value <= 0 ? Infinity : c.limit / c.value;
}

/** The check that decides a case: its largest margin (for a failed case, the failing check furthest past its limit). */
export function deciding(r: CaseResult): { check: Check; margin: number } | null {
  let best: { check: Check; margin: number } | null = null;
  for (const c of r.checks) {
    const m = margin(c);
    if (!best || m > best.margin) best = { check: c, margin: m };
  }
  return best;
}

const num = (v: number) => (Number.isInteger(v) && Math.abs(v) < 1e4 ? String(v) : v.toPrecision(2));

/** "end_to_end:x fail: latents_steps excess 40 / 8 (5.0x)" */
export function describeCase(r: CaseResult): string {
  const d = deciding(r);
  const what = d
    ? `${d.check.tensor} ${d.check.metric} ${num(d.check.value)} / ${num(d.check.limit)} (${d.margin.toPrecision(2)}x)`
    : (r.message ?? "");
  const excess = Math.max(...Object.values(r.metrics).map((m) => m.excess ?? -Infinity));
  const worst = r.status === "pass" && Number.isFinite(excess) ? `; worst excess ${excess.toPrecision(2)}` : "";
  return `${r.id} ${r.status}: ${what}${worst}${r.nonFinite ? ` [${r.message}]` : ""}`;
}

export function resultsOf(report: Report, model: string): CaseResult[] {
  return report.results.filter((x) => x.model === model && x.status !== "skip");
}

export function resultOf(report: Report, model: string, id: string): CaseResult {
  const r = report.results.find((x) => x.model === model && x.id === id);
  if (!r) throw new Error(`no result for ${model} ${id}`);
  if (r.status === "skip") throw new Error(`${model} ${id} was skipped: ${r.message}`);
  return r;
}

/** Status per case id of one model (skips left out). */
export function statusesOf(report: Report, model: string): Record<string, Status> {
  return Object.fromEntries(resultsOf(report, model).map((r) => [r.id, r.status]));
}

/** One line per case of one model, for the log. */
export function describeModel(report: Report, model: string): string {
  return [`${model}:`, ...resultsOf(report, model).map((r) => `  ${describeCase(r)}`)].join("\n");
}

/** One case of every stage (teacher-forced and free-running U-Net; txt2img, img2img, inpaint). */
export const EVERY_STAGE = [
  "tokenizer:corpus",
  "text_encoder:astronaut",
  "rng:seed42-1x4x8x8",
  "rng:seed42-3",
  "scheduler:pndm-leading-eps-10",
  "unet:txt2img-pndm-64x64-step00",
  "unet:txt2img-pndm-64x64-step05",
  "unet:inpaint-pndm-64x64-step00",
  "unet:txt2img-pndm-64x64-free",
  "vae_encode:64x64",
  "vae_decode:64x64",
  "vae_roundtrip:64x64",
  "end_to_end:txt2img-pndm-64x64",
  "end_to_end:img2img-pndm-strength0.6",
  "end_to_end:inpaint-pndm-64x64",
] as const;

/** The cases that need an inpainting model (skipped for a model run without one). */
export const isInpaint = (id: string): boolean => id.includes("inpaint");

/** The expected status of every case of `only`: `fails` fail, the rest pass; without an inpainting model its cases are left out (skipped). */
export function expectedStatuses(only: readonly string[], fails: readonly string[], withInpaint: boolean): Record<string, Status> {
  for (const f of fails) if (!only.includes(f)) throw new Error(`${f} is not among the cases run`);
  return Object.fromEntries(only.filter((id) => withInpaint || !isInpaint(id)).map((id) => [id, fails.includes(id) ? "fail" : "pass"]));
}

/** Every failed case in `fails` failed on a check past its limit (margin > 1), or on a NaN / Inf. */
export function expectCaughtByMargin(report: Report, model: string, fails: readonly string[]): void {
  for (const id of fails) {
    const r = resultOf(report, model, id);
    const caught = !!r.nonFinite || (deciding(r)?.margin ?? 0) > 1;
    expect({ id, caught }).toEqual({ id, caught: true });
  }
}
