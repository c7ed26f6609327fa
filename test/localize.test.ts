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
import { ModuleReferences, runLocalize } from "../src/conformance/localize/localize";
import { scaleInitializers, copyModel, externalizeInitializers, scaleValue } from "./helpers/onnx-edit";
import { readFloatInitializers } from "../src/onnx/initializers";
import { describeInitializers } from "../src/onnx/initializer-edit";
import { mapInitializers } from "../src/conformance/sensitivity/layer-kinds";

const ROOT = path.resolve(__dirname, "..");
const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");
const FP16 = path.join(ROOT, "fixtures", "models", "tiny-sd-fp16-onnx");
const REFS = path.join(ROOT, "fixtures", "references", "tiny-sd", "cpu");
const MODULES = path.join(ROOT, "fixtures", "references", "tiny-sd", "modules");
const PERTURBED = "down_blocks.1.resnets.0.conv1";

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
  return fs
    .readdirSync(os.tmpdir())
    .filter((n) => n.startsWith("sd-harness-localize-"))
    .sort();
}
const before = leftovers();

beforeAll(async () => {
  const broken = copyModel(TINY, tmp, "broken");
  const edited = scaleInitializers(path.join(broken, "unet", "model.onnx"), (n) => n === `model.${PERTURBED}.weight`, 1.05, 64);
  expect(edited.map((e) => e.changed)).toEqual([64]);
  const hashes = { fp32: treeHash(TINY), broken: treeHash(broken) };
  const io = capture();
  const out = path.join(tmp, "report");
  const code = await main(
    [
      "conformance",
      "--model",
      `${TINY}=fp32`,
      "--model",
      `${broken}=broken`,
      "--references",
      REFS,
      "--only",
      "unet:txt2img-pndm-64x64-step00",
      "--localize",
      "--threads",
      "1",
      "--out",
      out,
    ],
    io,
  );
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
  // beside each: the drift each leaf adds itself; the broken copy's widest stem is the perturbed conv
  const added = html.match(/<svg class="localize-added"[\s\S]*?<\/svg>/g) ?? [];
  expect(added.length).toBe(5);
  const unetAdded = added.find((s) => s.includes('data-call="unet:txt2img-pndm-64x64-step00"'))!;
  const stems = [...unetAdded.matchAll(/<line class="added" data-model="broken"[^>]*stroke-width="3"><title>([^<]*)<\/title>/g)].map(
    (m) => m[1],
  );
  expect(stems.length).toBe(1);
  expect(stems[0].startsWith(`broken ${PERTURBED}: x`)).toBe(true);
  expect(unetAdded).toContain('data-model="fp32"');
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
  expect(unet.map((c) => [c.error, c.unmapped.length, c.modules.length === c.total, c.first])).toEqual([
    [undefined, 0, true, null],
    [undefined, 0, true, null],
  ]);
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
  const scopes =
    "['', 'model', 'model.down_blocks.1', 'model.down_blocks.1.resnets.0', 'model.down_blocks.1.resnets.0.conv1', 'conv2d_10']";
  const meta = ld(9, Buffer.concat([ld(1, "pkg.torch.onnx.name_scopes"), ld(2, scopes)]));
  const node = ld(1, Buffer.concat([ld(1, "x"), ld(2, "y"), ld(3, "node_conv2d_10"), ld(4, "Conv"), meta]));
  const model = ld(7, Buffer.concat([node, ld(11, ld(1, "x")), ld(12, ld(1, "y"))]));
  const g = readGraph(model, "synthetic.onnx");
  expect(g.nodes[0].scope).toBe("model.down_blocks.1.resnets.0.conv1");
  const { prefix, matches } = matchModules(g, ["down_blocks.1.resnets.0.conv1", "down_blocks.1.resnets.0", "down_blocks.1.resnets.1"]);
  expect(prefix).toBe("model.");
  expect(matches.map((m) => [m.how, m.how === "none" ? null : m.candidates])).toEqual([
    ["scope", ["y"]],
    ["scope", ["y"]],
    ["none", null],
  ]);
});

