/**
 * Ports that are not ONNX Runtime in process: `conformance --port "COMMAND"` (src/runtime/port.ts,
 * docs/port-protocol.md). A port in Node (test/fixtures/ports/node-port.js, onnxruntime-node behind
 * the protocol) gives ort-node's figures bit for bit; components it leaves out are "not covered"
 * skips with its reason; the Python reference adapter (ports/onnxruntime) gives the same figures
 * where .venv exists (CI has no Python: skipped there with a notice).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { parseReportJson } from "../src/conformance/runner";
import { splitCommand, checkHello } from "../src/runtime/port";
import type { Report } from "../src/conformance/types";
import { withOwnTmpdir } from "./helpers/tmp";

const ROOT = path.resolve(__dirname, "..");
const NODE_PORT = path.join(ROOT, "test", "fixtures", "ports", "node-port.js");
const PYTHON = path.join(ROOT, ".venv", "bin", "python");
const quote = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
export const nodePort = (...args: string[]) => [process.execPath, NODE_PORT, ...args].map(quote).join(" ");

/** a few cases of every model stage, and one of each model-free stage */
const SUBSET = [
  "--only",
  "text_encoder:batch2",
  "unet:txt2img-euler-a-64x64-step00",
  "vae_*:64x64",
  "end_to_end:txt2img-pndm-clipskip1",
  "end_to_end:img2img-pndm-strength0.6",
  "tokenizer:*",
  "rng:*",
];

function capture(): CliIO & { stderr: () => string } {
  let err = "";
  return {
    out: () => {},
    err: (t) => {
      err += t;
    },
    isTTY: false,
    stderr: () => err,
  };
}

/** the ports' temporary folders are made here (os.tmpdir() reads TMPDIR): leftovers are this file's own */
const { tmp, portTmp } = withOwnTmpdir("sdh-port-");

