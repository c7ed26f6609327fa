/**
 * `sd-harness sensitivity` on a small, fast budget: a large perturbation is reported caught (and
 * by the stage it reaches), a tiny one not caught, the user's model folder is untouched and no
 * temporary copy is left behind, and bad flags are one-line errors with exit code 2. The in-place
 * editor is checked on its own too, on embedded and on external-data weights.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { ExitCode } from "../src/errors";
import { runSensitivity, SensitivityReport } from "../src/conformance/sensitivity/sensitivity";
import { describeInitializers, applyEdit, readWeights } from "../src/onnx/initializer-edit";
import { mapInitializers, unmapped } from "../src/conformance/sensitivity/layer-kinds";
import { TINY, REFS } from "./helpers/fixtures";
import { copyModel, externalizeInitializers } from "./helpers/onnx-edit";

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sd-sensitivity-test-"));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** sha256 of every file under dir (symlinks followed), by relative path. */
function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d).sort()) {
      const p = path.join(d, e);
      const st = fs.statSync(p);
      if (st.isDirectory()) walk(p, `${rel}${e}/`);
      else out[`${rel}${e}`] = crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex");
    }
  };
  walk(dir, "");
  return out;
}

function capture(): CliIO & { stdout: () => string; stderr: () => string } {
  let out = "";
  let err = "";
  return {
    out: (t) => {
      out += t;
    },
    err: (t) => {
      err += t;
    },
    isTTY: false,
    stdout: () => out,
    stderr: () => err,
  };
}

// teacher-forced U-Net cases only: two runs, two sizes (the free-running and end-to-end cases are
// left out by `cases`, so each probe is a few U-Net calls)
const FAST_CASES = ["unet:txt2img-pndm-64x64-step00", "unet:txt2img-pndm-64x64-step05", "unet:txt2img-euler-128x64-negative-step00"];

