/**
 * Bad input that needs more than one stderr line to judge, run in-process (main(argv, io)): a
 * reference set whose cases are each broken in one way (one ERROR line per case, the report's
 * counts), and --verbose's stack trace. Every one-line refusal is a row of the child-process matrix
 * in test/bad-input-matrix.test.ts (and test/bad-input-reports.test.ts for reports).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ExitCode } from "../src/errors";
import { encodeSafetensors } from "../src/tensor/safetensors";
import { ROOT, TINY, REFS } from "./helpers/fixtures";
import { cli } from "./helpers/cli";

const BROKEN = path.join(ROOT, "fixtures", "broken");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sd-harness-bad-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let n = 0;
const fresh = (name: string) => path.join(tmp, `${name}-${n++}`);

/** A real copy (symlinks dereferenced, so breaking a file never touches the fixture). */
function copyModel(name: string): string {
  const dest = fresh(name);
  fs.cpSync(TINY, dest, { recursive: true, dereference: true });
  return dest;
}

/** Replace a file in a temp copy (unlinked first, so nothing is written through a link). */
function replaceFile(file: string, from: string | Buffer): void {
  fs.rmSync(file, { force: true });
  if (typeof from === "string") fs.copyFileSync(from, file);
  else fs.writeFileSync(file, from);
}

/** A copy whose U-Net is fixtures/broken/fast-unet: loads in milliseconds instead of seconds. */
function fastModel(name: string): string {
  const dir = copyModel(name);
  replaceFile(path.join(dir, "unet", "model.onnx"), path.join(BROKEN, "fast-unet", "model.onnx"));
  return dir;
}

/** generate argv with defaults (--steps 2 --seed 1) that `rest` may override */
function gen(model: string, ...rest: string[]): string[] {
  const defaults = ["--steps", "2", "--seed", "1"].filter((v, i, a) => !rest.includes(i % 2 === 0 ? v : a[i - 1]));
  return ["generate", "--model", model, "--prompt", "a cat", ...defaults, ...rest];
}

let fast: string;
beforeAll(() => {
  fast = fastModel("fast");
});

describe("reference sets", () => {
  let refs: string;
  beforeAll(() => {
    // A reference set of rng cases (no model work), each broken in one way.
    refs = fresh("refs");
    fs.mkdirSync(path.join(refs, "rng"), { recursive: true });
    const manifest = JSON.parse(fs.readFileSync(path.join(REFS, "manifest.json"), "utf8"));
    const keep = new Set([
      "rng:seed0-3",
      "rng:seed1-3",
      "rng:seed42-3",
      "rng:seed1234-3",
      "rng:seed42-1",
      "rng:seed42-15",
      "rng:seed42-16",
      "rng:seed42-17",
      "rng:seed4294967295-3",
    ]);
    manifest.cases = manifest.cases.filter((c: { id: string }) => keep.has(c.id));
    const sha = (b: Buffer) => require("node:crypto").createHash("sha256").update(b).digest("hex");
    const f32 = (v: number[]) => ({ dtype: "float32" as const, dims: [v.length], data: Float32Array.from(v) });
    const header = (h: object, dataBytes: number) => {
      const json = Buffer.from(JSON.stringify(h));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length));
      return Buffer.concat([len, json, Buffer.alloc(dataBytes)]);
    };
    const broken: Record<string, Buffer | null> = {
      "rng:seed0-3": null, // wrong hash: the file is intact, the manifest's sha256 is not
      "rng:seed1-3": encodeSafetensors({ other: f32([1, 2, 3]) }), // missing tensor draw0
      "rng:seed42-3": encodeSafetensors({ draw0: { dtype: "float32", dims: [3, 1], data: new Float32Array(3) } }), // shape
      "rng:seed1234-3": encodeSafetensors({ draw0: { dtype: "float64", dims: [3], data: new Float64Array(3) } }), // dtype
      "rng:seed42-1": encodeSafetensors({ draw0: f32([1]) }).subarray(0, 20), // truncated header
      "rng:seed42-15": (() => {
        const b = Buffer.alloc(16);
        b.writeBigUInt64LE(1n << 62n);
        return b;
      })(), // huge header length
      "rng:seed42-16": header({ draw0: { dtype: "F32", shape: [15], data_offsets: [-4, 56] } }, 60), // negative offset
      "rng:seed42-17": header(
        { draw0: { dtype: "F32", shape: [16], data_offsets: [0, 64] }, b: { dtype: "F32", shape: [2], data_offsets: [56, 64] } },
        64,
      ), // overlap
    };
    for (const c of manifest.cases) {
      const src = fs.readFileSync(path.join(REFS, c.file));
      const bytes = broken[c.id] ?? src;
      fs.writeFileSync(path.join(refs, c.file), bytes);
      c.sha256 = c.id === "rng:seed0-3" ? "0".repeat(64) : sha(bytes);
    }
    fs.writeFileSync(path.join(refs, "manifest.json"), JSON.stringify(manifest));
  });

  test("each broken case is an ERROR naming its file; the intact one passes; exit 1", async () => {
    const out = fresh("report");
    const r = await cli(["conformance", "--model", fast, "--references", refs, "--only", "rng:*", "--out", out, "--threads", "1"]);
    expect(r.code).toBe(ExitCode.failed);
    expect(r.err).not.toMatch(/^\s+at /m);
    const line = (id: string) => r.err.split("\n").find((l) => l.includes(` ${id}`)) ?? "";
    const rows: [string, RegExp][] = [
      ["rng:seed0-3", /seed0-3\.safetensors: sha256 [0-9a-f]{12}… does not match the manifest's 000000000000…/],
      ["rng:seed1-3", /seed1-3\.safetensors: case rng:seed1-3 has no tensor draw0/],
      ["rng:seed42-3", /seed42-3\.safetensors: tensor draw0 is \[3, 1\], the manifest says \[3\]/],
      ["rng:seed1234-3", /seed1234-3\.safetensors: tensor draw0 is float64, expected float32/],
      ["rng:seed42-1", /seed42-1\.safetensors: not a valid safetensors file: header length \d+ runs past the end/],
      ["rng:seed42-15", /seed42-15\.safetensors: not a valid safetensors file: header length 4611686018427387904 exceeds/],
      ["rng:seed42-16", /seed42-16\.safetensors: not a valid safetensors file: tensor "draw0" has invalid data_offsets \[-4,56\]/],
      ["rng:seed42-17", /seed42-17\.safetensors: not a valid safetensors file: tensors "draw0" and "b" overlap/],
    ];
    for (const [id, re] of rows) {
      expect(line(id)).toMatch(/^ERROR /);
      expect(line(id)).toMatch(re);
    }
    expect(line("rng:seed4294967295-3")).toMatch(/^PASS /);
    const report = JSON.parse(fs.readFileSync(path.join(out, "report.json"), "utf8"));
    expect(report.summary).toMatchObject({ pass: 1, error: 8 });
  });
});

describe("flags", () => {
  const o = () => fresh("o.png");
  test("--verbose adds the stack trace", async () => {
    const r = await cli([...gen(path.join(tmp, "no-such-model"), "--out", o()), "--verbose"]);
    expect(r.code).toBe(ExitCode.usage);
    expect(r.err.split("\n")[0]).toMatch(/^sd-harness: error: .*no-such-model: model folder does not exist$/);
    expect(r.err).toMatch(/^\s+at .*model-folder/m);
  });
});
