/**
 * conformance --localize on the tiny fixture: a copy of the fp32 model with 64 values of one U-Net
 * conv weight scaled by 1.05 (the fault of test/faults.test.ts) is localized to that conv (or a
 * module containing it) first; the unbroken model has no module over its limit; the model folders
 * are byte-identical afterwards and the temporary model copies are gone. Also: the graph copy keeps
 * the model's own outputs first, and an export without scope names says so instead of guessing.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { parseReportJson } from "../src/conformance/runner";
import { Report } from "../src/conformance/types";
import { readGraph, withExtraOutputs, matchModules, scopeOf } from "../src/onnx/graph-outputs";
import { ModuleReferences, runLocalize } from "../src/conformance/localize";
import { scaleInitializers, copyModel, externalizeInitializers } from "./helpers/onnx-edit";

const ROOT = path.resolve(__dirname, "..");
const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");
const FP16 = path.join(ROOT, "fixtures", "models", "tiny-sd-fp16-onnx");
const REFS = path.join(ROOT, "fixtures", "references", "tiny-sd", "cpu");
const MODULES = path.join(ROOT, "fixtures", "references", "tiny-sd", "modules");
const PERTURBED = "down_blocks.1.resnets.0.conv1";

function capture(): CliIO & { stdout: () => string; stderr: () => string } {
  let out = "";
  let err = "";
  return { out: (t) => { out += t; }, err: (t) => { err += t; }, isTTY: false, stdout: () => out, stderr: () => err };
}

/** sha256 of every file under dir (symlinks followed), by relative path. */
function treeHash(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d).sort()) {
      const p = path.join(d, e);
      const st = fs.statSync(p);
      if (st.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex");
    }
  };
  walk(dir);
  return out;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-localize-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let report: Report;
let stderr = "";

/** The temporary model copies --localize makes (the library's os.tmpdir() is the real one: jest's process.env is a copy). */
function leftovers(): string[] {
  return fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith("sd-harness-localize-")).sort();
}
const before = leftovers();

beforeAll(async () => {
  const broken = copyModel(TINY, tmp, "broken");
  const edited = scaleInitializers(path.join(broken, "unet", "model.onnx"), (n) => n === `model.${PERTURBED}.weight`, 1.05, 64);
  expect(edited.map((e) => e.changed)).toEqual([64]);
  const hashes = { fp32: treeHash(TINY), broken: treeHash(broken) };
  const io = capture();
  const out = path.join(tmp, "report");
  const code = await main(["conformance", "--model", `${TINY}=fp32`, "--model", `${broken}=broken`, "--references", REFS,
    "--only", "unet:txt2img-pndm-64x64-step00", "--localize", "--threads", "1", "--out", out], io);
  expect(code).toBe(1); // the broken model fails the U-Net case; localization does not change the verdict
  stderr = io.stderr();
  report = parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8"));
  expect(treeHash(TINY)).toEqual(hashes.fp32);
  expect(treeHash(broken)).toEqual(hashes.broken);
});

test("the perturbed conv is the first U-Net module over its limit, at both recorded steps", () => {
  const unet = report.localize!.calls.filter((c) => c.model === "broken" && c.component === "unet");
  expect(unet.length).toBe(2);
  for (const c of unet) {
    expect(c.error).toBeUndefined();
    expect(c.first).not.toBeNull();
    // the module itself, or a module that contains it
    expect(PERTURBED === c.first!.module || PERTURBED.startsWith(`${c.first!.module}.`)).toBe(true);
    // everything before it in network order is within its limit
    expect(c.modules.filter((m) => m.position < c.first!.position).every((m) => !m.over)).toBe(true);
    // and it is where the drift is introduced: its input (norm1, through the activation) is clean
    expect(c.first!.input).toBe("down_blocks.1.resnets.0.norm1");
    expect(c.growth[0].module).toBe(PERTURBED);
  }
  expect(stderr).toContain(`first over its limit: ${PERTURBED}`);
});

test("the other components of the perturbed copy, and the unbroken model, have no module over its limit", () => {
  const calls = report.localize!.calls;
  expect(calls.length).toBe(10); // 5 recorded calls x 2 models
  for (const c of calls) {
    expect(c.error).toBeUndefined();
    expect(c.unmapped).toEqual([]);
    expect(c.modules.length).toBe(c.total);
    if (c.model === "fp32" || c.component !== "unet") expect(c.first).toBeNull();
  }
});

test("summary.md and report.html show the localization; the HTML has one chart per call with one line per model", () => {
  const dir = path.join(tmp, "report");
  const md = fs.readFileSync(path.join(dir, "summary.md"), "utf8");
  expect(md).toContain("## Where drift starts (--localize)");
  expect(md).toContain(PERTURBED.replace(/_/g, "\\_"));
  const html = fs.readFileSync(path.join(dir, "report.html"), "utf8");
  const charts = html.match(/<svg class="localize-plot"[\s\S]*?<\/svg>/g) ?? [];
  expect(charts.length).toBe(5);
  for (const svg of charts) {
    expect((svg.match(/<polyline class="line" data-model="fp32"/g) ?? []).length).toBe(1);
    expect((svg.match(/<polyline class="line" data-model="broken"/g) ?? []).length).toBe(1);
  }
  const unetChart = charts.find((s) => s.includes('data-call="unet:txt2img-pndm-64x64-step00"'))!;
  for (const block of ["down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.3"]) expect(unetChart).toContain(`>${block}</text>`);
  expect(unetChart).toContain('class="first-over"');
});

