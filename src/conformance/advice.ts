/**
 * Known causes of drift the suite can name from a model's graph, said after a run in which a case of
 * the affected component failed. One cause so far, measured at SD 1.5 size (bench/RESULTS.md, "Conformance at
 * SD 1.5 size"):
 *
 * GroupNorm exported as Reshape -> InstanceNormalization -> Reshape (torch.onnx up to opset 17, and
 * so optimum) runs in onnxruntime's InstanceNormalization kernel, which sums each group of
 * C/G x H x W values in one float32 pass. In the SD 1.5 VAE at 512 x 512 a group holds up to a
 * million values, and the VAE lands 4-9 times further from float64 than PyTorch's float32 does
 * (vae_roundtrip fails); scripts/optimize.py's groupnorm pass (two-level sums) brings it to 1.05.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { readGraph } from "../onnx/graph-outputs";
import { isFailing, Report } from "./types";
import { defOfResult } from "./stages/index";

/** InstanceNormalization nodes fed by a Reshape: the exporters' GroupNorm. */
export function exportedGroupNorms(modelFile: string): number {
  const graph = readGraph(fs.readFileSync(modelFile), modelFile);
  const producer = new Map<string, string>();
  for (const n of graph.nodes) for (const o of n.outputs) producer.set(o, n.opType);
  return graph.nodes.filter((n) => n.opType === "InstanceNormalization" && producer.get(n.inputs[0] ?? "") === "Reshape").length;
}

/** One line per model and component whose failing cases may come from a known cause. */
export function adviceFor(report: Report): string[] {
  const lines: string[] = [];
  for (const model of report.models) {
    const components = new Set<string>();
    for (const r of report.results) {
      // an error measured no drift (a port that could not write, a missing file): no precision advice for it
      if (r.model === model.label && isFailing(r.status) && r.status !== "error")
        for (const c of defOfResult(r)?.components ?? []) components.add(c);
    }
    for (const c of [...components].sort()) {
      const file = path.join(model.dir, c, "model.onnx");
      let count = 0;
      try {
        count = exportedGroupNorms(file);
      } catch {
        continue; // an unreadable graph already failed the run in its own words
      }
      if (count > 0) {
        lines.push(
          `${model.label}: ${c} has ${count} GroupNorm${count === 1 ? "" : "s"} exported as InstanceNormalization, which onnxruntime sums in one float32 pass per group (a million values per group in the SD 1.5 VAE at 512x512: 4-9x PyTorch's float32 drift there); scripts/optimize.py rewrites them as two-level sums`,
        );
      }
    }
  }
  return lines;
}
