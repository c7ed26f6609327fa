/**
 * --localize through a port (protocol 1.1's `modules` operation), Node only (CI has no Python):
 * test/fixtures/ports/node-port.js serves it with onnxruntime-node on the graph's extra outputs.
 * On a copy of the tiny model with one U-Net conv weight scaled, the port names that conv first
 * with ort-node's figures to the bit; a 1.0 port (no `modules`) leaves a coverage gap, not an error;
 * a port that lies about the operation (a module left unaccounted for, a wrong shape) is one line
 * naming the operation and the call, its process group ended and its folder gone.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { parseReportJson } from "../src/conformance/runner";
import { checkHello, PortRuntime } from "../src/runtime/port";
import { runLocalize, LocalizeReport } from "../src/conformance/localize";
import type { ComponentKind } from "../src/pipeline/onnx-model";
import { scaleInitializers, copyModel } from "./helpers/onnx-edit";
import { waitFor } from "./helpers/child-run";
import { withOwnTmpdir } from "./helpers/tmp";

const ROOT = path.resolve(__dirname, "..");
const NODE_PORT = path.join(ROOT, "test", "fixtures", "ports", "node-port.js");
const TINY = path.join(ROOT, "fixtures", "models", "tiny-sd-onnx");
const MODULES = path.join(ROOT, "fixtures", "references", "tiny-sd", "modules");
const PERTURBED = "down_blocks.1.resnets.0.conv1";
const quote = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
const nodePort = (...args: string[]) => [process.execPath, NODE_PORT, ...args].map(quote).join(" ");

/** the ports' temporary folders are made here (os.tmpdir() reads TMPDIR): leftovers are this file's own */
const { tmp, portTmp } = withOwnTmpdir("sdh-port-modules-");

function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) [ZX] /.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** the U-Net calls of the module set, on `dir`, through `runtime` (default ort-node) */
async function localizeUnet(dir: string, runtime?: PortRuntime): Promise<LocalizeReport> {
  try {
    return await runLocalize({
      models: [{ label: "m", dir }],
      moduleReferences: MODULES,
      profile: "fp32",
      threads: 1,
      runtime,
      components: () => new Set<ComponentKind>(["unet"]),
    });
  } finally {
    await runtime?.close();
  }
}

