/**
 * The conformance suite on another runtime: `conformance --runtime ort-wasm` passes the bundled set
 * and every report names the runtime; a fault injected into one runtime's outputs (a wrapper that
 * scales one component's output, as a faulty kernel would) is caught by the stages that run it and
 * by no other; report merge refuses shards of different runtimes; an unknown runtime is one line.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { parseReportJson, runConformance } from "../src/conformance/runner";
import { createRuntime } from "../src/runtime/index";
import type { Runtime, RuntimeSession, RuntimeTensor, SessionSettings } from "../src/runtime/types";

const ROOT = path.resolve(__dirname, "..");
const REFS = path.join(ROOT, "fixtures", "references", "tiny-sd", "cpu");
const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");

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

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-rt-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test("conformance --runtime ort-wasm passes the bundled set, and every report names the runtime", async () => {
  const io = capture();
  const out = path.join(tmp, "wasm");
  const code = await main(["conformance", "--runtime", "ort-wasm", "--out", out, "--quiet", "--threads", "2"], io);
  const report = parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8"));
  const bad = report.results.filter((r) => r.status !== "pass").map((r) => `${r.id}: ${r.status} ${r.message ?? ""}`);
  expect(bad).toEqual([]);
  expect(code).toBe(0);
  const rt = report.models[0].runtime!;
  expect(rt).toMatchObject({ runtime: "ort-wasm", package: "onnxruntime-web", executionProvider: "wasm", threads: 2 });
  expect(report.run.versions["onnxruntime-web"]).toBe(rt.version);
  expect(io.stderr()).toMatch(/^PASS: .* on ort-wasm \(onnxruntime-web [0-9.]+, wasm, WebAssembly in Node/m);
  expect(fs.readFileSync(path.join(out, "summary.md"), "utf8")).toContain("on runtime ort-wasm (onnxruntime-web");
  expect(fs.readFileSync(path.join(out, "junit.xml"), "utf8")).toMatch(/<property name="runtime" value="ort-wasm \(onnxruntime-web/);
  expect(fs.readFileSync(path.join(out, "report.html"), "utf8")).toMatch(/<th>Runtime<\/th>[\s\S]*ort-wasm \(onnxruntime-web/);
  const csv = fs.readFileSync(path.join(out, "results.csv"), "utf8").trim().split("\r\n");
  expect(csv[0].split(",").pop()).toBe("runtime");
  expect(
    csv.slice(1).every((line) => line.endsWith('"ort-wasm (onnxruntime-web ' + rt.version + ", wasm, " + rt.device + ', 2 threads)"')),
  ).toBe(true);
  // worst excess per stage, for conformance/README.md's table
  const worst: Record<string, number> = {};
  for (const r of report.results) {
    for (const m of Object.values(r.metrics)) {
      const e = (m as { excess?: number }).excess;
      if (e !== undefined && Number.isFinite(e)) worst[r.stage] = Math.max(worst[r.stage] ?? 0, e);
    }
  }
  console.log(
    `ort-wasm: ${report.results.length} cases in ${(report.run.durationMs / 1000).toFixed(1)} s, worst excess per stage ${JSON.stringify(Object.fromEntries(Object.entries(worst).map(([k, v]) => [k, Number(v.toPrecision(3))])))}`,
  );
});

/** A runtime that scales every output of one component by `factor`: a fault in that runtime alone. */
class ScaleOneComponent implements Runtime {
  readonly name: string;
  constructor(
    private readonly inner: Runtime,
    private readonly component: string,
    private readonly factor: number,
  ) {
    this.name = inner.name;
  }

  async load(file: string, settings: SessionSettings): Promise<RuntimeSession> {
    const s = await this.inner.load(file, settings);
    if (path.basename(path.dirname(file)) !== this.component) return s;
    const factor = this.factor;
    return {
      inputs: s.inputs,
      outputs: s.outputs,
      release: () => s.release(),
      async run(feeds, outputs) {
        const r = await s.run(feeds, outputs);
        const out: Record<string, RuntimeTensor> = {};
        for (const [k, t] of Object.entries(r))
          out[k] = t.dtype === "float32" ? { ...t, data: (t.data as Float32Array).map((v) => v * factor) } : t;
        return out;
      },
    };
  }

  describe() {
    return this.inner.describe();
  }

  close() {
    return this.inner.close();
  }
}

test("a fault injected into one runtime's U-Net outputs (x 1.001) fails the U-Net cases and nothing upstream", async () => {
  const runtime = new ScaleOneComponent(createRuntime("ort-wasm"), "unet", 1.001);
  try {
    const report = await runConformance({
      models: [{ label: "faulty", dir: TINY, inpaintDir: null }],
      references: REFS,
      profile: "fp32",
      only: ["unet:*", "text_encoder:*", "vae_decode:*"],
      outDir: null,
      threads: 2,
      runtime,
    });
    const byStage = (stage: string) => report.results.filter((r) => r.stage === stage);
    // every U-Net case that ran (the inpainting ones skip: no inpainting model given), teacher-forced and free-running
    const unet = report.results.filter((r) => (r.stage === "unet" || r.stage === "unet_free") && r.status !== "skip");
    expect(unet.length).toBeGreaterThan(20);
    expect(unet.filter((r) => r.status !== "fail").map((r) => r.id)).toEqual([]);
    for (const stage of ["text_encoder", "vae_decode"]) expect(byStage(stage).every((r) => r.status === "pass")).toBe(true);
    expect(report.summary.verdict).toBe("fail");
  } finally {
    await runtime.close();
  }
});

test("report merge refuses shards run on different runtimes", async () => {
  const a = path.join(tmp, "shard-node");
  const b = path.join(tmp, "shard-wasm");
  expect(await main(["conformance", "--only", "vae_decode:*", "--shard", "1/2", "--out", a, "--quiet", "--threads", "2"], capture())).toBe(
    0,
  );
  expect(
    await main(
      ["conformance", "--only", "vae_decode:*", "--shard", "2/2", "--runtime", "ort-wasm", "--out", b, "--quiet", "--threads", "2"],
      capture(),
    ),
  ).toBe(0);
  const io = capture();
  const code = await main(["report", "merge", "--out", path.join(tmp, "merged"), a, b], io);
  expect(code).toBe(2);
  expect(io.stderr().trim().split("\n")).toHaveLength(1);
  expect(io.stderr()).toMatch(/differ in runtime \(ort-node onnxruntime-node [0-9.]+ cpu vs ort-wasm onnxruntime-web [0-9.]+ wasm\)/);
});

test("an unknown --runtime is one line, exit 2, on every command that takes it", async () => {
  for (const cmd of [
    ["conformance", "--only", "rng:*"],
    ["generate", "--prompt", "x", "--steps", "1", "--out", path.join(tmp, "x.png")],
    ["sensitivity", "--budget", "1", "--out", path.join(tmp, "sens")],
  ]) {
    const io = capture();
    expect(await main([...cmd, "--runtime", "onnxruntime-gpu"], io)).toBe(2);
    expect(io.stderr().trim().split("\n")).toHaveLength(1);
    expect(io.stderr()).toContain(
      '--runtime: unknown runtime "onnxruntime-gpu"; known: ort-node, ort-wasm, chromium-wasm, chromium-webgpu',
    );
  }
  expect(fs.existsSync(path.join(tmp, "sens"))).toBe(false);
});