describe("sensitivity", () => {
  let before: Record<string, string>;
  let big: SensitivityReport;
  let tiny: SensitivityReport;
  const roots: string[] = [];

  beforeAll(async () => {
    before = tree(TINY);
    const common = {
      model: TINY,
      references: REFS,
      budgetSeconds: 120,
      seed: 7,
      only: ["unet.attn1.out"],
      cases: FAST_CASES,
      sweep: false,
      threads: 1,
    } as const;
    roots.push(fs.mkdtempSync(path.join(tmp, "root-")));
    big = await runSensitivity({ ...common, relatives: [], scales: [1.1], tmpRoot: roots[0] });
    roots.push(fs.mkdtempSync(path.join(tmp, "root-")));
    tiny = await runSensitivity({ ...common, relatives: [1e-6], scales: [], tmpRoot: roots[1] });
  });

  test("(a) x1.1 on a U-Net attention output projection is caught by the unet stage", () => {
    const kind = big.kinds.find((k) => k.id === "unet.attn1.out")!;
    expect(kind.scale).toHaveLength(1);
    expect(kind.scale[0].smallestCaught).toBe(1.1);
    expect(kind.scale[0].caughtBy).toContain("unet");
    const p = big.probes.find((q) => q.mode === "scale")!;
    expect(p.module).toMatch(/transformer_blocks\.0\.attn1\.to_out\.0$/);
    expect(p.caught).toBe(true);
    // the deciding check is a U-Net output over its limit
    expect(p.decider?.stage).toBe("unet");
    expect(p.decider!.value).toBeGreaterThan(p.decider!.limit);
    expect(p.appliedRelative).toBeCloseTo(0.1, 5);
  });

  test("(b) a 1e-6 relative change of one weight is reported not caught", () => {
    const kind = tiny.kinds.find((k) => k.id === "unet.attn1.out")!;
    expect(kind.single).toHaveLength(1);
    expect(kind.single[0].smallestCaught).toBeNull();
    expect(kind.single[0].largestMissed).toBe(1e-6);
    const p = tiny.probes[0];
    // the value did change (a few float32 ulps), so the miss is the suite's, not the editor's
    expect(p.unrepresentable).toBe(false);
    expect(p.after).not.toBe(p.before);
    expect(Math.abs(p.appliedRelative - 1e-6)).toBeLessThan(2e-7);
    expect(p.caught).toBe(false);
    expect(p.complete).toBe(true);
    expect(p.casesRun).toBe(FAST_CASES.length);
    // same seed, same pick: both runs chose the same tensor of the kind
    expect(p.tensor).toBe(big.probes[0].tensor);
  });

  test("(c) the model folder is byte-identical afterwards and no temporary folder is left", async () => {
    expect(tree(TINY)).toEqual(before);
    for (const r of roots) expect(fs.readdirSync(r)).toEqual([]);
    // the CLI too, in the OS temporary folder it uses
    const tmpdir = fs.mkdtempSync(path.join(tmp, "tmpdir-"));
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = tmpdir;
    const io = capture();
    const out = path.join(tmp, "cli-out");
    let code: number;
    try {
      code = await main(
        [
          "sensitivity",
          "--only",
          "vae_decoder.attn.out",
          "--cases",
          "vae_decode:64x64",
          "--relatives",
          "0.1",
          "--scales",
          "1.1",
          "--no-sweep",
          "--budget",
          "60",
          "--threads",
          "1",
          "--quiet",
          "--out",
          out,
        ],
        io,
      );
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
    expect(io.stderr()).toBe("");
    expect(code).toBe(ExitCode.ok);
    expect(fs.readdirSync(tmpdir)).toEqual([]);
    expect(tree(TINY)).toEqual(before);
    expect(fs.readdirSync(out).sort()).toEqual(["sensitivity.html", "sensitivity.json", "sensitivity.md"]);
    const report = JSON.parse(fs.readFileSync(path.join(out, "sensitivity.json"), "utf8")) as SensitivityReport;
    expect(report.kinds.map((k) => k.id)).toEqual(["vae_decoder.attn.out"]);
    // the table names the kind in the terminal, the Markdown and the page
    expect(io.stdout()).toContain("vae_decoder.attn.out");
    expect(fs.readFileSync(path.join(out, "sensitivity.md"), "utf8")).toContain("| vae_decoder.attn.out |");
    expect(fs.readFileSync(path.join(out, "sensitivity.html"), "utf8")).toContain("<td>vae_decoder.attn.out</td>");
  });

  test.each([
    [["--budget", "soon"], /--budget/],
    [["--budget", "0"], /--budget/],
    [["--seed", "-1"], /--seed/],
    [["--samples", "0"], /--samples/],
    [["--relatives", "0.1,,0.01"], /--relatives/],
    [["--scales", "1"], /--scales/],
    [["--only", "no-such-kind*"], /no layer kind matches/],
    [["--profile", "fp8"], /--profile/],
    [["--model", "/nonexistent/model"], /does not exist/],
    [["--bogus"], /Unknown argument/],
  ])("(d) sensitivity %j is a one-line error with exit code 2", async (flags, re) => {
    const io = capture();
    const out = path.join(tmp, `bad-${crypto.randomUUID()}`);
    const code = await main(["sensitivity", "--budget", "5", "--quiet", "--out", out, ...(flags as string[])], io);
    expect(code).toBe(ExitCode.usage);
    const err = io.stderr();
    expect(err).toMatch(/^sd-harness: error: /);
    expect(err.trimEnd().split("\n")).toHaveLength(1);
    expect(err).toMatch(re);
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe("in-place weight edits", () => {
  test("an edit changes exactly the chosen value, the file keeps its length, and undo restores every byte", () => {
    const dir = copyModel(TINY, tmp, "edit-embedded");
    const file = path.join(dir, "unet", "model.onnx");
    const bytes = fs.readFileSync(file);
    const w = mapInitializers("unet", describeInitializers(file)).find((m) => m.kind === "unet.attn2.k")!;
    expect(w.via).toBe("node"); // an anonymous onnx::MatMul_* weight, named through its MatMul node
    const values = readWeights(w.info.bytes!);
    const e = applyEdit(w.info.bytes!, { kind: "single", index: 3, relative: 0.01 });
    const after = readWeights(w.info.bytes!);
    expect(after[3]).toBe(Math.fround(values[3] * 1.01));
    expect(after.filter((v, i) => v !== values[i])).toHaveLength(1);
    expect(fs.statSync(file).size).toBe(bytes.length);
    e.undo();
    expect(fs.readFileSync(file).equals(bytes)).toBe(true);
  });

  test("external-data weights are edited in the data file, the model file untouched", () => {
    const dir = copyModel(TINY, tmp, "edit-external");
    const file = path.join(dir, "vae_decoder", "model.onnx");
    externalizeInitializers(file, "model.onnx_data");
    const data = path.join(dir, "vae_decoder", "model.onnx_data");
    const model = fs.readFileSync(file);
    const blob = fs.readFileSync(data);
    const w = mapInitializers("vae_decoder", describeInitializers(file)).find((m) => m.kind === "vae_decoder.attn.out")!;
    expect(w.info.bytes!.external).toBe(true);
    expect(w.info.bytes!.file).toBe(fs.realpathSync(data));
    const values = readWeights(w.info.bytes!);
    const e = applyEdit(w.info.bytes!, { kind: "scale", factor: 1.1 });
    expect(readWeights(w.info.bytes!)).toEqual(values.map((v) => Math.fround(v * 1.1)));
    expect(fs.readFileSync(file).equals(model)).toBe(true);
    expect(fs.readFileSync(data).equals(blob)).toBe(false);
    e.undo();
    expect(fs.readFileSync(data).equals(blob)).toBe(true);
  });

  test("an anonymous weight is named through its reader, and left unmapped when its readers disagree", () => {
    const bytes = { file: "/x", offset: 0, count: 4, dataType: 1 as const, external: false };
    const use = (node: string, opType = "MatMul", input = 1) => ({ node, opType, input });
    const [q, norm, split, scalar] = mapInitializers("unet", [
      {
        name: "onnx::MatMul_1",
        dataType: 1,
        bytes,
        consumers: [use("/model/mid_block/attentions.0/transformer_blocks.0/attn1/to_q/MatMul")],
      },
      { name: "onnx::Mul_2", dataType: 1, bytes, consumers: [use("/model/up_blocks.1/resnets.0/norm1/Mul", "Mul", 1)] },
      {
        name: "onnx::MatMul_3",
        dataType: 1,
        bytes,
        consumers: [
          use("/model/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/MatMul"),
          use("/model/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_k/MatMul"),
        ],
      },
      {
        name: "onnx::Div_4",
        dataType: 1,
        bytes: { ...bytes, count: 1 },
        consumers: [use("/model/mid_block/attentions.0/transformer_blocks.0/attn1/Div", "Div", 1)],
      },
    ]);
    expect([q.kind, q.region, q.via]).toEqual(["unet.attn1.q", "mid", "node"]);
    expect([norm.kind, norm.role]).toEqual(["unet.groupnorm", "weight"]);
    expect([split.module, split.kind]).toEqual([null, null]);
    expect(unmapped([q, norm, split, scalar]).map((m) => m.name)).toEqual(["onnx::MatMul_3"]);
  });

  test("an external location outside the model's folder is refused", () => {
    const dir = copyModel(TINY, tmp, "edit-hostile");
    const file = path.join(dir, "vae_decoder", "model.onnx");
    externalizeInitializers(file, "../outside.bin", path.join(dir, "outside.bin"));
    expect(() => describeInitializers(file)).toThrow(/outside the model's folder/);
  });
});
