/**
 * conformance --model A --against B: model stages judged against B's outputs on the reference
 * set's inputs. A model against itself is identical to the last bit (against PyTorch the fp32
 * export drifts by ~1e-6, so a zero proves B's outputs were used); int8 against fp32 fails the fp16
 * profile as it does against PyTorch; the loops (free-running, end to end) run B's loop from the
 * same inputs; stages that do not run the model, and inpainting (B has no inpainting model), are
 * skipped with a reason.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { parseReportJson } from "../src/conformance/runner";
import { Report } from "../src/conformance/types";
import { runLocalize } from "../src/conformance/localize/localize";
import { scaleInitializers, copyModel, copyPart, scaleValue } from "./helpers/onnx-edit";

const ROOT = path.resolve(__dirname, "..");
const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");
const INT8 = path.join(ROOT, "fixtures", "models", "tiny-sd-int8-onnx");
const MODULES = path.join(ROOT, "fixtures", "references", "tiny-sd", "modules");

const io: CliIO = { out: () => {}, err: () => {}, isTTY: false };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-against-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let report: Report;
let code: number;

beforeAll(async () => {
  const out = path.join(tmp, "r");
  code = await main(
    [
      "conformance",
      "--model",
      `${TINY}=self`,
      "--model",
      `${INT8}=int8`,
      "--against",
      `${TINY}=fp32`,
      "--profile",
      "fp16",
      "--only",
      "unet:txt2img-pndm-64x64-step00",
      "--only",
      "unet:txt2img-pndm-64x64-free",
      "--only",
      "vae_decode:64x64",
      "--only",
      "text_encoder:astronaut",
      "--only",
      "end_to_end:img2img-euler-a-batch2-strength0.7",
      "--only",
      "end_to_end:inpaint-pndm-64x64",
      "--only",
      "rng:seed42-3",
      "--inpaint-model",
      path.join(ROOT, "fixtures", "models", "tiny-sd-inpaint-onnx"),
      "--threads",
      "1",
      "--quiet",
      "--out",
      out,
    ],
    io,
  );
  report = parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8"));
});

test("a model against itself is identical in every compared tensor", () => {
  const self = report.results.filter((r) => r.model === "self" && r.status !== "skip");
  expect(self.map((r) => r.id).sort()).toEqual([
    "end_to_end:img2img-euler-a-batch2-strength0.7",
    "text_encoder:astronaut",
    "unet:txt2img-pndm-64x64-free",
    "unet:txt2img-pndm-64x64-step00",
    "vae_decode:64x64",
  ]);
  for (const r of self) {
    expect(r.status).toBe("pass");
    for (const m of Object.values(r.metrics)) expect([m.maxAbs, m.relL2]).toEqual([0, 0]);
  }
  // the end-to-end run compared every step, the decoded image and the pictures
  const e2e = self.find((r) => r.id.startsWith("end_to_end:"))!;
  expect(Object.keys(e2e.metrics)).toEqual(expect.arrayContaining(["prompt_embeds", "latents_init", "latents_steps", "image_float"]));
  expect(e2e.images?.map((im) => im.maxAbsU8)).toEqual([0, 0]);
});

test("int8 against fp32 fails the fp16 profile in the U-Net, as against PyTorch", () => {
  const unet = report.results.find((r) => r.model === "int8" && r.id === "unet:txt2img-pndm-64x64-step00")!;
  expect(unet.status).toBe("fail");
  expect(unet.metrics.out_sample.relL2).toBeGreaterThan(1.2e-2);
  expect(code).toBe(1);
});

test("int8 against fp32 fails the fp16 profile in its loops too", () => {
  for (const id of ["unet:txt2img-pndm-64x64-free", "end_to_end:img2img-euler-a-batch2-strength0.7"]) {
    const r = report.results.find((x) => x.model === "int8" && x.id === id)!;
    expect(`${id} ${r.status}`).toBe(`${id} fail`);
  }
});

test("the report names the model judged against; model-free stages and inpainting say why they were skipped", () => {
  expect(report.against?.label).toBe("fp32");
  expect(Object.keys(report.against?.hashes ?? {})).toContain("unet/model.onnx");
  const rng = report.results.filter((r) => r.id === "rng:seed42-3");
  expect(rng.map((r) => r.status)).toEqual(["skip", "skip"]);
  expect(rng[0].message).toMatch(/--against compares model stages/);
  const inpaint = report.results.filter((r) => r.id === "end_to_end:inpaint-pndm-64x64");
  expect(inpaint.map((r) => r.status)).toEqual(["skip", "skip"]);
  expect(inpaint[0].message).toMatch(/B has no inpainting model/);
  const md = fs.readFileSync(path.join(tmp, "r", "summary.md"), "utf8");
  expect(md).toContain("**Against:**");
});

test("--localize --against: module by module between two ports, the perturbed conv named first", async () => {
  const broken = copyModel(TINY, tmp, "broken");
  scaleInitializers(path.join(broken, "unet", "model.onnx"), (n) => n === "model.down_blocks.1.resnets.0.conv1.weight", 1.05, 64);
  const r = await runLocalize({
    models: [
      { label: "self", dir: TINY },
      { label: "broken", dir: broken },
    ],
    against: { label: "fp32", dir: TINY },
    moduleReferences: MODULES,
    profile: "fp32",
    threads: 1,
  });
  expect(r.against?.label).toBe("fp32");
  for (const c of r.calls) {
    expect(c.error).toBeUndefined();
    expect(c.modules.length).toBe(c.total);
    if (c.model === "self") expect(c.modules.every((m) => m.relL2 === 0 && m.maxAbs === 0)).toBe(true);
  }
  const unet = r.calls.filter((c) => c.model === "broken" && c.component === "unet");
  expect(unet.map((c) => c.first?.module)).toEqual(["down_blocks.1.resnets.0.conv1", "down_blocks.1.resnets.0.conv1"]);
  // against a port, everything before the perturbed conv is identical, not merely within its limit
  for (const c of unet) expect(c.modules.filter((m) => m.position < c.first!.position).every((m) => m.relL2 === 0)).toBe(true);
});

test("--against on a set with a float64 floor: the fp32 profile judges excess over two envelopes (A and B are both float32), not without_floor's limits", async () => {
  const broken = copyModel(TINY, tmp, "broken-floor");
  scaleInitializers(path.join(broken, "unet", "model.onnx"), (n) => n === "model.down_blocks.1.resnets.0.conv1.weight", 1.05, 64);
  const out = path.join(tmp, "floor");
  const c = await main(
    [
      "conformance",
      "--model",
      `${TINY}=self`,
      "--model",
      `${broken}=broken`,
      "--against",
      `${TINY}=fp32`,
      "--profile",
      "fp32",
      "--only",
      "unet:txt2img-pndm-64x64-step00",
      "--only",
      "text_encoder:astronaut",
      "--threads",
      "1",
      "--quiet",
      "--out",
      out,
    ],
    io,
  );
  expect(c).toBe(1);
  const r = parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8"));
  for (const x of r.results) {
    expect(x.tolerance.source).not.toMatch(/without_floor/);
    expect(x.float64Floor).toBe("yes: fp32's outputs judged in units of the set's float32 envelope, as PyTorch's are");
    for (const m of Object.values(x.metrics)) {
      expect(m.excess).toBeDefined();
      // the same units as against PyTorch: every tensor's divisor is its envelope
      expect(m.excess).toBeCloseTo(m.relL2 / m.floorRelL2!, 12);
    }
  }
  const status = (model: string, id: string) => r.results.find((x) => x.model === model && x.id === id)!;
  expect(status("self", "unet:txt2img-pndm-64x64-step00").status).toBe("pass");
  expect(status("self", "unet:txt2img-pndm-64x64-step00").metrics.out_sample.excess).toBe(0);
  expect(status("broken", "text_encoder:astronaut").status).toBe("pass");
  const u = status("broken", "unet:txt2img-pndm-64x64-step00");
  expect(u.status).toBe("fail");
  expect(u.metrics.out_sample.excess).toBeGreaterThan(8);
}, 300_000);

test("with a floor, --against fails what the run against PyTorch fails: the VAE decoder weight of the fault tests, through the round trip too", async () => {
  // test/faults-model.test.ts's decoder fault, one value x 1.01: against PyTorch it fails vae_decode
  // and vae_roundtrip (the smallest margin of the suite); a divisor of twice the envelope for B let
  // the round trip pass
  const broken = copyPart(TINY, path.join(tmp, "vdec"), "vae_decoder");
  scaleValue(path.join(broken, "vae_decoder", "model.onnx"), "model.decoder.up_blocks.0.resnets.0.conv1.weight", 0, 1.01);
  const only = ["--only", "vae_decode:64x64", "--only", "vae_roundtrip:64x64", "--only", "vae_encode:64x64"];
  const verdicts = async (extra: string[], out: string) => {
    await main(
      [
        "conformance",
        "--model",
        `${broken}=broken`,
        ...extra,
        "--profile",
        "fp32",
        ...only,
        "--threads",
        "1",
        "--quiet",
        "--out",
        path.join(tmp, out),
      ],
      io,
    );
    const r = parseReportJson(fs.readFileSync(path.join(tmp, out, "report.json"), "utf8"));
    return Object.fromEntries(r.results.map((x) => [x.id, x.status]));
  };
  const vsPyTorch = await verdicts([], "vdec-pt");
  expect(vsPyTorch).toEqual({ "vae_decode:64x64": "fail", "vae_encode:64x64": "pass", "vae_roundtrip:64x64": "fail" });
  expect(await verdicts(["--against", `${TINY}=fp32`], "vdec-against")).toEqual(vsPyTorch);
}, 300_000);
