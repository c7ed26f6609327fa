/**
 * Bad input, measured: every row runs the CLI in-process (main(argv, io)) and asserts the exit code
 * and the ONE line on stderr: a single line, no stack trace, naming the file or flag at fault.
 * Broken model folders are temporary copies of the tiny fixture with one part broken; the parts
 * that need an ONNX writer come from fixtures/broken (scripts/make_broken_fixtures.py).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { PNG } from "pngjs";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { ExitCode } from "../src/errors";
import { readPngText } from "../src/pipeline/image";
import { encodeSafetensors } from "../src/tensor/safetensors";
import { ROOT, TINY, REFS } from "./helpers/fixtures";

const BROKEN = path.join(ROOT, "fixtures", "broken");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sd-harness-bad-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Run { code: number; out: string; err: string }

async function cli(argv: string[]): Promise<Run> {
  let out = "";
  let err = "";
  const io: CliIO = { out: (t) => { out += t; }, err: (t) => { err += t; }, isTTY: false };
  const code = await main(argv, io);
  return { code, out, err };
}

/** exactly one line, no stack frames */
function expectOneLine(r: Run, re: RegExp): void {
  const lines = r.err.split("\n").filter((l) => l.length > 0);
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^sd-harness: error: /);
  expect(lines[0]).toMatch(re);
  expect(r.err).not.toMatch(/^\s+at /m);
}

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

