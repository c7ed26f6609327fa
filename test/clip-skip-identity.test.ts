/**
 * Clip skip on a text encoder whose final LayerNorm parameters are not initializers of their own:
 * torch.onnx stores parameters of identical values once and names the others through Identity
 * nodes, which is what an export of a freshly initialised model looks like (its LayerNorms are all
 * ones and zeros). The bundled text encoder is rewritten that way (by Python's onnx package, so the
 * test is Python-gated like the other Python-made variations; CI skips it with a notice) and must
 * give the same clip-skip embeddings, bit for bit.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { StableDiffusionPipeline } from "../src/pipeline/pipeline";
import { ROOT, TINY } from "./helpers/fixtures";
import { tempDir } from "./helpers/tmp";

const PYTHON = path.join(ROOT, ".venv", "bin", "python");

/** Renames the final LayerNorm's initializers and names them again through two Identity nodes. */
const ALIAS = `
import sys, onnx
from onnx import helper
m = onnx.load(sys.argv[1])
g = m.graph
aliases = []
for init in g.initializer:
    if init.name.endswith("final_layer_norm.weight") or init.name.endswith("final_layer_norm.bias"):
        shared = f"shared_{len(aliases)}"  # as a weight of identical values elsewhere would be named
        aliases.append(helper.make_node("Identity", [shared], [init.name]))
        init.name = shared
assert len(aliases) == 2, aliases
g.node.insert(0, aliases[0]); g.node.insert(0, aliases[1])
onnx.checker.check_model(m)
onnx.save(m, sys.argv[1])
`;

describe("clip skip through Identity-named final LayerNorm parameters", () => {
  if (!fs.existsSync(PYTHON)) {
    beforeAll(() => console.log(`clip-skip-identity: ${PYTHON} not found (scripts/setup.sh makes it); not judged`));
    test.skip("clip-skip-identity: no .venv/bin/python; skipped", () => {});
    return;
  }
  const tmp = tempDir("sd-harness-clip-identity-");

  test("gives the same embeddings as the export with the parameters as initializers", async () => {
    const copy = path.join(tmp(), "model");
    fs.cpSync(TINY, copy, { recursive: true, dereference: true });
    execFileSync(PYTHON, ["-c", ALIAS, path.join(copy, "text_encoder", "model.onnx")], { stdio: "pipe" });
    const ids = [Int32Array.from([49406, 320, 1125, 49407, ...new Array<number>(73).fill(49407)])];
    const embed = async (dir: string) => {
      const pipe = await StableDiffusionPipeline.load(dir, { threads: 1 });
      try {
        return await pipe.encodeIds(ids, 1);
      } finally {
        await pipe.release();
      }
    };
    const want = await embed(TINY);
    const got = await embed(copy);
    expect(got.dims).toEqual(want.dims);
    expect(Buffer.from(got.data.buffer).equals(Buffer.from(want.data.buffer))).toBe(true);
  });
});
