/**
 * A port that breaks the protocol (test/fixtures/ports/node-port.js --fault KIND@PHASE): one that
 * crashes, hangs past --port-timeout, writes garbage on stdout, replies without its output file,
 * returns a wrong shape or dtype, lies in its handshake, or returns NaN. Each gives one line naming
 * the port, the operation and what was wrong (and the runner's line names the case); the port's
 * whole process group (a child it started included) is ended; its temporary folder is gone. A
 * SIGTERM to the CLI while a port call hangs ends the port and its folder too. Node only (CI).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { parseReportJson } from "../src/conformance/runner";
import { runChild, waitFor } from "./helpers/child-run";
import { withOwnTmpdir } from "./helpers/tmp";

const ROOT = path.resolve(__dirname, "..");
const NODE_PORT = path.join(ROOT, "test", "fixtures", "ports", "node-port.js");
const BIN = path.join(ROOT, "bin", "sd-harness.js");
const quote = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
const CASES = ["--only", "unet:txt2img-euler-a-64x64-step00", "vae_decode:64x64"];

/** the ports' temporary folders are made here (os.tmpdir() reads TMPDIR), so leftovers can be seen */
const { tmp, portTmp } = withOwnTmpdir("sdh-port-faults-");

/** alive and not a zombie (a killed grandchild waits for init to reap it) */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

let n = 0;
async function runFault(fault: string, extra: string[] = []) {
  const id = ++n;
  const pidFile = path.join(tmp, `pids-${id}`);
  const out = path.join(tmp, `out-${id}`);
  const port = [process.execPath, NODE_PORT, "--fault", fault, "--pid-file", pidFile, "--child"].map(quote).join(" ");
  let err = "";
  const io: CliIO = {
    out: () => {},
    err: (t) => {
      err += t;
    },
    isTTY: false,
  };
  const code = await main(["conformance", "--port", port, "--out", out, ...CASES, ...extra], io);
  const pids = fs.existsSync(pidFile) ? fs.readFileSync(pidFile, "utf8").split("\n").map(Number) : [];
  // SIGKILL is delivered at once, but the kernel may take a moment to tear a process down
  await waitFor(
    () => pids.every((p) => !alive(p)),
    () => false,
    3000,
    20,
  );
  const report = fs.existsSync(path.join(out, "report.json"))
    ? parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8"))
    : null;
  return { code, err, pids, report };
}

function expectCleanedUp(pids: number[]) {
  expect(pids.length).toBe(2); // the port and the child it started
  expect(pids.filter(alive)).toEqual([]);
  expect(fs.readdirSync(portTmp)).toEqual([]);
}

const UNET = "unet:txt2img-euler-a-64x64-step00";

describe.each([
  ["crash@run:unet", /port node-port: unet run: the port exited \(code 3\)/],
  ["hang@run:unet", /port node-port: unet run: no reply within 8 s \(--port-timeout\); its process group was ended/],
  [
    "garbage@run:unet",
    /port node-port: unet run: wrote a line on stdout that is not a protocol reply: "loading weights\.\.\. 100%" \(a port logs to stderr\)/,
  ],
  ["wrongid@run:unet", /port node-port: unet run: replied to request \d+, which is not pending/],
  ["nofile@run:unet", /port node-port: unet run: replied ok but wrote no output file \d+-out\.safetensors/],
  [
    "shape@run:unet",
    /port node-port: unet run: output out_sample has shape \[512\], expected \[2, 4, 8, 8\] for inputs sample \[2, 4, 8, 8\]/,
  ],
  ["dtype@run:unet", /port node-port: unet run: output out_sample is float64, but the port declared float32 at load/],
])("a port that breaks a run (%s)", (fault, message) => {
  test("one line naming the operation and the case; later calls name the first failure; group ended, folder gone", async () => {
    const { code, err, pids, report } = await runFault(fault, ["--port-timeout", "8"]);
    expect(code).toBe(1);
    const unet = report!.results.find((r) => r.id === UNET)!;
    expect(unet.status).toBe("error");
    expect(unet.message).toMatch(message);
    expect(unet.message).not.toContain("\n");
    // the runner's line names the case beside the port's message
    const line = err.split("\n").find((l) => l.includes(UNET))!;
    expect(line).toMatch(/^ERROR /);
    expect(line).toMatch(message);
    // the VAE decode after it: the port is not restarted behind the user's back
    const vae = report!.results.find((r) => r.id === "vae_decode:64x64")!;
    expect(vae).toMatchObject({
      status: "error",
      message: expect.stringMatching(/^port node-port: vae_decode run: not running: unet run: /),
    });
    expectCleanedUp(pids);
  });
});