test("--localize-failed localizes only the components whose stages failed, per model", async () => {
  const broken = path.join(tmp, "broken"); // made in beforeAll
  const out = path.join(tmp, "failed-only");
  const code = await main(
    [
      "conformance",
      "--model",
      `${TINY}=fp32`,
      "--model",
      `${broken}=broken`,
      "--references",
      REFS,
      "--only",
      "unet:txt2img-pndm-64x64-step00",
      "--only",
      "vae_decode:64x64",
      "--localize-failed",
      "--threads",
      "1",
      "--quiet",
      "--out",
      out,
    ],
    capture(),
  );
  expect(code).toBe(1);
  const r = parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8"));
  expect(r.results.filter((x) => x.status === "fail").map((x) => `${x.model} ${x.id}`)).toEqual(["broken unet:txt2img-pndm-64x64-step00"]);
  expect(r.localize!.calls.map((c) => `${c.model} ${c.call}`)).toEqual([
    "broken unet:txt2img-pndm-64x64-step00",
    "broken unet:txt2img-pndm-64x64-step10",
  ]);
  expect(r.localize!.calls[0].first?.module).toBe(PERTURBED);
});

// ---- leaf faults: one weight changed, the first module named is that leaf ------------------------

/**
 * One fault per leaf kind of each component: a single weight of the leaf (its largest, at a 3x3
 * conv's centre tap, which no zero padding hides) multiplied by 1.5 in a private copy of that
 * component, localized with the component's recorded calls. The first module over its limit must
 * be the leaf itself at every call, not the block around it.
 */
const T0 = "down_blocks.0.attentions.0.transformer_blocks.0";
const R = "down_blocks.1.resnets.0"; // has a conv_shortcut (32 -> 64 channels)
interface LeafFault {
  readonly component: "text_encoder" | "unet" | "vae_decoder" | "vae_encoder";
  readonly module: string;
  /** kernel taps of a conv weight (9 for 3x3): the change goes to the centre tap */
  readonly taps?: number;
}
const L1 = "text_model.encoder.layers.1";
const DEC_ATT = "decoder.mid_block.attentions.0";
const ENC_ATT = "encoder.mid_block.attentions.0";
const leafFaults = (): LeafFault[] => {
  const refs = ModuleReferences.open(MODULES);
  const names = new Set(Object.values(refs.manifest.components).flatMap((c) => c.modules.map((m) => m.name)));
  // the first VAE decoder resnet that changes its width (and so has a conv_shortcut)
  const decRes = [...names].find((n) => /^decoder\.up_blocks\.\d+\.resnets\.\d+\.conv_shortcut$/.test(n))!.replace(/\.conv_shortcut$/, "");
  const encRes = [...names]
    .find((n) => /^encoder\.down_blocks\.\d+\.resnets\.\d+\.conv_shortcut$/.test(n))!
    .replace(/\.conv_shortcut$/, "");
  const faults: LeafFault[] = [
    ...[
      "norm1",
      "attn1.to_q",
      "attn1.to_k",
      "attn1.to_v",
      "attn1.to_out.0",
      "norm2",
      "attn2.to_q",
      "attn2.to_k",
      "attn2.to_v",
      "attn2.to_out.0",
      "norm3",
      "ff.net.0.proj",
      "ff.net.2",
    ].map((m) => ({ component: "unet" as const, module: `${T0}.${m}` })),
    ...["norm1", "conv1", "time_emb_proj", "norm2", "conv2", "conv_shortcut"].map((m) => ({
      component: "unet" as const,
      module: `${R}.${m}`,
      taps: /^conv[12]$/.test(m) ? 9 : 1,
    })),
    ...[
      "layer_norm1",
      "self_attn.q_proj",
      "self_attn.k_proj",
      "self_attn.v_proj",
      "self_attn.out_proj",
      "layer_norm2",
      "mlp.fc1",
      "mlp.fc2",
    ].map((m) => ({ component: "text_encoder" as const, module: `${L1}.${m}` })),
    { component: "text_encoder", module: "text_model.final_layer_norm" },
    ...(["vae_decoder", "vae_encoder"] as const).flatMap((component) => {
      const res = component === "vae_decoder" ? decRes : encRes;
      const att = component === "vae_decoder" ? DEC_ATT : ENC_ATT;
      return [
        ...["norm1", "conv1", "norm2", "conv2", "conv_shortcut"].map((m) => ({
          component,
          module: `${res}.${m}`,
          taps: /^conv[12]$/.test(m) ? 9 : 1,
        })),
        ...["group_norm", "to_q", "to_k", "to_v", "to_out.0"].map((m) => ({ component, module: `${att}.${m}` })),
      ];
    }),
  ];
  for (const f of faults) if (!names.has(f.module)) throw new Error(`the module set has no ${f.module}`);
  return faults;
};

