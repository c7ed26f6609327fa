/**
 * References made on a GPU: where the bundled model's reference set made on CUDA is committed
 * (fixtures/references/tiny-sd/cuda, `make_references.py --device cuda`), the bundled ONNX export
 * is judged against it on the CPU with the same fp32 profile — PyTorch's CUDA float32 against the
 * CPU float64 run is then the floor. Where no GPU was ever lent to make it, the test says so and
 * skips: nothing else depends on it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { runConformance } from "../src/conformance/runner";
import { ROOT, TINY } from "./helpers/fixtures";

const CUDA_REFS = path.join(ROOT, "fixtures", "references", "tiny-sd", "cuda");

if (!fs.existsSync(path.join(CUDA_REFS, "manifest.json"))) {
  test.skip("no CUDA reference set (fixtures/references/tiny-sd/cuda): no GPU has been lent to make one; make_references.py --device cuda writes it", () => {});
} else {
  test("the bundled export passes the fp32 profile against PyTorch's CUDA references", async () => {
    const report = await runConformance({
      models: [{ label: "fp32", dir: TINY }],
      references: CUDA_REFS,
      profile: "fp32",
      outDir: null,
      threads: 1,
      only: ["text_encoder:*", "unet:*-step00", "vae_*", "end_to_end:txt2img-*"],
    });
    expect(report.references.device).toBe("cuda");
    const failing = report.results
      .filter((r) => r.status !== "pass" && r.status !== "skip")
      .map((r) => `${r.id}: ${r.status} ${r.message ?? ""}`);
    expect(failing).toEqual([]);
  }, 600_000);
}
