/**
 * conformance --model A --against B: model stages judged against B's outputs on the reference
 * set's inputs. A model against itself is identical to the last bit (against PyTorch the fp32
 * export drifts by ~1e-6, so a zero proves B's outputs were used); int8 against fp32 fails the fp16
 * profile as it does against PyTorch; stages that do not run the model are skipped with a reason.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { parseReportJson } from "../src/conformance/runner";
import { Report } from "../src/conformance/types";

const ROOT = path.resolve(__dirname, "..");
const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");
const INT8 = path.join(ROOT, "fixtures", "models", "tiny-sd-int8-onnx");

const io: CliIO = { out: () => {}, err: () => {}, isTTY: false };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-against-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let report: Report;
let code: number;

beforeAll(async () => {
  const out = path.join(tmp, "r");
  code = await main(["conformance", "--model", `${TINY}=self`, "--model", `${INT8}=int8`, "--against", `${TINY}=fp32`, "--profile", "fp16",
    "--only", "unet:txt2img-pndm-64x64-step00", "--only", "unet:txt2img-pndm-64x64-free", "--only", "vae_decode:64x64", "--only", "text_encoder:astronaut",
    "--threads", "1", "--quiet", "--out", out], io);
  report = parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8"));
});

test("a model against itself is identical in every compared tensor", () => {
  const self = report.results.filter((r) => r.model === "self" && r.status !== "skip");
  expect(self.map((r) => r.id).sort()).toEqual(["text_encoder:astronaut", "unet:txt2img-pndm-64x64-step00", "vae_decode:64x64"]);
  for (const r of self) {
    expect(r.status).toBe("pass");
    for (const m of Object.values(r.metrics)) expect([m.maxAbs, m.relL2]).toEqual([0, 0]);
  }
});

test("int8 against fp32 fails the fp16 profile in the U-Net, as against PyTorch", () => {
  const unet = report.results.find((r) => r.model === "int8" && r.id === "unet:txt2img-pndm-64x64-step00")!;
  expect(unet.status).toBe("fail");
  expect(unet.metrics.out_sample.relL2).toBeGreaterThan(1.2e-2);
  expect(code).toBe(1);
});

test("the report names the model judged against, and the loop cases say why they were skipped", () => {
  expect(report.against?.label).toBe("fp32");
  expect(Object.keys(report.against?.hashes ?? {})).toContain("unet/model.onnx");
  const free = report.results.filter((r) => r.id === "unet:txt2img-pndm-64x64-free");
  expect(free.map((r) => r.status)).toEqual(["skip", "skip"]);
  expect(free[0].message).toMatch(/--against compares model stages/);
  const md = fs.readFileSync(path.join(tmp, "r", "summary.md"), "utf8");
  expect(md).toContain("**Against:**");
});