/** The weight initializer of `module` in a component file, named directly or through the node reading it. */
function weightOf(file: string, component: LeafFault["component"], module: string): string {
  const hits = mapInitializers(component, describeInitializers(file)).filter((m) => m.module === module && m.role === "weight");
  if (hits.length !== 1) throw new Error(`${file}: ${hits.length} weight initializers for ${module}`);
  return hits[0].name;
}

/**
 * The output channels of `module` that its stored values see: all, when stored whole; else the
 * indices of the channel axis (1 for an NCHW map or a GroupNorm, the last for a Linear / LayerNorm)
 * that the stored positions hit. A sample of c values sees every index of an axis no longer than c
 * (a Latin hypercube); a longer axis (the 128 GEGLU features beside 44 stored values) is seen in part.
 */
function seenChannels(f: LeafFault, axis: "channel" | "last"): (ch: number) => boolean {
  const refs = ModuleReferences.open(MODULES);
  const e = refs.manifest.components[f.component].modules.find((m) => m.name === f.module)!;
  const pos = refs.positions(e);
  if (!pos) return () => true;
  const d = axis === "channel" ? 1 : e.shape.length - 1;
  const inner = e.shape.slice(d + 1).reduce((a, b) => a * b, 1);
  const seen = new Set(Array.from(pos, (p) => Math.floor(p / inner) % e.shape[d]));
  return (ch) => seen.has(ch);
}

/**
 * A folder holding only a copy of `component` with one weight of `module` x `factor`: the one at
 * `index`, or the largest (at a 3x3 conv's centre tap) among those whose output channel the stored
 * values see. Returns the index changed.
 */
function leafCopy(f: LeafFault, name: string, factor = 1.5, index?: number): { dir: string; weight: string; index: number } {
  const dir = path.join(tmp, name);
  fs.mkdirSync(path.join(dir, f.component), { recursive: true });
  const file = path.join(dir, f.component, "model.onnx");
  fs.copyFileSync(path.join(TINY, f.component, "model.onnx"), file);
  const weight = weightOf(file, f.component, f.module);
  const w = readFloatInitializers(file, (n) => n === weight).get(weight)!;
  let at = index ?? -1;
  if (at < 0) {
    const op = describeInitializers(file).find((i) => i.name === weight)!.consumers[0].opType;
    const refs = ModuleReferences.open(MODULES);
    const shape = refs.manifest.components[f.component].modules.find((m) => m.name === f.module)!.shape;
    const last = shape[shape.length - 1];
    // the output channel a weight index feeds: Conv [out, in, kh, kw]; MatMul [in, out] (a Linear
    // the exporter transposed); Gemm [out, in]; LayerNorm / GroupNorm gamma (Mul) one per channel
    const channelOf: Record<string, (k: number) => number> = {
      Conv: (k) => Math.floor(k / (w.length / shape[1])),
      MatMul: (k) => k % last,
      Gemm: (k) => Math.floor(k / (w.length / last)),
      LayerNormalization: (k) => k,
      Mul: (k) => k,
    };
    const seen = seenChannels(f, op === "Conv" || op === "Mul" ? "channel" : "last");
    const taps = f.taps ?? 1;
    for (let k = (taps - 1) / 2; k < w.length; k += taps) {
      if (seen(channelOf[op](k)) && (at < 0 || Math.abs(w[k]) > Math.abs(w[at]))) at = k;
    }
  }
  scaleValue(file, weight, at, factor);
  return { dir, weight, index: at };
}