function writePngFile(file: string, width: number, height: number, colorType: 0 | 2 | 6): string {
  const png = new PNG({ width, height, colorType });
  for (let i = 0; i < width * height; i++) png.data.set([(i * 7) & 255, (i * 3) & 255, (i * 5) & 255, 255], 4 * i);
  fs.writeFileSync(file, PNG.sync.write(png, { colorType }));
  return file;
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

describe("model folders", () => {
  test("missing folder", async () => {
    const r = await cli(gen(path.join(tmp, "no-such-model"), "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /no-such-model: model folder does not exist/);
  });

  test("a file where the folder should be", async () => {
    const f = fresh("file");
    fs.writeFileSync(f, "x");
    const r = await cli(gen(f, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /not a directory/);
  });

  test("missing component (unet/model.onnx deleted)", async () => {
    const dir = copyModel("no-unet");
    fs.rmSync(path.join(dir, "unet", "model.onnx"));
    const r = await cli(gen(dir, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /unet[/\\]model\.onnx: missing \(the U-Net\)/);
  });

  test("missing config (unet/config.json deleted)", async () => {
    const dir = copyModel("no-unet-config");
    fs.rmSync(path.join(dir, "unet", "config.json"));
    const r = await cli(gen(dir, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /unet[/\\]config\.json: missing/);
  });

  test("config that is not JSON", async () => {
    const dir = copyModel("bad-json");
    replaceFile(path.join(dir, "text_encoder", "config.json"), Buffer.from("{\"hidden_size\": 8,"));
    const r = await cli(gen(dir, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /text_encoder[/\\]config\.json: not valid JSON/);
  });

  describe("external weights (model.onnx + model.onnx_data)", () => {
    function withExternalDecoder(name: string): string {
      const dir = fastModel(name);
      for (const f of ["model.onnx", "model.onnx_data"]) {
        replaceFile(path.join(dir, "vae_decoder", f), path.join(BROKEN, "external-data", "vae_decoder", f));
      }
      return dir;
    }

    test("intact: generates", async () => {
      const dir = withExternalDecoder("ext-ok");
      const out = fresh("ext.png");
      const r = await cli(gen(dir, "--out", out));
      expect(r.err).not.toMatch(/error/);
      expect(r.code).toBe(ExitCode.ok);
      expect(fs.existsSync(out)).toBe(true);
    });

    test("missing model.onnx_data", async () => {
      const dir = withExternalDecoder("ext-missing");
      fs.rmSync(path.join(dir, "vae_decoder", "model.onnx_data"));
      const r = await cli(gen(dir, "--out", fresh("o.png")));
      expect(r.code).toBe(ExitCode.usage);
      expectOneLine(r, /vae_decoder[/\\]model\.onnx: its external weights cannot be loaded/);
    });

    test("truncated model.onnx_data", async () => {
      const dir = withExternalDecoder("ext-truncated");
      const data = path.join(dir, "vae_decoder", "model.onnx_data");
      replaceFile(data, fs.readFileSync(data).subarray(0, 1000));
      const r = await cli(gen(dir, "--out", fresh("o.png")));
      expect(r.code).toBe(ExitCode.usage);
      expectOneLine(r, /vae_decoder[/\\]model\.onnx: its external weights cannot be loaded/);
    });
  });

  test.each([
    ["truncated ONNX", () => fs.readFileSync(path.join(BROKEN, "truncated", "model.onnx")), /text_encoder[/\\]model\.onnx: not a loadable ONNX model/],
    ["text file named model.onnx", () => Buffer.from("this is not a model\n"), /text_encoder[/\\]model\.onnx: not a loadable ONNX model/],
    ["zero-byte ONNX", () => fs.readFileSync(path.join(BROKEN, "zero-byte", "model.onnx")), /text_encoder[/\\]model\.onnx: empty file \(0 bytes\)/],
  ])("%s", async (name, bytes, re) => {
    const dir = fastModel(name.replace(/\W+/g, "-"));
    replaceFile(path.join(dir, "text_encoder", "model.onnx"), bytes());
    const r = await cli(gen(dir, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, re);
  });

  test("an ONNX model of the wrong component (VAE decoder as U-Net)", async () => {
    const dir = copyModel("wrong-part");
    replaceFile(path.join(dir, "unet", "model.onnx"), path.join(TINY, "vae_decoder", "model.onnx"));
    const r = await cli(gen(dir, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /unet[/\\]model\.onnx: has inputs \[latent_sample\], expected an SD 1\.x U-Net/);
  });

  test("SDXL folder (model_index.json) says so", async () => {
    const dir = copyModel("sdxl-index");
    replaceFile(path.join(dir, "model_index.json"), path.join(BROKEN, "sdxl-like", "model_index.json"));
    const r = await cli(gen(dir, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /StableDiffusionXLPipeline; sd-harness runs SD 1\.x folders only/);
  });

  test("SDXL U-Net (text_embeds, time_ids inputs) says so", async () => {
    const dir = copyModel("sdxl-unet");
    replaceFile(path.join(dir, "unet", "model.onnx"), path.join(BROKEN, "sdxl-like", "unet", "model.onnx"));
    const r = await cli(gen(dir, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /unet[/\\]model\.onnx: takes text_embeds \/ time_ids, an SDXL U-Net/);
  });

  test("SDXL U-Net config (addition_embed_type text_time) says so", async () => {
    const dir = copyModel("sdxl-config");
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, "unet", "config.json"), "utf8"));
    replaceFile(path.join(dir, "unet", "config.json"), Buffer.from(JSON.stringify({ ...cfg, addition_embed_type: "text_time", cross_attention_dim: 2048 })));
    const r = await cli(gen(dir, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /unet[/\\]config\.json: an SDXL U-Net/);
  });

  test("SD 2.x configs (cross_attention_dim 1024, v-prediction at 768 px) say so, naming the key and the way out", async () => {
    const dir = copyModel("sd2");
    for (const f of ["unet/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json"]) {
      replaceFile(path.join(dir, f), path.join(BROKEN, "sd2-like", f));
    }
    const r = await cli(gen(dir, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /unet[/\\]config\.json: "cross_attention_dim" is 1024 .*an SD 2\.x model; .*pass --force-sd1/);
  });

  test("an SD 2.x 768-v scheduler config with SD 1.x widths is refused by its prediction type", async () => {
    const dir = copyModel("sd2-v");
    const cfgFile = path.join(dir, "unet", "config.json");
    const cfg = JSON.parse(fs.readFileSync(cfgFile, "utf8"));
    replaceFile(cfgFile, Buffer.from(JSON.stringify({ ...cfg, sample_size: 96 })));
    const sFile = path.join(dir, "scheduler", "scheduler_config.json");
    replaceFile(sFile, Buffer.from(JSON.stringify({ ...JSON.parse(fs.readFileSync(sFile, "utf8")), prediction_type: "v_prediction" })));
    const r = await cli(gen(dir, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /scheduler_config\.json: "prediction_type" v_prediction with 768-px samples/);
  });

  test("OpenCLIP's tokenizer (pad_token \"!\") is refused as SD 2.x", async () => {
    const dir = copyModel("sd2-tok");
    replaceFile(path.join(dir, "tokenizer", "special_tokens_map.json"), Buffer.from(JSON.stringify({ pad_token: "!" })));
    const r = await cli(gen(dir, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /tokenizer: pad_token "!" \(OpenCLIP's tokenizer\): an SD 2\.x model/);
  });

  test("SD 2.x-only internals an ONNX run never sees (per-block head counts, linear projections) are accepted", async () => {
    const dir = copyModel("heads-linear");
    const cfgFile = path.join(dir, "unet", "config.json");
    const cfg = JSON.parse(fs.readFileSync(cfgFile, "utf8"));
    replaceFile(cfgFile, Buffer.from(JSON.stringify({ ...cfg, attention_head_dim: [1, 2, 2, 2], use_linear_projection: true })));
    const r = await cli(gen(dir, "--steps", "1", "--out", fresh("o.png")));
    expect(`${r.code} ${r.err}`).toMatch(/^0 /);
  });

  test("cross_attention_dim as a list of different widths says so", async () => {
    const dir = copyModel("cross-list");
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, "unet", "config.json"), "utf8"));
    replaceFile(path.join(dir, "unet", "config.json"), Buffer.from(JSON.stringify({ ...cfg, cross_attention_dim: [8, 8, 16, 8] })));
    const r = await cli(gen(dir, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /unet[/\\]config\.json: "cross_attention_dim" \[8,8,16,8\] must be one positive integer/);
  });
});

describe("reference sets", () => {
  let refs: string;
  beforeAll(() => {
    // A reference set of rng cases (no model work), each broken in one way.
    refs = fresh("refs");
    fs.mkdirSync(path.join(refs, "rng"), { recursive: true });
    const manifest = JSON.parse(fs.readFileSync(path.join(REFS, "manifest.json"), "utf8"));
    const keep = new Set(["rng:seed0-3", "rng:seed1-3", "rng:seed42-3", "rng:seed1234-3", "rng:seed42-1", "rng:seed42-15", "rng:seed42-16", "rng:seed42-17", "rng:seed4294967295-3"]);
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
      "rng:seed42-15": (() => { const b = Buffer.alloc(16); b.writeBigUInt64LE(1n << 62n); return b; })(), // huge header length
      "rng:seed42-16": header({ draw0: { dtype: "F32", shape: [15], data_offsets: [-4, 56] } }, 60), // negative offset
      "rng:seed42-17": header({ draw0: { dtype: "F32", shape: [16], data_offsets: [0, 64] }, b: { dtype: "F32", shape: [2], data_offsets: [56, 64] } }, 64), // overlap
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

  test("missing reference set", async () => {
    const r = await cli(["conformance", "--references", path.join(tmp, "no-refs"), "--list"]);
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /no-refs: reference set does not exist/);
  });

  test("manifest that is not JSON", async () => {
    const dir = fresh("bad-manifest");
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "manifest.json"), "{\"cases\": [");
    const r = await cli(["conformance", "--references", dir, "--list"]);
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /manifest\.json: not valid JSON/);
  });

  test("manifest case pointing outside the set", async () => {
    const dir = fresh("escape-manifest");
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "manifest.json"), JSON.stringify({ cases: [{ id: "rng:x", stage: "rng", file: "../../etc/passwd", sha256: "0" }] }));
    const r = await cli(["conformance", "--references", dir, "--list"]);
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /case rng:x points outside the set/);
  });
});

describe("flags", () => {
  const o = () => fresh("o.png");
  test.each<[string, () => string[], RegExp]>([
    ["negative steps", () => gen(TINY, "--steps", "-1", "--out", o()), /--steps: "-1" is not an integer from 1 to 1000/],
    ["zero steps", () => gen(TINY, "--steps", "0", "--out", o()), /--steps: "0" is not an integer/],
    ["fractional steps", () => gen(TINY, "--steps", "2.5", "--out", o()), /--steps: "2\.5" is not an integer/],
    ["width 0", () => gen(TINY, "--width", "0", "--out", o()), /--width: "0" is not an integer from 8 to 8192/],
    ["width not a multiple of the size step", () => gen(TINY, "--width", "65", "--out", o()), /--width: 65 is not a multiple of 64 \(this model's size step/],
    ["height a multiple of 8 but not of 64", () => gen(TINY, "--height", "72", "--out", o()), /--height: 72 is not a multiple of 64/],
    ["width huge", () => gen(TINY, "--width", "100000", "--out", o()), /--width: "100000" is not an integer from 8 to 8192/],
    ["negative seed", () => gen(TINY, "--seed", "-1", "--out", o()), /--seed: "-1" is not an integer from 0 to 18446744073709551615/],
    ["seed 2^64", () => gen(TINY, "--seed", "18446744073709551616", "--out", o()), /--seed: 18446744073709551616 is larger than 2\^64 - 1/],
    ["seed not a number", () => gen(TINY, "--seed", "0x10", "--out", o()), /--seed: "0x10" is not an integer/],
    ["guidance NaN", () => gen(TINY, "--guidance", "NaN", "--out", o()), /--guidance: "NaN" is not a number from 0 to 100/],
    ["guidance Infinity", () => gen(TINY, "--guidance", "Infinity", "--out", o()), /--guidance: "Infinity" is not a number/],
    ["strength 0", () => gen(TINY, "--strength", "0", "--out", o()), /--strength: "0" is not a number/],
    ["batch 0", () => gen(TINY, "--batch", "0", "--out", o()), /--batch: "0" is not an integer from 1 to 64/],
    ["unknown scheduler", () => gen(TINY, "--scheduler", "euler-b", "--out", o()), /--scheduler: unknown scheduler "euler-b"; choose one of .*euler-a/],
    ["unknown flag", () => gen(TINY, "--stepz", "3", "--out", o()), /generate: Unknown argument: stepz/],
    ["missing --prompt", () => ["generate", "--out", o()], /generate: Missing required argument: prompt/],
    ["unknown command", () => ["genrate"], /unknown command "genrate"; commands: generate, conformance, report/],
    ["unknown profile", () => ["conformance", "--profile", "fp8", "--list"], /--profile: unknown profile "fp8"; known: fp32/],
    ["bad --shard 3/2", () => ["conformance", "--shard", "3/2", "--out", o()], /--shard: "3\/2" must be i\/n with 1 <= i <= n/],
    ["bad --shard 0/2", () => ["conformance", "--shard", "0/2", "--out", o()], /--shard: "0\/2" must be i\/n/],
    ["bad --shard text", () => ["conformance", "--shard", "half", "--out", o()], /--shard: "half" must be i\/n/],
    ["bad --threads", () => ["conformance", "--threads", "-2", "--out", o()], /--threads: "-2" is not an integer from 0 to 1024/],
    ["report without subcommand", () => ["report"], /report: unknown subcommand ""/],
  ])("%s", async (_name, argv, re) => {
    const r = await cli(argv());
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, re);
  });

  test("--steps 1000 with PNDM's leading spacing (timestep 1000 would not exist)", async () => {
    const r = await cli(gen(fast, "--steps", "1000", "--out", o()));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /--steps 1000: pndm's "leading" schedule with steps_offset 1 reaches timestep 1000, past the 1000 training timesteps/);
  });

  test("--verbose adds the stack trace", async () => {
    const r = await cli([...gen(path.join(tmp, "no-such-model"), "--out", o()), "--verbose"]);
    expect(r.code).toBe(ExitCode.usage);
    expect(r.err.split("\n")[0]).toMatch(/^sd-harness: error: .*no-such-model: model folder does not exist$/);
    expect(r.err).toMatch(/^\s+at .*model-folder/m);
  });
});

describe("images", () => {
  test("unreadable init image (missing)", async () => {
    const r = await cli(gen(fast, "--init-image", path.join(tmp, "nope.png"), "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /--init-image .*nope\.png: cannot read \(ENOENT\)/);
  });

  test("init image that is not a PNG", async () => {
    const f = fresh("fake.png");
    fs.writeFileSync(f, "GIF89a....");
    const r = await cli(gen(fast, "--init-image", f, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /--init-image .*fake\.png-\d+: not a PNG file/);
  });

  test("truncated PNG", async () => {
    const f = writePngFile(fresh("trunc.png"), 64, 64, 2);
    fs.writeFileSync(f, fs.readFileSync(f).subarray(0, 60));
    const r = await cli(gen(fast, "--init-image", f, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /--init-image .*trunc\.png-\d+: unreadable PNG/);
  });

  test("grayscale init image", async () => {
    const f = writePngFile(fresh("gray.png"), 64, 64, 0);
    const r = await cli(gen(fast, "--init-image", f, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /--init-image .*gray\.png-\d+: a grayscale PNG; an RGB image is needed/);
  });

  test("mask of another size", async () => {
    const init = writePngFile(fresh("init.png"), 64, 64, 2);
    const mask = writePngFile(fresh("mask.png"), 32, 64, 0);
    const r = await cli(gen(fast, "--init-image", init, "--mask", mask, "--out", fresh("o.png")));
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /--mask is 32x64 but --init-image is 64x64; they must match/);
  });
});

describe("prompts", () => {
  test("lone surrogates and U+FFFD in the prompt work (exit 0) and round-trip as U+FFFD", async () => {
    const out = fresh("surrogate.png");
    const prompt = "a \uD800cat\uDFFF on \uFFFD mat \u0000";
    const r = await cli(["generate", "--model", fast, "--prompt", prompt, "--steps", "2", "--seed", "1", "--out", out]);
    expect(r.code).toBe(ExitCode.ok);
    const params = readPngText(fs.readFileSync(out)).parameters;
    expect(params.split("\n")[0]).toBe(Buffer.from(prompt, "utf8").toString("utf8"));
    expect(params).toContain("\uFFFD");
  });

  test("a prompt over 77 tokens is refused with one line naming --prompt", async () => {
    const out = fresh("long-refused.png");
    const r = await cli(["generate", "--model", fast, "--prompt", "a photo of a cat, ".repeat(2000), "--steps", "2", "--seed", "1", "--out", out]);
    expect(r.code).toBe(ExitCode.usage);
    expectOneLine(r, /--prompt: prompt truncated: 12002 tokens, CLIP reads only 77; shorten it, or pass --truncate/);
    expect(fs.existsSync(out)).toBe(false);
  });

  test("with --truncate a very long prompt works, with a warning", async () => {
    const out = fresh("long.png");
    const r = await cli(["generate", "--model", fast, "--prompt", "a photo of a cat, ".repeat(2000), "--truncate", "--steps", "2", "--seed", "1", "--out", out]);
    expect(r.code).toBe(ExitCode.ok);
    expect(r.err).toMatch(/^sd-harness: warning: --prompt: prompt truncated: 12002 tokens, CLIP reads only 77$/m);
    expect(fs.existsSync(out)).toBe(true);
  });
});

describe("outputs", () => {
  test("output in a missing directory", async () => {
    const r = await cli(gen(fast, "--out", path.join(tmp, "no-dir", "o.png")));
    expect(r.code).toBe(ExitCode.output);
    expectOneLine(r, /--out .*o\.png: directory .*no-dir does not exist/);
  });

  test("existing output without --overwrite", async () => {
    const out = fresh("exists.png");
    fs.writeFileSync(out, "mine");
    const r = await cli(gen(fast, "--out", out));
    expect(r.code).toBe(ExitCode.output);
    expectOneLine(r, /--out .*exists\.png-\d+: already exists \(pass --overwrite to replace it\)/);
    expect(fs.readFileSync(out, "utf8")).toBe("mine");
  });

  test("output that is a directory", async () => {
    const out = fresh("dir.png");
    fs.mkdirSync(out);
    const r = await cli(gen(fast, "--out", out, "--overwrite"));
    expect(r.code).toBe(ExitCode.output);
    expectOneLine(r, /--out .*dir\.png-\d+: is a directory/);
  });

  test("a file as the parent directory", async () => {
    const parent = fresh("plainfile");
    fs.writeFileSync(parent, "x");
    const r = await cli(gen(fast, "--out", path.join(parent, "o.png")));
    expect(r.code).toBe(ExitCode.output);
    expectOneLine(r, /--out .*o\.png: .*plainfile-\d+ is not a directory/);
  });

  test("output in a read-only directory", async () => {
    // chmod 555 does not stop root (CAP_DAC_OVERRIDE), and these tests often run as root (CI
    // containers). As root, use a directory nothing can be created in whatever the permissions:
    // /proc (a virtual filesystem). Either way the CLI must refuse before any work, exit 3.
    const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
    let dir: string;
    if (isRoot) {
      dir = "/proc";
    } else {
      dir = fresh("readonly");
      fs.mkdirSync(dir);
      fs.chmodSync(dir, 0o555);
    }
    const t0 = Date.now();
    const r = await cli(gen(fast, "--out", path.join(dir, "sd-harness-o.png")));
    expect(r.code).toBe(ExitCode.output);
    expectOneLine(r, /--out .*sd-harness-o\.png: directory .* is not writable \((EACCES|ENOENT|EROFS|EPERM)\)/);
    expect(Date.now() - t0).toBeLessThan(2000); // refused before loading the model
    expect(fs.existsSync(path.join(dir, "sd-harness-o.png"))).toBe(false);
    if (!isRoot) fs.chmodSync(dir, 0o755);
  });
});
