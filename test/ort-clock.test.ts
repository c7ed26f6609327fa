/**
 * The report states the run's time inside onnxruntime (sessions created, calls run), so the
 * harness's own overhead is a measured figure; a report whose ort section is not numbers is refused.
 */
import { runConformance } from "../src/conformance/runner";
import { harnessOverhead } from "../src/conformance/types";
import { parseReportJson } from "../src/conformance/runner";
import { readReportFile } from "../src/conformance/report/report-file";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { TINY, REFS } from "./helpers/fixtures";

test("a run records its onnxruntime time; the overhead is the rest of its wall time", async () => {
  const report = await runConformance({
    models: [{ label: "m", dir: TINY }],
    references: REFS,
    profile: "fp32",
    only: ["vae_decode:64x64", "unet:txt2img-pndm-64x64-step00"],
    outDir: null,
    threads: 1,
  });
  const ort = report.run.ort!;
  // two sessions at least (VAE decoder, U-Net; the text encoder is created with them), one call each
  expect(ort.runs).toBeGreaterThanOrEqual(2);
  expect(ort.createMs).toBeGreaterThan(0);
  expect(ort.runMs).toBeGreaterThan(0);
  expect(ort.createMs + ort.runMs).toBeLessThanOrEqual(report.run.durationMs + 1);
  const overhead = harnessOverhead(report.run)!;
  expect(overhead).toBeGreaterThanOrEqual(0);
  expect(overhead).toBeLessThan(1);
  // a second run counts only its own calls
  const again = await runConformance({
    models: [{ label: "m", dir: TINY }],
    references: REFS,
    profile: "fp32",
    only: ["vae_decode:64x64"],
    outDir: null,
    threads: 1,
  });
  expect(again.run.ort!.runs).toBeLessThan(ort.runs);
}, 120_000);

test("report.json's run.ort is checked like every other field the writers read", async () => {
  const report = await runConformance({
    models: [{ label: "m", dir: TINY }],
    references: REFS,
    profile: "fp32",
    only: ["vae_decode:64x64"],
    outDir: null,
    threads: 1,
  });
  const text = JSON.stringify(report);
  expect(parseReportJson(text).run.ort).toEqual(report.run.ort);
  const bad = JSON.parse(text);
  bad.run.ort.runMs = "12";
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "sdh-ort-")), "report.json");
  fs.writeFileSync(file, JSON.stringify(bad));
  expect(() => readReportFile(file)).toThrow(/run\.ort\.runMs/);
  fs.rmSync(path.dirname(file), { recursive: true });
}, 120_000);