test("no temporary model copy is left behind", () => {
  expect(leftovers()).toEqual(before);
});

test("the graph copy appends outputs after the model's own, and the module names map to scopes", () => {
  const file = path.join(TINY, "unet", "model.onnx");
  const buf = fs.readFileSync(file);
  const g = readGraph(buf, file);
  const copy = readGraph(withExtraOutputs(buf, file, ["a", "b"]), file);
  expect(copy.outputs).toEqual([...g.outputs, "a", "b"]);
  expect(copy.nodes.length).toBe(g.nodes.length);
  expect(scopeOf("/model/down_blocks.0/resnets.0/conv1/Conv")).toBe("model.down_blocks.0.resnets.0.conv1");
  expect(scopeOf("Constant_12")).toBeNull();
  const { prefix, scopeNamed, matches } = matchModules(g, ["conv_in", "down_blocks.0.resnets.0", "no_such.module"]);
  expect([prefix, scopeNamed]).toEqual(["model.", true]);
  expect(matches.map((m) => m.how)).toEqual(["scope", "scope", "none"]);
});

test("an export without scope names (--compact-names) matches only modules with their own parameters, and says so", () => {
  const refs = ModuleReferences.open(MODULES);
  const names = refs.manifest.calls.find((c) => c.component === "unet")!.modules.map((m) => m.name);
  const file = path.join(FP16, "unet", "model.onnx");
  const { scopeNamed, matches } = matchModules(readGraph(fs.readFileSync(file), file), names);
  expect(scopeNamed).toBe(false);
  const by = new Map(matches.map((m) => [m.module, m]));
  expect(by.get("conv_in")!.how).toBe("parameter");
  expect(by.get(PERTURBED)!.how).toBe("parameter");
  const block = by.get("down_blocks.1.resnets.0")!;
  expect(block.how).toBe("none");
  expect(block.how === "none" && block.why).toMatch(/no scope names in this export/);
});

test("a U-Net with external weights (model.onnx_data) is localized with its data read in place (no link, no copy), and left as it was", async () => {
  const ext = copyModel(TINY, tmp, "external");
  const moved = externalizeInitializers(path.join(ext, "unet", "model.onnx"), "model.onnx_data");
  expect(moved.length).toBeGreaterThan(100);
  const hashes = treeHash(ext);
  const r = await runLocalize({ models: [{ label: "external", dir: ext }], moduleReferences: MODULES, profile: "fp32", threads: 1 });
  const unet = r.calls.filter((c) => c.component === "unet");
  expect(unet.map((c) => [c.error, c.unmapped.length, c.modules.length === c.total, c.first])).toEqual([[undefined, 0, true, null], [undefined, 0, true, null]]);
  expect(leftovers()).toEqual(before);
  expect(treeHash(ext)).toEqual(hashes);
});

test("a dynamo export's scope is read from its nodes' metadata (pkg.torch.onnx.name_scopes), its names being flat", () => {
  // protobuf by hand: length-delimited fields with varint lengths
  const varint = (n: number) => {
    const out: number[] = [];
    for (; n >= 128; n = Math.floor(n / 128)) out.push((n % 128) | 128);
    return Buffer.from([...out, n]);
  };
  const ld = (no: number, payload: Buffer | string) => {
    const b = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, "utf8");
    return Buffer.concat([varint(no * 8 + 2), varint(b.length), b]);
  };
  const scopes = "['', 'model', 'model.down_blocks.1', 'model.down_blocks.1.resnets.0', 'model.down_blocks.1.resnets.0.conv1', 'conv2d_10']";
  const meta = ld(9, Buffer.concat([ld(1, "pkg.torch.onnx.name_scopes"), ld(2, scopes)]));
  const node = ld(1, Buffer.concat([ld(1, "x"), ld(2, "y"), ld(3, "node_conv2d_10"), ld(4, "Conv"), meta]));
  const model = ld(7, Buffer.concat([node, ld(11, ld(1, "x")), ld(12, ld(1, "y"))]));
  const g = readGraph(model, "synthetic.onnx");
  expect(g.nodes[0].scope).toBe("model.down_blocks.1.resnets.0.conv1");
  const { prefix, matches } = matchModules(g, ["down_blocks.1.resnets.0.conv1", "down_blocks.1.resnets.0", "down_blocks.1.resnets.1"]);
  expect(prefix).toBe("model.");
  expect(matches.map((m) => [m.how, m.how === "none" ? null : m.candidates])).toEqual([["scope", ["y"]], ["scope", ["y"]], ["none", null]]);
});

test("--localize-failed localizes only the components whose stages failed, per model", async () => {
  const broken = path.join(tmp, "broken"); // made in beforeAll
  const out = path.join(tmp, "failed-only");
  const code = await main(["conformance", "--model", `${TINY}=fp32`, "--model", `${broken}=broken`, "--references", REFS,
    "--only", "unet:txt2img-pndm-64x64-step00", "--only", "vae_decode:64x64", "--localize-failed", "--threads", "1", "--quiet", "--out", out], capture());
  expect(code).toBe(1);
  const r = parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8"));
  expect(r.results.filter((x) => x.status === "fail").map((x) => `${x.model} ${x.id}`)).toEqual(["broken unet:txt2img-pndm-64x64-step00"]);
  expect(r.localize!.calls.map((c) => `${c.model} ${c.call}`)).toEqual(["broken unet:txt2img-pndm-64x64-step00", "broken unet:txt2img-pndm-64x64-step09"]);
  expect(r.localize!.calls[0].first?.module).toBe(PERTURBED);
});
