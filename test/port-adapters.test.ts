/**
 * The Python adapters under ports/ on a subset of the bundled set: OpenVINO on the ONNX files
 * (at f32 it passes the fp32 profile, and the precision it compiled to is in the report), and
 * diffusers' PyTorch components in bfloat16 (they pass the bf16 profile and fail fp32, which is
 * what a profile is for). Python-gated: CI has no .venv, so these are skipped there with a notice;
 * each adapter is skipped where its package is not installed.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { parseReportJson } from "../src/conformance/runner";
import type { Report } from "../src/conformance/types";

const ROOT = path.resolve(__dirname, "..");
const PYTHON = path.join(ROOT, ".venv", "bin", "python");
const TORCH_MODEL = path.join(ROOT, "fixtures", "models", "tiny-sd");
const TORCH_INPAINT = path.join(ROOT, "fixtures", "models", "tiny-sd-inpaint");
const quote = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
const SUBSET = [
  "--only",
  "text_encoder:batch2",
  "unet:txt2img-euler-a-64x64-step00",
  "vae_decode:64x64",
  "vae_encode:64x64",
  "end_to_end:txt2img-pndm-clipskip1",
  "--threads",
  "1",
];

const has = (module: string) => fs.existsSync(PYTHON) && spawnSync(PYTHON, ["-c", `import ${module}`], { stdio: "ignore" }).status === 0;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-port-adapters-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function run(name: string, extra: string[]): Promise<{ code: number; err: string; report: Report }> {
  let err = "";
  const io: CliIO = {
    out: () => {},
    err: (t) => {
      err += t;
    },
    isTTY: false,
  };
  const out = path.join(tmp, name);
  const code = await main(["conformance", "--out", out, "--quiet", ...SUBSET, ...extra], io);
  return { code, err, report: parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8")) };
}

const judged = (r: Report) => r.results.filter((x) => x.status !== "skip");

describe("ports/openvino", () => {
  if (!has("openvino")) {
    beforeAll(() => console.log(`port adapters: ${PYTHON} has no openvino (.venv/bin/pip install openvino); ports/openvino is not judged`));
    test.skip("ports/openvino: openvino not installed; skipped", () => {});
    return;
  }
  test("at f32 passes the fp32 profile, and the report records the precision it compiled to", async () => {
    const port = `${quote(PYTHON)} ${quote(path.join(ROOT, "ports", "openvino", "port.py"))} --precision f32`;
    const { code, err, report } = await run("openvino-f32", ["--port", port]);
    expect(err).toMatch(/^PASS: /m);
    expect(code).toBe(0);
    expect(judged(report)).toHaveLength(5);
    expect(report.models[0].runtime).toMatchObject({
      runtime: "port",
      package: "openvino",
      executionProvider: expect.stringMatching(/^OpenVINO .*, precision f32$/),
    });
  }, 600_000);
});

describe("ports/diffusers (bfloat16)", () => {
  if (!has("diffusers") || !fs.existsSync(TORCH_MODEL) || !fs.existsSync(TORCH_INPAINT)) {
    beforeAll(() =>
      console.log(
        `port adapters: no diffusers in ${PYTHON} or no ${TORCH_MODEL} (scripts/make_fixtures.sh); ports/diffusers is not judged`,
      ),
    );
    test.skip("ports/diffusers: no diffusers or PyTorch fixture; skipped", () => {});
    return;
  }
  const port = `${quote(PYTHON)} ${quote(path.join(ROOT, "ports", "diffusers", "port.py"))} --model ${quote(TORCH_MODEL)} --inpaint-model ${quote(TORCH_INPAINT)}`;
  test("passes the bf16 profile and fails fp32; the report says bf16", async () => {
    const bf16 = await run("torch-bf16", ["--port", port, "--profile", "bf16"]);
    expect(bf16.err).toMatch(/^PASS: /m);
    expect(bf16.code).toBe(0);
    expect(judged(bf16.report)).toHaveLength(5);
    expect(bf16.report.models[0].runtime).toMatchObject({
      package: "diffusers-torch",
      executionProvider: expect.stringMatching(/precision bf16$/),
    });
    expect(judged(bf16.report)[0].tolerance.reason).toMatch(/^bf16 profile: diffusers' PyTorch components cast to bfloat16/);
    const fp32 = await run("torch-bf16-fp32", ["--port", port, "--profile", "fp32"]);
    expect(fp32.code).toBe(1);
    expect(judged(fp32.report).every((r) => r.status === "fail")).toBe(true);
  }, 600_000);
});
