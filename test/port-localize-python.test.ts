/**
 * --localize through the Python adapters (protocol 1.1's `modules`) on the bundled tiny model:
 * ports/onnxruntime gives ort-node's --localize figures to the bit; ports/openvino (tensor names,
 * Model.add_outputs) and ports/diffusers (forward hooks by module name) compare every module, find
 * none over the fp32 limit on a clean run, and name the conv whose weight their --scale-weight fault
 * scales. Python-gated: CI has no .venv, so these are skipped there with a notice; each adapter is
 * skipped where its package is not installed.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { PortRuntime } from "../src/runtime/port";
import { runLocalize, LocalizeReport } from "../src/conformance/localize";
import type { ComponentKind } from "../src/pipeline/onnx-model";
import { scaleInitializers, copyModel } from "./helpers/onnx-edit";

const ROOT = path.resolve(__dirname, "..");
const PYTHON = path.join(ROOT, ".venv", "bin", "python");
const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");
const TORCH_MODEL = path.join(ROOT, "fixtures", "models", "tiny-sd");
const MODULES = path.join(ROOT, "fixtures", "references", "tiny-sd", "modules");
const PERTURBED = "down_blocks.1.resnets.0.conv1";
const quote = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
const adapter = (name: string, ...args: string[]) => [PYTHON, path.join(ROOT, "ports", name, "port.py"), ...args].map(quote).join(" ");
const has = (module: string) => fs.existsSync(PYTHON) && spawnSync(PYTHON, ["-c", `import ${module}`], { stdio: "ignore" }).status === 0;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-port-localize-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function localize(dir: string, command: string | null, components?: ComponentKind[]): Promise<LocalizeReport> {
  const runtime = command === null ? undefined : new PortRuntime({ command });
  try {
    return await runLocalize({
      models: [{ label: "m", dir }],
      moduleReferences: MODULES,
      profile: "fp32",
      threads: 1,
      runtime,
      components: components ? () => new Set(components) : undefined,
    });
  } finally {
    await runtime?.close();
  }
}

/** every call localized, every module compared, none over its limit */
function expectClean(r: LocalizeReport): void {
  expect(r.calls.length).toBe(5);
  for (const c of r.calls) {
    expect(c.error).toBeUndefined();
    expect(c.unmapped).toEqual([]);
    expect(c.modules.length).toBe(c.total);
    expect(c.first).toBeNull();
  }
}

function expectPerturbedFirst(r: LocalizeReport): void {
  expect(r.calls.length).toBe(2);
  for (const c of r.calls) {
    expect(c.error).toBeUndefined();
    expect(c.first?.module).toBe(PERTURBED);
    expect(c.growth[0].module).toBe(PERTURBED);
  }
}

describe("ports/onnxruntime", () => {
  if (!has("onnxruntime") || !has("onnx")) {
    beforeAll(() => console.log(`port localize: ${PYTHON} has no onnxruntime / onnx; ports/onnxruntime's --localize is not checked`));
    test.skip("ports/onnxruntime: not installed; skipped", () => {});
    return;
  }
  test("on a copy with a U-Net conv weight x1.05 (64 values): ort-node's --localize figures to the bit", async () => {
    const broken = copyModel(TINY, tmp, "broken");
    scaleInitializers(path.join(broken, "unet", "model.onnx"), (n) => n === `model.${PERTURBED}.weight`, 1.05, 64);
    const viaPort = await localize(broken, adapter("onnxruntime"), ["unet"]);
    const viaOrt = await localize(broken, null, ["unet"]);
    expectPerturbedFirst(viaPort);
    const strip = (r: LocalizeReport) => r.calls.map((c) => ({ ...c, timeMs: 0 }));
    expect(strip(viaPort)).toEqual(strip(viaOrt));
  });
});

describe("ports/openvino (f32)", () => {
  if (!has("openvino")) {
    beforeAll(() =>
      console.log(`port localize: ${PYTHON} has no openvino (.venv/bin/pip install openvino); ports/openvino's --localize is not checked`),
    );
    test.skip("ports/openvino: openvino not installed; skipped", () => {});
    return;
  }
  test("a clean run: every module of every call compared, none over its limit", async () => {
    expectClean(await localize(TINY, adapter("openvino", "--precision", "f32")));
  });
  test("--scale-weight on a U-Net conv is localized to that conv at both U-Net calls", async () => {
    expectPerturbedFirst(
      await localize(TINY, adapter("openvino", "--precision", "f32", "--scale-weight", `model.${PERTURBED}.weight=1.05`), ["unet"]),
    );
  });
});

describe("ports/diffusers (float32, forward hooks)", () => {
  if (!has("diffusers") || !fs.existsSync(path.join(TORCH_MODEL, "unet"))) {
    beforeAll(() =>
      console.log(
        `port localize: no diffusers in ${PYTHON} or no ${TORCH_MODEL} (scripts/make_fixtures.sh); ports/diffusers' --localize is not checked`,
      ),
    );
    test.skip("ports/diffusers: not available; skipped", () => {});
    return;
  }
  test("a clean run: every module of every call compared, none over its limit", async () => {
    const r = await localize(TINY, adapter("diffusers", "--model", TORCH_MODEL, "--dtype", "float32"));
    expectClean(r);
    // by module name where the export has a tensor too: the harness's naming is kept, the port hooked them
    expect(r.calls.every((c) => c.modules.every((m) => m.how === "scope"))).toBe(true);
  });
  test("--scale-weight on a U-Net conv is localized to that conv at both U-Net calls", async () => {
    expectPerturbedFirst(
      await localize(
        TINY,
        adapter("diffusers", "--model", TORCH_MODEL, "--dtype", "float32", "--scale-weight", `${PERTURBED}.weight=1.05`),
        ["unet"],
      ),
    );
  });
});
