/**
 * A run must not phone home or leave files outside its outputs. onnxruntime-node's telemetry (on by
 * default in its native library) wrote $HOME/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,
 * onnxruntime.db} and left $TMPDIR/mat-debug-<pid>.log and $TMPDIR/.ses behind on every run;
 * src/util/telemetry-off.ts switches it off. Here the real CLI runs a full generate and a full
 * conformance with HOME and TMPDIR pointed at empty folders, which must stay empty.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { CliCase, testCliCases } from "./helpers/cli-case";

function walk(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => [path.join(dir, e.name), ...(e.isDirectory() ? walk(path.join(dir, e.name)) : [])]);
}

const isolated = {
  env: {
    HOME: "{dir}/home",
    TMPDIR: "{dir}/tmp",
    TMP: "{dir}/tmp",
    TEMP: "{dir}/tmp",
    XDG_CACHE_HOME: undefined,
    ORT_DISABLE_TELEMETRY: undefined,
  },
  setup: (dir: string) => {
    fs.mkdirSync(path.join(dir, "home"));
    fs.mkdirSync(path.join(dir, "tmp"));
  },
};

function expectEmpty(dir: string): void {
  expect(walk(path.join(dir, "home"))).toEqual([]);
  expect(walk(path.join(dir, "tmp"))).toEqual([]);
}

const cases: CliCase[] = [
  {
    name: "generate leaves HOME and TMPDIR empty",
    ...isolated,
    args: ["generate", "--prompt", "a cat", "--steps", "2", "--seed", "1", "--threads", "1", "--out", "{dir}/out/o.png"],
    setup: (dir) => {
      isolated.setup(dir);
      fs.mkdirSync(path.join(dir, "out"));
    },
    exit: 0,
    stderr: /^seed 1, 2 steps, pndm, 32x32, guidance 2\.5 \(guidance from the model's generation_config\.json\)$/, // the default model, shapes-sd
    check: (dir) => {
      expectEmpty(dir);
      expect(fs.readdirSync(path.join(dir, "out"))).toEqual(["o.png"]);
    },
    timeoutMs: 60_000,
  },
  {
    name: "conformance (every case) leaves HOME and TMPDIR empty",
    ...isolated,
    args: ["conformance", "--out", "{dir}/report", "--threads", "1", "--quiet"],
    exit: 0,
    stderr: /^PASS: \d+ pass, 0 fail/,
    check: (dir) => {
      expectEmpty(dir);
      expect(fs.readdirSync(dir).sort()).toEqual(["home", "report", "tmp"]);
    },
    timeoutMs: 240_000,
  },
];

testCliCases(cases);

test("the library (dist/index.js) creates its sessions with telemetry off too", () => {
  const { spawnSync } = require("node:child_process") as typeof import("node:child_process");
  const os = require("node:os") as typeof import("node:os");
  const { ROOT, TINY } = require("./helpers/fixtures") as typeof import("./helpers/fixtures");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-lib-"));
  try {
    isolated.setup(dir);
    const script = `
      const { StableDiffusionPipeline } = require(${JSON.stringify(path.join(ROOT, "dist", "index.js"))});
      (async () => {
        const p = await StableDiffusionPipeline.load(${JSON.stringify(TINY)}, { threads: 1 });
        await p.release();
        console.log("telemetry variable: " + process.env.ORT_DISABLE_TELEMETRY);
      })();`;
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env))
      if (v !== undefined && k !== "ORT_DISABLE_TELEMETRY" && k !== "XDG_CACHE_HOME") env[k] = v;
    Object.assign(env, {
      HOME: path.join(dir, "home"),
      TMPDIR: path.join(dir, "tmp"),
      TMP: path.join(dir, "tmp"),
      TEMP: path.join(dir, "tmp"),
    });
    const r = spawnSync(process.execPath, ["-e", script], { env, encoding: "utf8", timeout: 60_000 });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("telemetry variable: 1\n");
    expectEmpty(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 90_000);