test("a single weight of every leaf kind, changed in a copy, is localized to that leaf first, in every component", async () => {
  const faults = leafFaults();
  expect(faults.length).toBeGreaterThanOrEqual(38);
  const wrong: string[] = [];
  for (const [k, f] of faults.entries()) {
    const { dir } = leafCopy(f, `leaf-${k}`);
    const r = await runLocalize({
      models: [{ label: "leaf", dir }],
      moduleReferences: MODULES,
      profile: "fp32",
      threads: 1,
      components: () => new Set([f.component]),
    });
    expect(r.calls.length).toBeGreaterThan(0);
    for (const c of r.calls) {
      expect(c.error).toBeUndefined();
      if (c.first?.module !== f.module) wrong.push(`${f.component} ${f.module} (${c.call}): first ${c.first?.module ?? "none"}`);
      // the leaf is named because its own output drifts, not because it was handed a drifted input
      else if (c.first.input !== null && !c.first.input.startsWith("input:"))
        expect(c.modules.find((m) => m.module === c.first!.input)!.over).toBe(false);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  expect(wrong).toEqual([]);
}, 600_000);

test("no sampling blind spot: +50 % of up_blocks.3.resnets.2.conv1's weight (14, 2, 0, 0), a corner tap, is found there", async () => {
  const f: LeafFault = { component: "unet", module: "up_blocks.3.resnets.2.conv1" };
  const refs = ModuleReferences.open(MODULES);
  const entry = refs.manifest.components.unet.modules.find((m) => m.name === f.module)!;
  const file = path.join(TINY, "unet", "model.onnx");
  const w = readFloatInitializers(file, (n) => n === `model.${f.module}.weight`).get(`model.${f.module}.weight`)!;
  const out = entry.shape[1];
  const inCh = w.length / (out * 9);
  const { dir, index } = leafCopy(f, "blind-spot", 1.5, ((14 * inCh + 2) * 3 + 0) * 3 + 0);
  expect(index).toBe(14 * inCh * 9 + 2 * 9);
  const r = await runLocalize({
    models: [{ label: "blind", dir }],
    moduleReferences: MODULES,
    profile: "fp32",
    threads: 1,
    components: () => new Set(["unet" as const]),
  });
  expect(r.calls.map((c) => c.first?.module)).toEqual([f.module, f.module]);
}, 120_000);

test("the module set stores leaves, whole tensors within its byte budget and seeded positions beyond it, recorded in the manifest", () => {
  const refs = ModuleReferences.open(MODULES);
  const m = refs.manifest;
  expect(m.format).toBe("sd-harness-module-references/2");
  expect(m.sampling?.budget_bytes).toBeGreaterThan(0);
  const unet = m.components.unet.modules;
  for (const leaf of [`${T0}.attn1.to_q`, `${T0}.ff.net.2`, `${R}.conv1`, `${R}.time_emb_proj`])
    expect(unet.some((e) => e.name === leaf)).toBe(true);
  for (const call of m.calls) {
    // each call's stored module values stay within the budget
    expect(call.modules.reduce((a, e) => a + 4 * e.count, 0)).toBeLessThanOrEqual(m.sampling!.budget_bytes!);
    for (const e of call.modules) {
      const n = e.shape.reduce((a, b) => a * b, 1);
      const p = refs.positions(e);
      if (p === null) expect(e.count).toBe(n);
      else {
        expect(p.length).toBe(e.count);
        // increasing and inside the tensor
        for (let k = 1; k < p.length; k++) expect(p[k]).toBeGreaterThan(p[k - 1]);
        expect(p[p.length - 1]).toBeLessThan(n);
      }
    }
  }
  // a Latin hypercube sample: every channel of a sampled NCHW map with no more channels than values is seen
  const conv = unet.find((e) => e.name === "up_blocks.3.resnets.2.conv1")!;
  const pos = refs.positions(conv)!;
  const [, c, h, w] = conv.shape;
  expect(new Set(Array.from(pos, (p) => Math.floor(p / (h * w)) % c)).size).toBe(c);
});

test("every shipped module set (calls read from its reference set's manifest) localizes its fixture's export: every module found, none over the fp32 limit", async () => {
  const sets: [string, string, string][] = [
    ["tiny-sd-wide", "tiny-sd-wide-optimum-onnx", "unet:txt2img-pndm-64x64-step18"],
    ["tiny-sd-3block-linear", "tiny-sd-3block-linear-onnx", "unet:txt2img-pndm-32x32-step10"],
    ["tiny-sd-2block-euler", "tiny-sd-2block-euler-onnx", "unet:txt2img-euler-32x32-step09"],
  ];
  for (const [refs, model, lastUnet] of sets) {
    const dir = path.join(ROOT, "fixtures", "references", refs, "modules");
    const ids = ModuleReferences.open(dir).manifest.calls.map((c) => c.id);
    expect(ids).toContain(lastUnet);
    expect(ids.map((i) => i.split(":")[0])).toEqual(["text_encoder", "unet", "unet", "vae_decoder", "vae_encoder"]);
    const r = await runLocalize({
      models: [{ label: refs, dir: path.join(ROOT, "fixtures", "models", model) }],
      moduleReferences: dir,
      profile: "fp32",
      threads: 1,
    });
    expect(r.calls.map((c) => [c.call, c.error, c.unmapped.length, c.modules.length === c.total, c.first?.module ?? null])).toEqual(
      ids.map((id) => [id, undefined, 0, true, null]),
    );
  }
}, 180_000);
