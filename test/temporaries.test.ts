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
  return COMPONENT_DIRS.flatMap((c) => (fs.existsSync(path.join(model, c)) ? fs.readdirSync(path.join(model, c)).filter((n) => n.startsWith(".sd-harness-localize-")).map((n) => `${c}/${n}`) : []));
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
      args: [BIN, "conformance", "--model", model, "--references", REFS, "--only", "unet:txt2img-pndm-64x64-step00", "--localize", "--threads", "1", "--out", path.join(dir, "report")],
      cwd: dir, env: { TMPDIR: tmpdir }, timeoutMs: 60_000, memoryLimitMb: 2048,
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
    expect(r.code).toBe(130);
    noStack(r.stderr);
    expect(r.stderr.trim().split("\n").pop()).toMatch(/^sd-harness: (SIGTERM again, exiting now; no partial files left|interrupted; no partial output was written)$/);
    expect(besideCopies(model)).toEqual([]);
    expect(listTree(tmpdir)).toEqual([]);
    expect(treeHash(model)).toEqual(hashes);
    expect(fs.existsSync(path.join(dir, "report", "report.json"))).toBe(false);
  }, 90_000);

  (SHM ? test : test.skip)("external U-Net weights with TMPDIR on another file system (/dev/shm): localized, nothing written to TMPDIR, no weights copied", async () => {
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
      args: [BIN, "conformance", "--model", model, "--references", REFS, "--only", "unet:txt2img-pndm-64x64-step00", "--localize", "--threads", "1", "--quiet", "--out", path.join(dir, "report")],
      cwd: dir, env: { TMPDIR: tmpdir }, timeoutMs: 90_000, memoryLimitMb: 2048,
      during: async (child) => {
        while (!child.exited()) {
          maxInTmp = Math.max(maxInTmp, listTree(tmpdir).length);
          if (fs.existsSync(path.join(model, "unet")) && fs.readdirSync(path.join(model, "unet")).some((n) => n.startsWith(".sd-harness-localize-"))) besideSeen = true;
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
    const report = JSON.parse(fs.readFileSync(path.join(dir, "report", "report.json"), "utf8")) as { localize: { calls: { component: string; error?: string; unmapped: unknown[] }[] } };
    const unet = report.localize.calls.filter((c) => c.component === "unet");
    expect(unet.map((c) => [c.error, c.unmapped.length])).toEqual([[undefined, 0], [undefined, 0]]);
    expect(besideCopies(model)).toEqual([]);
    expect(treeHash(model)).toEqual(hashes);
  }, 120_000);

  (SHM ? test : test.skip)("where the model's folder cannot take the copy, TMPDIR on another file system is refused in one line instead of copying the weights", () => {
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
    const out = execFileSync(process.execPath, ["-e", script("console.log('written'); t.dispose();"), unet], { env: { ...process.env, TMPDIR: tmpdir }, timeout: 30_000, encoding: "utf8" });
    expect(out.trim()).toMatch(/model\.onnx: --localize needs a temporary model beside its external data \(model\.onnx_data, [\d.]+ MiB\), which is not copied: .* cannot hold a hard link to it \(EXDEV\); set TMPDIR to a folder on the model's file system$/);
    expect(listTree(tmpdir)).toEqual([]);
    // on the same file system the fallback hard-links the data (no copy) and removes its folder
    const same = path.join(dir, "same-fs-tmp");
    fs.mkdirSync(same);
    const ok = execFileSync(process.execPath, ["-e", script("console.log(fs.statSync(path.join(t.dir, 'model.onnx_data')).nlink); t.dispose();"), unet], { env: { ...process.env, TMPDIR: same }, timeout: 30_000, encoding: "utf8" });
    expect(ok.trim()).toBe("2");
    expect(listTree(same)).toEqual([]);
  }, 60_000);
});
