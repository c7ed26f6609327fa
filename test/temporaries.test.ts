/**
 * Temporary files of the real CLI (node bin/sd-harness.js as a child process, bounded in time and
 * memory, its peak RSS measured; issue "Reliability, third round"):
 *  - `conformance --localize` writes its graph copy beside the model's own files, so external
 *    weights are found without a copy even when TMPDIR is on another file system (/dev/shm here),
 *    and leaves nothing behind on SIGINT followed by SIGTERM 10 ms later (it left
 *    $TMPDIR/sd-harness-localize-*\/model.onnx every time);
 *  - `sensitivity` copies only the files the model-folder loader and the components read.
 * Each test's measurements are printed at the end (RELIABILITY.md's rows come from them).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { execFileSync } from "node:child_process";
import { ROOT, TINY, REFS } from "./helpers/fixtures";
import { BIN, ensureBuilt } from "./helpers/cli-case";
import { runChild, waitFor, listTree, ChildResult } from "./helpers/child-run";
import { copyModel, externalizeInitializers } from "./helpers/onnx-edit";

const COMPONENT_DIRS = ["text_encoder", "unet", "vae_decoder", "vae_encoder"];
const SHM = fs.existsSync("/dev/shm") && fs.statSync("/dev/shm").dev !== fs.statSync(os.tmpdir()).dev ? "/dev/shm" : null;

let tmp = "";
const shmDirs: string[] = [];
const rows: string[] = [];
beforeAll(() => {
  ensureBuilt();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-temporaries-"));
}, 180_000);
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  for (const d of shmDirs) fs.rmSync(d, { recursive: true, force: true });
  if (rows.length) console.log(`measured (case | exit | peak RSS | time):\n${rows.join("\n")}`);
});

function record(name: string, r: ChildResult): void {
  rows.push(`| ${name} | ${r.code} | ${r.peakRssMb.toFixed(0)} MB | ${r.ms} ms |`);
}

function treeHash(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of listTree(dir)) {
    const p = path.join(dir, rel);
    const st = fs.lstatSync(p);
    if (st.isFile()) out[rel] = crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex");
    else if (st.isSymbolicLink()) out[rel] = `link:${fs.readlinkSync(p)}`;
    else if (!st.isDirectory()) out[rel] = `special:${st.mode}`;
  }
  return out;
}

/** The localize copies under a model folder (beside each component's model.onnx). */
function besideCopies(model: string): string[] {
  return COMPONENT_DIRS.flatMap((c) =>
    fs.existsSync(path.join(model, c))
      ? fs
          .readdirSync(path.join(model, c))
          .filter((n) => n.startsWith(".sd-harness-localize-"))
          .map((n) => `${c}/${n}`)
      : [],
  );
}

function noStack(stderr: string): void {
  expect(stderr).not.toMatch(/^\s+at /m);
  expect(stderr).not.toMatch(/Traceback/);
}