describe.each([
  ["crash@hello", /^sd-harness: error: port node node-port\.js: handshake: the port exited \(code 3\)\n$/],
  [
    "hang@hello",
    /^sd-harness: error: port node node-port\.js: handshake: no reply within 8 s \(--port-timeout\); its process group was ended\n$/,
  ],
  [
    "garbage@hello",
    /^sd-harness: error: port node node-port\.js: handshake: wrote a line on stdout that is not a protocol reply: "loading weights\.\.\. 100%"/,
  ],
  ["protocol@hello", /^sd-harness: error: port node node-port\.js: handshake: speaks protocol 99, sd-harness speaks 1\n$/],
  [
    "refuse@load:unet",
    /^sd-harness: error: port node-port: unet load: refused \(this port declines\), although its handshake lists unet as supported\n$/,
  ],
  ["crash@load:text_encoder", /^sd-harness: error: port node-port: text_encoder load: the port exited \(code 3\)\n$/],
])("a port that fails before any case (%s)", (fault, message) => {
  test("one line, exit 2, no report; group ended, folder gone", async () => {
    const { code, err, pids, report } = await runFault(fault, ["--port-timeout", "8", "--quiet"]);
    expect(code).toBe(2);
    expect(err).toMatch(message);
    expect(report).toBeNull();
    expectCleanedUp(pids);
  });
});

test("a port that returns NaN: judged like any runtime's numbers (the case fails, naming NaN), the port goes on", async () => {
  const { code, report, pids } = await runFault("nan@run:unet");
  expect(code).toBe(1);
  const unet = report!.results.find((r) => r.id === UNET)!;
  expect(unet.status).toBe("fail");
  expect(JSON.stringify(unet.metrics)).toMatch(/"nanCount":512/);
  expect(report!.results.find((r) => r.id === "vae_decode:64x64")!.status).toBe("pass");
  expectCleanedUp(pids);
});

describe("SIGTERM while a port call hangs (the real CLI, dist/)", () => {
  beforeAll(() => {
    execFileSync(process.execPath, [path.join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", path.join(ROOT, "tsconfig.json")], {
      stdio: "pipe",
    });
  }, 180_000);

  test("exits 143; the port's group is ended and its folder removed", async () => {
    const pidFile = path.join(tmp, "pids-sigterm");
    const port = [process.execPath, NODE_PORT, "--fault", "hang@run:unet", "--pid-file", pidFile, "--child"].map(quote).join(" ");
    const r = await runChild({
      cmd: process.execPath,
      args: [BIN, "conformance", "--port", port, "--out", path.join(tmp, "out-sigterm"), ...CASES],
      cwd: ROOT,
      env: { TMPDIR: portTmp },
      timeoutMs: 60_000,
      during: async (c) => {
        // the U-Net call is pending once the port has made its folder and the harness its inputs file
        await waitFor(
          () =>
            fs.existsSync(pidFile) &&
            fs.readdirSync(portTmp).some((d) => fs.readdirSync(path.join(portTmp, d)).some((f) => f.endsWith("-in.safetensors"))),
          c.exited,
          30_000,
          20,
        );
        c.signal("SIGTERM");
      },
    });
    expect(r.code).toBe(143);
    expect(r.stderr).toMatch(/terminated \(SIGTERM\); no partial output was written/);
    const pids = fs.readFileSync(pidFile, "utf8").split("\n").map(Number);
    await waitFor(
      () => pids.every((p) => !alive(p)),
      () => false,
      3000,
      20,
    );
    expectCleanedUp(pids);
  });
});
