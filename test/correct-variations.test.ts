/**
 * Correct variations of the bundled fp32 export must pass the fp32 profile: they compute the same
 * function, so the suite must not cry wolf about them. Each is judged on a subset that reaches
 * every model stage (the inpainting cases need an inpainting U-Net these folders do not have), and
 * its worst excess per stage is printed (recorded in conformance/README.md):
 *
 *  (a) onnxruntime with 1 and with 2 intra-op threads;
 *  (b) onnxruntime's graph optimizations off ("disabled"), and its optimizations ("extended",
 *      "all") written to disk by onnxruntime-node (sessionOptions.optimizedModelFilePath), that
 *      folder then judged with the pipeline's own optimizations off, so the graph on disk is what runs.
 *
 * The Python-made variations (transformer optimizer, other opsets) are in
 * correct-variations-python.test.ts.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as ort from "../src/runtime/ort";
import { PipelineFactory } from "../src/conformance/runner";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline";
import { TINY, REFS } from "./helpers/fixtures";
import { expectConforms } from "./helpers/variations";

const PARTS = ["text_encoder", "unet", "vae_encoder", "vae_decoder"];

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sd-variations-"));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A folder whose component models `write` makes from the export's; everything else links to the export's files. */
async function folderWith(name: string, write: (src: string, dst: string) => Promise<void>): Promise<string> {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const e of fs.readdirSync(TINY)) if (!PARTS.includes(e)) fs.symlinkSync(fs.realpathSync(path.join(TINY, e)), path.join(dir, e));
  for (const part of PARTS) {
    fs.mkdirSync(path.join(dir, part));
    for (const f of fs.readdirSync(path.join(TINY, part))) {
      if (f !== "model.onnx") fs.symlinkSync(fs.realpathSync(path.join(TINY, part, f)), path.join(dir, part, f));
    }
    await write(path.join(TINY, part, "model.onnx"), path.join(dir, part, "model.onnx"));
  }
  return dir;
}

describe("correct variations pass the fp32 profile", () => {
  test("(a) onnxruntime with 1 and with 2 intra-op threads", async () => {
    await expectConforms({ label: "threads-1", dir: TINY, references: REFS, threads: 1 });
    await expectConforms({ label: "threads-2", dir: TINY, references: REFS, threads: 2 });
  }, 600_000);

  // sessions with onnxruntime's graph optimizations off: the graph runs as it is in the file
  const unoptimized: PipelineFactory = (dir, options) =>
    StableDiffusionPipeline.load(dir, { ...options, graphOptimizationLevel: "disabled" });

  test("(b) onnxruntime's graph optimizations off", async () => {
    await expectConforms({ label: "ort-disabled", dir: TINY, references: REFS, pipelineFactory: unoptimized });
  }, 600_000);

  test.each([["extended"], ["all"]] as const)(
    "(b) onnxruntime's graph optimizations (%s) written to disk, run as written",
    async (level) => {
      const dir = await folderWith(`ort-${level}`, async (src, dst) => {
        const s = await ort.InferenceSession.create(src, {
          graphOptimizationLevel: level,
          optimizedModelFilePath: dst,
          executionProviders: ["cpu"],
        });
        await s.release();
        expect(fs.statSync(dst).size).toBeGreaterThan(0);
        // it is another graph, not a copy
        expect(fs.readFileSync(dst).equals(fs.readFileSync(src))).toBe(false);
      });
      await expectConforms({ label: `ort-${level}`, dir, references: REFS, pipelineFactory: unoptimized });
    },
    600_000,
  );
});
