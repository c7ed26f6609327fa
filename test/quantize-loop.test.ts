/**
 * The quantization loop (scripts/quantize.py, conformance/README.md "Closing the loop by kind"):
 *
 * 1. --exclude-from reads a `conformance --localize` report and keeps exactly the --exclude-top N
 *    modules it ranks as the largest drift introducers in float: their nodes stay float ops (a
 *    Gemm module too: ORT renames it `<name>_MatMul` before it reads nodes_to_exclude), every
 *    other Conv / MatMul is quantized.
 * 2. The loop's last step (--components unet --exclude-op-types Conv --exclude-modules '*.ff,*.attn2')
 *    gives a U-Net whose only int8 ops are the self-attention projections and the time-path
 *    linears, and which passes the fp16 profile on the teacher-forced and free-running U-Net cases
 *    of one run.
 *
 * These run scripts/quantize.py, so they need the project's Python (.venv, scripts/setup.sh). CI
 * has no Python: there the tests are skipped with a notice, never failed.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { readGraph } from "../src/onnx/graph-outputs";
import { cli } from "./helpers/cli";

const ROOT = path.resolve(__dirname, "..");
const PYTHON = path.join(ROOT, ".venv", "bin", "python");
const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");
const HAS_PYTHON = fs.existsSync(PYTHON);
const describePy = HAS_PYTHON ? describe : describe.skip;
if (!HAS_PYTHON) {
  console.warn(`test/quantize-loop.test.ts: skipped: no ${PYTHON} (scripts/setup.sh makes it; CI has no Python)`);
}

/** Runs scripts/quantize.py; a failure throws with the script's log (stderr). */
function quantize(args: string[]): void {
  try {
    execFileSync(PYTHON, [path.join(ROOT, "scripts", "quantize.py"), ...args], {
      cwd: ROOT,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ORT_DISABLE_TELEMETRY: "1" },
    });
  } catch (e) {
    throw new Error(`quantize.py failed: ${(e as { stderr?: string }).stderr ?? String(e)}`);
  }
}

function ops(file: string) {
  return readGraph(fs.readFileSync(file), file).nodes;
}

/** A report.json with just the localize section quantize.py reads: one U-Net call whose leaves
 * introduce the given drift ratios (and one block, which is not a leaf and must be ignored). */
function localizeReport(introduced: Record<string, number>): unknown {
  const modules = [
    { module: "down_blocks.1", introduced: 1e6 },
    ...Object.entries(introduced).map(([module, x]) => ({ module, introduced: x })),
  ];
  return { localize: { calls: [{ model: "int8", component: "unet", call: "unet:x-step00", modules }] } };
}

describePy("quantize.py --exclude-from (a localize report's worst introducers kept in float)", () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sd-harness-qloop-"));
  });
  afterAll(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("keeps exactly the top N leaf modules of the report in float", () => {
    const report = path.join(tmp, "report.json");
    fs.writeFileSync(
      report,
      JSON.stringify(
        localizeReport({
          "down_blocks.1.resnets.0.conv1": 50, // 1st
          "time_embedding.linear_1": 40, // 2nd: a Gemm
          "down_blocks.1.resnets.0.conv2": 30, // 3rd: not kept with --exclude-top 2
          "up_blocks.3.resnets.2.conv1": 1.01,
        }),
      ),
    );
    const dst = path.join(tmp, "out");
    quantize([TINY, dst, "--mode", "int8-dynamic", "--components", "unet", "--exclude-from", report, "--exclude-top", "2", "--no-verify"]);
    const nodes = ops(path.join(dst, "unet", "model.onnx"));
    // a node's module, as quantize.py reads it: `/model/down_blocks.1/resnets.0/conv1/Conv` -> `down_blocks.1.resnets.0.conv1`
    const moduleOf = (name: string) =>
      name
        .split("/")
        .slice(1, -1)
        .join(".")
        .replace(/^model\./, "");
    const inScope = (m: string) => nodes.filter((n) => n.name.startsWith("/") && (moduleOf(n.name) + ".").startsWith(m + "."));
    const kept = ["down_blocks.1.resnets.0.conv1", "time_embedding.linear_1"];
    for (const m of kept) {
      const own = inScope(m);
      expect(own.length).toBeGreaterThan(0);
      expect(own.filter((n) => /Integer$|QuantizeLinear$/.test(n.opType)).map((n) => n.opType)).toEqual([]);
      expect(own.some((n) => n.opType === "Conv" || n.opType === "MatMul")).toBe(true);
    }
    for (const m of ["down_blocks.1.resnets.0.conv2", "up_blocks.3.resnets.2.conv1", "time_embedding.linear_2"]) {
      expect(inScope(m).some((n) => n.opType === "ConvInteger" || n.opType === "MatMulInteger")).toBe(true);
    }
    // everything else quantized as without the flag: the float Convs are exactly the kept one
    expect(nodes.filter((n) => n.opType === "Conv").map((n) => n.name)).toEqual(["/model/down_blocks.1/resnets.0/conv1/Conv"]);
    // the text encoder and VAE were not converted (--components unet): links to SRC
    expect(fs.lstatSync(path.join(dst, "text_encoder")).isSymbolicLink()).toBe(true);
  });

  it("refuses a report without a localize section", () => {
    const report = path.join(tmp, "plain.json");
    fs.writeFileSync(report, JSON.stringify({ results: [] }));
    expect(() => quantize([TINY, path.join(tmp, "x"), "--mode", "int8-dynamic", "--exclude-from", report])).toThrow(/no localize section/);
  });
});

describePy("the loop's last step passes the fp16 profile", () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sd-harness-qloop-"));
  });
  afterAll(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("int8 self-attention and time-path linears, the rest float: U-Net cases pass at --profile fp16", async () => {
    const dst = path.join(tmp, "mixed");
    quantize([
      TINY,
      dst,
      "--mode",
      "int8-dynamic",
      "--compact-names",
      "--components",
      "unet",
      "--exclude-op-types",
      "Conv",
      "--exclude-modules",
      "*.ff,*.attn2",
    ]);
    const nodes = ops(path.join(dst, "unet", "model.onnx"));
    const count = (t: string) => nodes.filter((n) => n.opType === t).length;
    // 16 transformer blocks x 4 attn1 projections + 24 time-path Gemms (2 time_embedding, 22 time_emb_proj)
    expect(count("MatMulInteger")).toBe(16 * 4 + 24);
    expect(count("ConvInteger")).toBe(0);
    expect(count("Conv")).toBe(97);

    const out = path.join(tmp, "report");
    const run = await cli([
      "conformance",
      "--model",
      `${dst}=mixed`,
      "--profile",
      "fp16",
      "--threads",
      "1",
      "--quiet",
      "--only",
      "unet:txt2img-pndm-64x64-*",
      "--out",
      out,
    ]);
    expect(run.err).not.toMatch(/internal error/);
    expect(run.code).toBe(0);
    const report = JSON.parse(fs.readFileSync(path.join(out, "report.json"), "utf8")) as { results: { id: string; status: string }[] };
    const ids = report.results.map((r) => r.id);
    expect(ids).toContain("unet:txt2img-pndm-64x64-free");
    expect(ids.filter((id) => id.includes("-step")).length).toBe(11);
    expect(report.results.filter((r) => r.status !== "pass")).toEqual([]);
  });
});