describe("conformance --localize: its temporary model", () => {
  test("SIGINT, then SIGTERM 10 ms later, while the copy exists: exit 130, no copy left beside the model or in TMPDIR", async () => {
    const dir = fs.mkdtempSync(path.join(tmp, "localize-signal-"));
    const model = copyModel(TINY, dir, "model");
    const tmpdir = path.join(dir, "tmp");
    fs.mkdirSync(tmpdir);
    const hashes = treeHash(model);
    let sawCopy = false;
    const r = await runChild({
      cmd: process.execPath,
      args: [
        BIN,
        "conformance",
        "--model",
        model,
        "--references",
        REFS,
        "--only",
        "unet:txt2img-pndm-64x64-step00",
        "--localize",
        "--threads",
        "1",
        "--out",
        path.join(dir, "report"),
      ],
      cwd: dir,
      env: { TMPDIR: tmpdir },
      timeoutMs: 60_000,
      memoryLimitMb: 2048,
      during: async (child) => {
        sawCopy = await waitFor(() => besideCopies(model).length > 0, child.exited, 50_000, 1);
        if (!sawCopy) return;
        child.signal("SIGINT");
        await new Promise((res) => setTimeout(res, 10));
        child.signal("SIGTERM");
      },
    });
    record("localize: SIGINT then SIGTERM 10 ms later", r);
    expect(sawCopy).toBe(true);
    expect(r.timedOut).toBe(false);
    // the two signals land 10 ms apart while the process may be blocked writing the copy; which one
    // it reads first is then not its choice (clean-clone CI runs on 2026-12-07 saw 143 in 2 of 3), so
    // either status, each with its own last line, and everything below holds for both
    expect([130, 143]).toContain(r.code);
    noStack(r.stderr);
    expect(r.stderr.trim().split("\n").pop()).toMatch(
      /^sd-harness: (SIGINT again, exiting now; no partial files left|SIGTERM again, exiting now; no partial files left|interrupted; no partial output was written|terminated \(SIGTERM\); no partial output was written)$/,
    );
    expect(besideCopies(model)).toEqual([]);
    expect(listTree(tmpdir)).toEqual([]);
    expect(treeHash(model)).toEqual(hashes);
    expect(fs.existsSync(path.join(dir, "report", "report.json"))).toBe(false);
  }, 90_000);

  (SHM ? test : test.skip)(
    "external U-Net weights with TMPDIR on another file system (/dev/shm): localized, nothing written to TMPDIR, no weights copied",
    async () => {
      const dir = fs.mkdtempSync(path.join(tmp, "localize-xdev-"));
      const model = copyModel(TINY, dir, "model");
      expect(externalizeInitializers(path.join(model, "unet", "model.onnx"), "model.onnx_data").length).toBeGreaterThan(100);
      const tmpdir = fs.mkdtempSync(path.join(SHM!, "sdh-localize-tmpdir-"));
      shmDirs.push(tmpdir);
      const hashes = treeHash(model);
      let maxInTmp = 0;
      let besideSeen = false;
      const r = await runChild({
        cmd: process.execPath,
        args: [
          BIN,
          "conformance",
          "--model",
          model,
          "--references",
          REFS,
          "--only",
          "unet:txt2img-pndm-64x64-step00",
          "--localize",
          "--threads",
          "1",
          "--quiet",
          "--out",
          path.join(dir, "report"),
        ],
        cwd: dir,
        env: { TMPDIR: tmpdir },
        timeoutMs: 90_000,
        memoryLimitMb: 2048,
        during: async (child) => {
          while (!child.exited()) {
            maxInTmp = Math.max(maxInTmp, listTree(tmpdir).length);
            if (
              fs.existsSync(path.join(model, "unet")) &&
              fs.readdirSync(path.join(model, "unet")).some((n) => n.startsWith(".sd-harness-localize-"))
            )
              besideSeen = true;
            await new Promise((res) => setTimeout(res, 2));
          }
        },
      });
      record("localize: external U-Net weights, TMPDIR on another file system", r);
      expect(r.timedOut).toBe(false);
      expect(r.code).toBe(0);
      noStack(r.stderr);
      expect(besideSeen).toBe(true);
      expect(maxInTmp).toBe(0);
      const report = JSON.parse(fs.readFileSync(path.join(dir, "report", "report.json"), "utf8")) as {
        localize: { calls: { component: string; error?: string; unmapped: unknown[] }[] };
      };
      const unet = report.localize.calls.filter((c) => c.component === "unet");
      expect(unet.map((c) => [c.error, c.unmapped.length])).toEqual([
        [undefined, 0],
        [undefined, 0],
      ]);
      expect(besideCopies(model)).toEqual([]);
      expect(treeHash(model)).toEqual(hashes);
    },
    120_000,
  );

  (SHM ? test : test.skip)(
    "where the model's folder cannot take the copy, TMPDIR on another file system is refused in one line instead of copying the weights",
    () => {
      const dir = fs.mkdtempSync(path.join(tmp, "localize-refuse-"));
      const model = copyModel(TINY, dir, "model");
      externalizeInitializers(path.join(model, "unet", "model.onnx"), "model.onnx_data");
      const tmpdir = fs.mkdtempSync(path.join(SHM!, "sdh-localize-tmpdir-"));
      shmDirs.push(tmpdir);
      // the fallback path on its own (as root the model's folder is always writable): the library in a child process
      const script = (then: string) => `
      const { readGraph, withExtraOutputs, writeTempModel } = require(${JSON.stringify(path.join(ROOT, "dist", "onnx", "graph-outputs.js"))});
      const fs = require("node:fs");
      const path = require("node:path");
      const file = process.argv[1];
      const buf = fs.readFileSync(file);
      const g = readGraph(buf, file);
      try { const t = writeTempModel(file, withExtraOutputs(buf, file, []), g.externalFiles, { beside: false }); ${then} }
      catch (e) { console.log(e.message); }`;
      const unet = path.join(model, "unet", "model.onnx");
      const out = execFileSync(process.execPath, ["-e", script("console.log('written'); t.dispose();"), unet], {
        env: { ...process.env, TMPDIR: tmpdir },
        timeout: 30_000,
        encoding: "utf8",
      });
      expect(out.trim()).toMatch(
        /model\.onnx: --localize needs a temporary model beside its external data \(model\.onnx_data, [\d.]+ MiB\), which is not copied: .* cannot hold a hard link to it \(EXDEV\); set TMPDIR to a folder on the model's file system$/,
      );
      expect(listTree(tmpdir)).toEqual([]);
      // on the same file system the fallback hard-links the data (no copy) and removes its folder
      const same = path.join(dir, "same-fs-tmp");
      fs.mkdirSync(same);
      const ok = execFileSync(
        process.execPath,
        ["-e", script("console.log(fs.statSync(path.join(t.dir, 'model.onnx_data')).nlink); t.dispose();"), unet],
        { env: { ...process.env, TMPDIR: same }, timeout: 30_000, encoding: "utf8" },
      );
      expect(ok.trim()).toBe("2");
      expect(listTree(same)).toEqual([]);
    },
    60_000,
  );
});

