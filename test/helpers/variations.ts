/**
 * Judging a correct variation of an export: conformance on a subset that reaches every model stage
 * under the fp32 profile; every case must pass, and the worst excess (drift in units of PyTorch's
 * own float32 error) per model stage is returned and printed for conformance/README.md.
 */
import { runConformance, PipelineFactory } from "../../src/conformance/runner";
import { Report } from "../../src/conformance/types";
import { describeCase } from "./fault-matrix";

/** The bundled set: every model stage (and the tokenizer, rng and scheduler stages, which no variation can change). */
export const VARIATION_CASES = [
  "tokenizer:corpus",
  "rng:seed42-1x4x8x8",
  "scheduler:pndm-leading-eps-10",
  "text_encoder:*",
  "unet:txt2img-pndm-64x64-step00",
  "unet:txt2img-pndm-64x64-step09",
  "unet:txt2img-euler-128x64-negative-step03",
  "unet:txt2img-pndm-64x64-free",
  "unet:img2img-euler-strength0.75-128x64-free",
  "vae_encode:*",
  "vae_decode:*",
  "vae_roundtrip:*",
  "end_to_end:txt2img-pndm-64x64",
  "end_to_end:txt2img-pndm-clipskip1",
  "end_to_end:txt2img-euler-128x64-negative",
  "end_to_end:img2img-euler-strength0.75-128x64",
];

export const MODEL_STAGES = ["text_encoder", "unet", "unet_free", "vae_encode", "vae_decode", "vae_roundtrip", "end_to_end"];

const stageKey = (id: string, stage: string) => (stage === "unet" && id.endsWith("-free") ? "unet_free" : stage);

/** The worst excess per model stage over the cases run. */
export function worstExcess(report: Report, model: string): Record<string, number> {
  const worst: Record<string, number> = {};
  for (const r of report.results) {
    if (r.model !== model || r.status === "skip") continue;
    const key = stageKey(r.id, r.stage);
    for (const m of Object.values(r.metrics)) if (m.excess !== undefined) worst[key] = Math.max(worst[key] ?? 0, m.excess);
  }
  return worst;
}

export interface Judged {
  readonly label: string;
  readonly dir: string;
  readonly references: string;
  readonly only?: readonly string[];
  readonly threads?: number;
  readonly pipelineFactory?: PipelineFactory;
}

/** Judge a folder: every case passes and every model stage was reached with a float64 floor. */
export async function expectConforms(j: Judged): Promise<Record<string, number>> {
  const report = await runConformance({
    models: [{ label: j.label, dir: j.dir }],
    references: j.references,
    profile: "fp32",
    only: j.only ?? VARIATION_CASES,
    outDir: null,
    threads: j.threads ?? 1,
    pipelineFactory: j.pipelineFactory,
  });
  const results = report.results.filter((r) => r.model === j.label && r.status !== "skip");
  const worst = worstExcess(report, j.label);
  const shown = Object.fromEntries(
    Object.entries(worst)
      .sort()
      .map(([k, v]) => [k, Number(v.toPrecision(3))]),
  );
  console.log(`${j.label}: ${results.length} cases, worst excess per stage ${JSON.stringify(shown)}`);
  expect(results.filter((r) => r.status !== "pass").map(describeCase)).toEqual([]);
  expect(Object.keys(worst).sort()).toEqual([...MODEL_STAGES].sort());
  return worst;
}
