/**
 * After a failing run the CLI names known causes it can see in the graph (src/conformance/advice.ts):
 * GroupNorm exported as InstanceNormalization, for the components a failing stage runs.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { adviceFor, exportedGroupNorms } from "../src/conformance/advice";
import { Report, Status } from "../src/conformance/types";
import { TINY, WIDE } from "./helpers/fixtures";
import { tempDir } from "./helpers/tmp";

function reportWith(dir: string, results: [string, string, Status][]): Report {
  return {
    models: [{ label: "m", dir, hashes: {} }],
    results: results.map(([id, stage, status]) => ({
      id,
      stage,
      model: "m",
      status,
      metrics: {},
      checks: [],
      tolerance: { profile: "fp32", source: "test" },
      timeMs: 0,
    })),
  } as unknown as Report;
}

describe("advice after a failing run", () => {
  const tmp = tempDir("sd-harness-advice-");

  // the counts are onnx's (Python) for the same pattern, which scripts/optimize.py rewrites
  test.each([
    ["our export", TINY, [61, 30, 22]],
    ["optimum's export", WIDE, [30, 18, 12]],
  ] as const)("counts the exporters' GroupNorms in %s", (_name, dir, [unet, decoder, encoder]) => {
    expect(exportedGroupNorms(path.join(dir, "unet", "model.onnx"))).toBe(unet);
    expect(exportedGroupNorms(path.join(dir, "vae_decoder", "model.onnx"))).toBe(decoder);
    expect(exportedGroupNorms(path.join(dir, "vae_encoder", "model.onnx"))).toBe(encoder);
    expect(exportedGroupNorms(path.join(dir, "text_encoder", "model.onnx"))).toBe(0);
  });

  test("names the components of the failing stages only", () => {
    const lines = adviceFor(
      reportWith(TINY, [
        ["vae_roundtrip:64x64", "vae_roundtrip", "fail"],
        ["unet:x", "unet", "pass"],
        ["text_encoder:a", "text_encoder", "fail"],
      ]),
    );
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^m: vae_decoder has 30 GroupNorms exported as InstanceNormalization.*scripts\/optimize\.py/);
    expect(lines[1]).toMatch(/^m: vae_encoder has 22 GroupNorms/);
  });

  test("says nothing when all pass, when the graph has none, or when the file cannot be read", () => {
    expect(adviceFor(reportWith(TINY, [["vae_decode:64x64", "vae_decode", "pass"]]))).toEqual([]);
    // a folder whose U-Net graph has no InstanceNormalization (the text encoder's graph stands in)
    const dir = tmp();
    fs.mkdirSync(path.join(dir, "unet"));
    fs.copyFileSync(path.join(TINY, "text_encoder", "model.onnx"), path.join(dir, "unet", "model.onnx"));
    expect(adviceFor(reportWith(dir, [["unet:x", "unet", "fail"]]))).toEqual([]);
    // vae files absent / not protobuf
    fs.mkdirSync(path.join(dir, "vae_decoder"));
    fs.writeFileSync(path.join(dir, "vae_decoder", "model.onnx"), "\xff\xff\xff not a model");
    expect(adviceFor(reportWith(dir, [["vae_roundtrip:x", "vae_roundtrip", "fail"]]))).toEqual([]);
  });
});