test("localize's temporary model is removed by the exit hook when the process exits without disposing of it", () => {
  const dir = fs.mkdtempSync(path.join(tmp, "localize-exit-"));
  const model = copyModel(TINY, dir, "model");
  const script = `
    const { readGraph, withExtraOutputs, writeTempModel } = require(${JSON.stringify(path.join(ROOT, "dist", "onnx", "graph-outputs.js"))});
    const fs = require("node:fs");
    const file = process.argv[1];
    const buf = fs.readFileSync(file);
    const t = writeTempModel(file, withExtraOutputs(buf, file, []), readGraph(buf, file).externalFiles);
    console.log(t.file);
    process.exit(0);`;
  const out = execFileSync(process.execPath, ["-e", script, path.join(model, "vae_decoder", "model.onnx")], {
    env: { ...process.env, TMPDIR: dir },
    timeout: 30_000,
    encoding: "utf8",
  }).trim();
  expect(path.dirname(out)).toBe(path.join(model, "vae_decoder"));
  expect(fs.existsSync(out)).toBe(false);
  expect(besideCopies(model)).toEqual([]);
}, 60_000);

describe("sensitivity: the model copy holds what the components read, nothing else", () => {
  const FAST = [
    "--only",
    "unet.resnet.conv",
    "--cases",
    "unet:txt2img-pndm-64x64-step00",
    "--no-sweep",
    "--budget",
    "30",
    "--relatives",
    "0.1",
    "--threads",
    "1",
  ];
  const sensitivity = (name: string, dir: string, args: string[], during?: Parameters<typeof runChild>[0]["during"]) =>
    runChild({
      cmd: process.execPath,
      args: [BIN, "sensitivity", "--references", REFS, ...args, "--out", path.join(dir, `out-${rows.length}`)],
      cwd: dir,
      env: { TMPDIR: path.join(dir, "tmp") },
      timeoutMs: 90_000,
      memoryLimitMb: 2048,
      during,
    }).then((r) => {
      record(name, r);
      return r;
    });
  const caseDir = (name: string) => {
    const dir = fs.mkdtempSync(path.join(tmp, `${name}-`));
    fs.mkdirSync(path.join(dir, "tmp"));
    return dir;
  };

  test("a 300 MB pytorch_model.bin, a FIFO and symlink loops beside the models are neither copied nor followed: exit 0", async () => {
    const dir = caseDir("sens-extras");
    const model = copyModel(TINY, dir, "model");
    const fd = fs.openSync(path.join(model, "unet", "pytorch_model.bin"), "w");
    fs.ftruncateSync(fd, 300 * 2 ** 20); // sparse: 300 MB to read, none on disk
    fs.closeSync(fd);
    execFileSync("mkfifo", [path.join(model, "extra.fifo")]);
    fs.symlinkSync(".", path.join(model, "cycle"));
    fs.symlinkSync("self", path.join(model, "self"));
    fs.symlinkSync("..", path.join(model, "tokenizer", "up"));
    let copied: string[] = [];
    const r = await sensitivity(
      "sensitivity: pytorch_model.bin, a FIFO and symlink loops in the folder",
      dir,
      ["--model", model, ...FAST],
      async (child) => {
        while (!child.exited()) {
          const seen = listTree(path.join(dir, "tmp"));
          if (seen.length > copied.length) copied = seen;
          await new Promise((res) => setTimeout(res, 5));
        }
      },
    );
    expect(r.timedOut).toBe(false);
    expect(r.code).toBe(0);
    noStack(r.stderr);
    const names = copied.map((p) => path.basename(p));
    expect(names).toContain("model.onnx"); // the copy was seen
    for (const n of ["pytorch_model.bin", "extra.fifo", "cycle", "self", "up"]) expect(names).not.toContain(n);
    expect(listTree(path.join(dir, "tmp"))).toEqual([]);
  }, 120_000);

  for (const [what, make, says] of [
    ["a FIFO", (f: string) => execFileSync("mkfifo", [f]), /not a regular file \(a FIFO\)/],
    ["/dev/zero", (f: string) => fs.symlinkSync("/dev/zero", f), /not a regular file \(a device or socket\)/],
  ] as const) {
    test(`${what} where the tokenizer's special_tokens_map.json is expected is refused in one line, exit 2`, async () => {
      const dir = caseDir("sens-special");
      const model = copyModel(TINY, dir, "model");
      const file = path.join(model, "tokenizer", "special_tokens_map.json");
      fs.rmSync(file);
      make(file);
      const r = await sensitivity(`sensitivity: tokenizer/special_tokens_map.json is ${what}`, dir, ["--model", model, ...FAST]);
      expect(r.timedOut).toBe(false);
      expect(r.code).toBe(2);
      noStack(r.stderr);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr.trim()).toMatch(
        new RegExp(`^sd-harness: error: .*special_tokens_map\\.json: ${says.source}; it is the tokenizer's configuration$`),
      );
      expect(r.peakRssMb).toBeLessThan(300);
      expect(listTree(path.join(dir, "tmp"))).toEqual([]);
    }, 120_000);
  }

  test("inpainting cases are said to be left out for lack of an inpainting model; with --inpaint-model they run and its U-Net is probed", async () => {
    const dir = caseDir("sens-inpaint");
    const model = copyModel(TINY, dir, "model");
    const cases = ["--cases", "unet:inpaint-pndm-64x64-step00"];
    const without = await sensitivity("sensitivity: an inpainting case without --inpaint-model", dir, [
      "--model",
      model,
      ...FAST,
      ...cases,
    ]);
    expect(without.code).toBe(0);
    expect(without.stderr).toMatch(/^control: .*; 1 case left out: 1 skipped: needs an inpainting model \(--inpaint-model\)$/m);
    expect(without.stderr).not.toMatch(/not passing unperturbed/);
    const out = path.join(dir, "with");
    const r = await runChild({
      cmd: process.execPath,
      args: [
        BIN,
        "sensitivity",
        "--references",
        REFS,
        "--model",
        model,
        "--inpaint-model",
        path.join(ROOT, "fixtures", "models", "tiny-sd-inpaint-onnx"),
        ...FAST,
        ...cases,
        "--tensors",
        "inpaint:*",
        "--out",
        out,
      ],
      cwd: dir,
      env: { TMPDIR: path.join(dir, "tmp") },
      timeoutMs: 90_000,
      memoryLimitMb: 2048,
    });
    record("sensitivity: --inpaint-model probes the inpainting U-Net", r);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^control: .*; no case left out$/m);
    const report = JSON.parse(fs.readFileSync(path.join(out, "sensitivity.json"), "utf8")) as {
      model: { inpaintDir?: string };
      probes: { tensor: string; casesRun: number; casesUnmoved: number }[];
    };
    expect(report.model.inpaintDir).toBeDefined();
    const probes = report.probes.filter((p) => p.tensor.startsWith("inpaint:"));
    expect(probes.length).toBeGreaterThan(0);
    // the inpainting case moved (the txt2img case, on the other U-Net, did not)
    expect(probes.every((p) => p.casesRun - p.casesUnmoved >= 1)).toBe(true);
    expect(listTree(path.join(dir, "tmp"))).toEqual([]);
  }, 180_000);
});