async function run(name: string, extra: string[]): Promise<{ code: number; err: string; report: Report }> {
  const io = capture();
  const out = path.join(tmp, name);
  const code = await main(["conformance", "--out", out, "--quiet", ...SUBSET, ...extra], io);
  return { code, err: io.stderr(), report: parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8")) };
}

/** every metric of every case the port judged, by case and tensor: the port's and the baseline's */
function figures(port: Report, base: Report): [Record<string, unknown>, Record<string, unknown>] {
  const a: Record<string, unknown> = {};
  const b: Record<string, unknown> = {};
  for (const x of port.results) {
    if (x.status === "skip") continue;
    a[x.id] = x.metrics;
    b[x.id] = base.results.find((y) => y.id === x.id)?.metrics;
  }
  expect(Object.keys(a).length).toBeGreaterThanOrEqual(7);
  return [a, b];
}

let baseline: Report;
beforeAll(async () => {
  baseline = (await run("ort-node", [])).report;
});

test("splitCommand splits as a shell would, without expanding anything", () => {
  expect(splitCommand(`python3 'my port.py' --a "b \\"c\\"" d\\ e $HOME`)).toEqual([
    "python3",
    "my port.py",
    "--a",
    'b "c"',
    "d e",
    "$HOME",
  ]);
  expect(() => splitCommand("  ")).toThrow(/--port: empty command/);
  expect(() => splitCommand("python 'x")).toThrow(/--port: unterminated single quote/);
});

test("a handshake is checked field by field; what it leaves out is not covered, with a reason", () => {
  const port = { name: "p", version: "1", device: "cpu", precision: "f32" };
  const ok = checkHello({ protocol: 1, port, components: { unet: { supported: true }, vae_decode: { supported: false } } });
  expect(ok).toMatchObject({
    name: "p",
    backend: "port",
    components: { unet: null, vae_decode: "the port gave no reason", text_encoder: "the port's handshake does not list it" },
  });
  expect(checkHello({ protocol: 2, port, components: {} })).toBe("speaks protocol 2, sd-harness speaks 1");
  expect(checkHello({ protocol: 1, port: { ...port, device: "" }, components: {} })).toBe(
    "its handshake's port.device is not a non-empty string",
  );
  expect(checkHello({ protocol: 1, port, components: { vae: { supported: true } } })).toMatch(
    /^its handshake names an unknown component "vae" \(protocol 1 has text_encoder, unet, vae_decode, vae_encode\)$/,
  );
  expect(checkHello({ protocol: 1, port, components: { unet: true } })).toBe(
    'its handshake\'s components.unet is not {"supported": true|false, ...}',
  );
  expect(checkHello({ protocol: 1, port })).toBe('its handshake has no "components" object');
});

test("a port in Node gives ort-node's figures bit for bit; the stages of sd-harness's own code are not covered", async () => {
  const { code, err, report } = await run("node-port", ["--port", nodePort()]);
  expect(code).toBe(0);
  const judged = report.results.filter((r) => r.status !== "skip");
  expect(judged.every((r) => r.status === "pass")).toBe(true);
  const [ours, base] = figures(report, baseline);
  expect(ours).toEqual(base);
  // tokenizer / rng run no component: skipped with the reason, never run as if they judged the port
  const own = report.results.filter((r) => r.stage === "tokenizer" || r.stage === "rng");
  expect(own.length).toBeGreaterThan(0);
  for (const r of own)
    expect(r).toMatchObject({ status: "skip", message: expect.stringMatching(/^not covered: this stage runs sd-harness's own code/) });
  expect(report.models[0].runtime).toMatchObject({
    runtime: "port",
    package: "node-port",
    version: "1.0.0",
    device: "cpu (test)",
    executionProvider: expect.stringMatching(/^onnxruntime-node .*, precision f32$/),
  });
  expect(report.run.versions["node-port"]).toBe("1.0.0");
  expect(err).toMatch(/^not covered: stage tokenizer: no case judged: not covered: this stage runs sd-harness's own code/m);
  expect(err).toMatch(/^PASS: .* on port \(node-port 1\.0\.0/m);
  expect(fs.readdirSync(portTmp)).toEqual([]);
});

test("components a port does not run are reported as not covered, with its reason, never as errors", async () => {
  const { code, err, report } = await run("node-port-no-encoder", ["--port", nodePort("--fault", "unsupported:vae_encode")]);
  expect(code).toBe(0);
  const reason = "not covered: port node-port does not run vae_encode: node-port leaves vae_encode out";
  for (const id of [
    "vae_encode:64x64",
    "vae_roundtrip:64x64",
    "end_to_end:img2img-pndm-strength0.6",
    "unet:img2img-pndm-strength0.6-free",
  ]) {
    const r = report.results.find((x) => x.id === id);
    if (id.startsWith("unet:img2img")) {
      expect(r).toBeUndefined(); // not in the subset
      continue;
    }
    expect(r).toMatchObject({ status: "skip", message: reason });
  }
  expect(report.results.filter((r) => r.status === "error")).toEqual([]);
  expect(report.results.find((x) => x.id === "vae_decode:64x64")?.status).toBe("pass");
  expect(report.coverage?.gaps).toEqual(expect.arrayContaining([{ what: "stage vae_encode", why: `no case judged: ${reason}` }]));
  expect(err).toContain(`not covered: stage vae_encode: no case judged: ${reason}`);
});

test("--port and --runtime together are refused in one line; a bad --port-timeout names the flag", async () => {
  const io = capture();
  expect(await main(["conformance", "--port", nodePort(), "--runtime", "ort-wasm", "--out", path.join(tmp, "x")], io)).toBe(2);
  expect(io.stderr()).toMatch(
    /^sd-harness: error: --port: --runtime names another runtime; a port runs its components itself, so give one of the two\n$/,
  );
  const io2 = capture();
  expect(await main(["conformance", "--port", nodePort(), "--port-timeout", "soon", "--out", path.join(tmp, "y")], io2)).toBe(2);
  expect(io2.stderr()).toMatch(/^sd-harness: error: --port-timeout: "soon" is not a number/);
});

test("generate --port: the same PNG as ort-node for the same seed; a component the port leaves out is one line, exit 2", async () => {
  const gen = async (name: string, extra: string[]) => {
    const io = capture();
    const out = path.join(tmp, name);
    const code = await main(["generate", "--prompt", "a red cube", "--steps", "2", "--seed", "7", "--out", out, ...extra], io);
    return { code, err: io.stderr(), png: code === 0 ? fs.readFileSync(out) : null };
  };
  const ours = await gen("port.png", ["--port", nodePort()]);
  const ref = await gen("ort.png", []);
  expect(ours.code).toBe(0);
  expect(ours.png!.equals(ref.png!)).toBe(true);
  const none = await gen("none.png", ["--port", nodePort("--fault", "unsupported:vae_decode")]);
  expect(none.code).toBe(2);
  expect(none.err).toMatch(/^sd-harness: error: not covered: port node-port does not run vae_decode: node-port leaves vae_decode out\n$/m);
  expect(fs.existsSync(path.join(tmp, "none.png"))).toBe(false);
  expect(fs.readdirSync(portTmp)).toEqual([]);
});

describe("the Python reference adapter (ports/onnxruntime)", () => {
  if (!fs.existsSync(PYTHON)) {
    beforeAll(() => console.log(`port: ${PYTHON} not found (scripts/setup.sh makes it); ports/onnxruntime is not judged`));
    test.skip("ports/onnxruntime: no .venv/bin/python; skipped", () => {});
    return;
  }
  test("gives the same figures as --runtime ort-node", async () => {
    const { code, report } = await run("ort-python", [
      "--port",
      `${quote(PYTHON)} ${quote(path.join(ROOT, "ports", "onnxruntime", "port.py"))}`,
    ]);
    expect(code).toBe(0);
    const [ours, base] = figures(report, baseline);
    expect(ours).toEqual(base);
    expect(report.models[0].runtime).toMatchObject({ runtime: "port", package: "onnxruntime-python" });
  });
});