test("a 1.1 handshake names its minor version and the operations whose module outputs it returns; a 1.0 one neither", () => {
  const port = { name: "p", version: "1", device: "cpu", precision: "f32" };
  const components = { unet: { supported: true }, vae_decode: { supported: false, reason: "no" } };
  expect(checkHello({ protocol: 1, port, components })).toMatchObject({ minor: 0, modules: [] });
  expect(checkHello({ protocol: 1, minor: 1, port, components, modules: ["unet"] })).toMatchObject({ minor: 1, modules: ["unet"] });
  // a 1.0 port's extra fields mean nothing
  expect(checkHello({ protocol: 1, port, components, modules: ["unet"] })).toMatchObject({ minor: 0, modules: [] });
  expect(checkHello({ protocol: 1, minor: 1, port, components, modules: ["vae_decode"] })).toBe(
    "its handshake's modules names vae_decode, which it does not run",
  );
  expect(checkHello({ protocol: 1, minor: 1, port, components, modules: ["vae"] })).toMatch(
    /^its handshake's modules names "vae", not an operation/,
  );
  expect(checkHello({ protocol: 1, minor: 1, port, components, modules: "unet" })).toBe(
    "its handshake's modules is not a list of operations",
  );
  expect(checkHello({ protocol: 1, minor: -1, port, components })).toMatch(/^its handshake's minor is "-1", not a whole number >= 0$/);
});

describe("a U-Net conv weight scaled by 1.05 (64 values), localized through the port", () => {
  let viaPort: LocalizeReport;
  let viaOrt: LocalizeReport;
  beforeAll(async () => {
    const broken = copyModel(TINY, tmp, "broken");
    expect(
      scaleInitializers(path.join(broken, "unet", "model.onnx"), (n) => n === `model.${PERTURBED}.weight`, 1.05, 64).map((e) => e.changed),
    ).toEqual([64]);
    viaPort = await localizeUnet(broken, new PortRuntime({ command: nodePort() }));
    viaOrt = await localizeUnet(broken);
  });

  test("names the perturbed conv first at both U-Net calls, every module compared", () => {
    expect(viaPort.calls.map((c) => c.call)).toEqual(["unet:txt2img-pndm-64x64-step00", "unet:txt2img-pndm-64x64-step10"]);
    for (const c of viaPort.calls) {
      expect(c.error).toBeUndefined();
      expect(c.unmapped).toEqual([]);
      expect(c.modules.length).toBe(c.total);
      expect(c.first?.module).toBe(PERTURBED);
      expect(c.growth[0].module).toBe(PERTURBED);
    }
  });

  test("with ort-node's figures, module by module, to the bit", () => {
    const strip = (r: LocalizeReport) => r.calls.map((c) => ({ ...c, timeMs: 0 }));
    expect(strip(viaPort)).toEqual(strip(viaOrt));
  });
});

let n = 0;
async function cli(portArgs: string[], extra: string[] = []) {
  const id = ++n;
  const out = path.join(tmp, `out-${id}`);
  const pidFile = path.join(tmp, `pids-${id}`);
  let err = "";
  const io: CliIO = {
    out: () => {},
    err: (t) => {
      err += t;
    },
    isTTY: false,
  };
  const code = await main(
    [
      "conformance",
      "--port",
      nodePort(...portArgs, "--pid-file", pidFile, "--child"),
      "--out",
      out,
      "--only",
      "vae_decode:64x64",
      "--localize",
      "--threads",
      "1",
      ...extra,
    ],
    io,
  );
  const pids = fs.readFileSync(pidFile, "utf8").split("\n").map(Number);
  await waitFor(
    () => pids.every((p) => !alive(p)),
    () => false,
    3000,
    20,
  );
  return { code, err, pids, report: parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8")) };
}

test("a protocol 1.0 port: --localize is a coverage gap with the reason, the run passes", async () => {
  const { code, err, report } = await cli(["--fault", "minor0@hello"]);
  expect(code).toBe(0);
  expect(report.localize!.calls).toEqual([]);
  const gap = report.coverage!.gaps.find((g) => g.what.startsWith("--localize"));
  expect(gap).toEqual({
    what: "--localize text_encoder, unet, vae_decoder, vae_encoder",
    why: "not covered by this port (it speaks protocol 1.0; the modules operation came in 1.1)",
  });
  expect(err).toContain(
    "not covered: --localize text_encoder, unet, vae_decoder, vae_encoder: not covered by this port (it speaks protocol 1.0; the modules operation came in 1.1)",
  );
  expect(err).not.toMatch(/warning: --localize/);
});

test("a module the port says it keeps back is unmapped with its reason; the others are compared", async () => {
  const { code, report } = await cli(["--fault", "missing@modules:unet"]);
  expect(code).toBe(0);
  for (const c of report.localize!.calls.filter((x) => x.component === "unet")) {
    expect(c.error).toBeUndefined();
    expect(c.unmapped).toEqual([{ module: "time_proj", why: "the port: node-port keeps this one to itself" }]);
    expect(c.modules.length).toBe(c.total - 1);
  }
});

describe.each([
  [
    "shape@modules:unet",
    /^port node-port: unet modules for unet:txt2img-pndm-64x64-step00: module time_proj has shape \[32\], the module's output is \[2, 16\]$/,
  ],
  [
    "drop@modules:unet",
    /^port node-port: unet modules for unet:txt2img-pndm-64x64-step00: its reply has neither module time_proj nor a reason in missing \(it returned 524 of 525 modules\)$/,
  ],
])("a port that lies about modules (%s)", (fault, message) => {
  test("one line naming the operation and the call; later calls name the first failure; group ended, folder gone", async () => {
    const { code, err, pids, report } = await cli(["--fault", fault]);
    // the cases ran before --localize; the text encoder was localized before the U-Net: warnings, not a new exit code
    expect(code).toBe(0);
    const calls = report.localize!.calls;
    expect(calls.find((c) => c.component === "text_encoder")!.error).toBeUndefined();
    const [first, second] = calls.filter((c) => c.component === "unet");
    expect(first.error).toMatch(message);
    expect(second.error).toMatch(message);
    expect(calls.find((c) => c.component === "vae_decoder")!.error).toMatch(/^port node-port: call: not running/);
    expect(err).toMatch(
      /warning: --localize: tiny-sd-onnx unet: 2 module calls not run: port node-port: unet modules for unet:txt2img-pndm-64x64-step00: /,
    );
    expect(pids.length).toBe(2);
    expect(pids.filter(alive)).toEqual([]);
    expect(fs.readdirSync(portTmp)).toEqual([]);
  });
});
