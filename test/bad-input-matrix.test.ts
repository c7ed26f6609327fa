/**
 * The bad-input matrix for `generate`, `conformance` and the CLI itself, run as the real binary in a
 * child process (test/helpers/cli-case.ts): each row is an input, the exit code, the ONE stderr line
 * it must print (naming the file or flag at fault, no stack trace), the files that must be left
 * unchanged or absent, and bounds: wall-clock time per case, and peak RSS under 300 MB for every
 * refusal. Child processes see what in-process tests cannot: native crashes (a long prompt
 * segfaulted in ORT's telemetry), hangs on FIFOs, SIGTERM against a blocked event loop, EPIPE on a
 * closed stdout, and memory.
 *
 * Broken model folders are copies of the tiny fixture with its U-Net swapped for fixtures/broken/
 * fast-unet (loads in milliseconds) and one part broken. Report and merge rows live in
 * test/bad-input-reports.test.ts. RELIABILITY.md lists the rows with their measured peak RSS.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { execFileSync } from "node:child_process";
import { PNG } from "pngjs";
import { BIN, CliCase, ensureBuilt, measured, testCliCases } from "./helpers/cli-case";
import { externalizeInitializers } from "./helpers/onnx-edit";
import { ROOT, TINY } from "./helpers/fixtures";
import { chunk } from "./helpers/png-chunks";
import { readPngText } from "../src/pipeline/image";

const BROKEN = path.join(ROOT, "fixtures", "broken");
const work = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-matrix-"));
/** the tiny model with the fast U-Net, made once; cases copy it when they break a part */
const FAST = path.join(work, "fast");
/** generate --clip-skip 1 with FAST (embedded weights): what the external-data copy must reproduce */
const CLIP_SKIP_REF = path.join(work, "clip-skip.png");

beforeAll(() => {
  ensureBuilt();
  fs.cpSync(TINY, FAST, { recursive: true, dereference: true });
  replace(path.join(FAST, "unet", "model.onnx"), path.join(BROKEN, "fast-unet", "model.onnx"));
  execFileSync(
    process.execPath,
    [
      BIN,
      "generate",
      "--model",
      FAST,
      "--prompt",
      "a cat",
      "--clip-skip",
      "1",
      "--steps",
      "2",
      "--seed",
      "3",
      "--threads",
      "1",
      "--out",
      CLIP_SKIP_REF,
    ],
    { stdio: "pipe" },
  );
}, 180_000);

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
  // the measured figures RELIABILITY.md quotes
  const rows = measured.map((m) => `${m.exit}\t${Number.isFinite(m.peakRssMb) ? m.peakRssMb.toFixed(0) : "?"} MB\t${m.ms} ms\t${m.name}`);
  if (process.env.SDH_MATRIX_REPORT) fs.writeFileSync(process.env.SDH_MATRIX_REPORT, rows.join("\n") + "\n");
});

/** Replace a file in a copy (unlinked first, so nothing is written through a link). */
function replace(file: string, from: string | Buffer): void {
  fs.rmSync(file, { force: true });
  if (typeof from === "string") fs.copyFileSync(from, file);
  else fs.writeFileSync(file, from);
}

/** A real copy of the fast model in the case folder, as {dir}/m. */
function model(dir: string, name = "m"): string {
  const to = path.join(dir, name);
  fs.cpSync(FAST, to, { recursive: true });
  return to;
}

function editJson(file: string, edit: (j: Record<string, unknown>) => void): void {
  const j = JSON.parse(fs.readFileSync(file, "utf8"));
  edit(j);
  replace(file, Buffer.from(JSON.stringify(j)));
}

function mkfifo(file: string): void {
  fs.rmSync(file, { force: true });
  execFileSync("mkfifo", [file]);
}

function linkTo(file: string, target: string): void {
  fs.rmSync(file, { force: true });
  fs.symlinkSync(target, file);
}

function pngFile(file: string, width: number, height: number, colorType: 0 | 2 | 6, bitDepth: 8 | 16 = 8): void {
  const png = new PNG({ width, height, colorType, bitDepth } as ConstructorParameters<typeof PNG>[0]);
  for (let i = 0; i < width * height; i++) png.data.set([(i * 7) & 255, (i * 3) & 255, (i * 5) & 255, 255], 4 * i);
  fs.writeFileSync(file, PNG.sync.write(png, { colorType, bitDepth } as Parameters<typeof PNG.sync.write>[1]));
}

/**
 * A decompression bomb: an RGB PNG declaring width x height whose IDAT is a real deflate stream of
 * all-zero rows (12000 x 12000 is about 420 KB on disk, 432 MB inflated, 576 MB as RGBA).
 */
async function bombPng(file: string, width: number, height: number): Promise<void> {
  const deflate = zlib.createDeflate({ level: 9 });
  const out: Buffer[] = [];
  deflate.on("data", (d: Buffer) => out.push(d));
  const done = new Promise((r) => deflate.on("end", r));
  const row = Buffer.alloc(width * 3 + 1);
  for (let y = 0; y < height; y++) {
    if (!deflate.write(row)) await new Promise((r) => deflate.once("drain", r));
  }
  deflate.end();
  await done;
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  fs.writeFileSync(
    file,
    Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk("IHDR", ihdr),
      chunk("IDAT", Buffer.concat(out)),
      chunk("IEND", Buffer.alloc(0)),
    ]),
  );
}

/** generate with the fast model copy at {dir}/m, --steps 2 --seed 1, writing {dir}/o.png, then `rest` */
const gen = (...rest: string[]) => {
  const defaults: [string, string][] = [
    ["--model", "{dir}/m"],
    ["--prompt", "a cat"],
    ["--steps", "2"],
    ["--seed", "1"],
    ["--threads", "1"],
    ["--out", "{dir}/o.png"],
  ];
  return ["generate", ...defaults.filter(([flag]) => !rest.includes(flag)).flat(), ...rest];
};
/** gen, with the model set up */
const withModel = (edit?: (m: string, dir: string) => void | Promise<void>) => async (dir: string) => {
  const m = model(dir);
  await edit?.(m, dir);
};

const cases: CliCase[] = [
  // --- model folders ------------------------------------------------------------------------------
  { name: "model: missing folder", args: gen(), exit: 2, stderr: /m: model folder does not exist/, absent: ["o.png"] },
  {
    name: "model: a file where the folder should be",
    setup: (d) => fs.writeFileSync(path.join(d, "m"), "x"),
    args: gen(),
    exit: 2,
    stderr: /m: not a directory/,
    unchanged: ["m"],
  },
  {
    name: "model: unet/model.onnx missing",
    setup: withModel((m) => fs.rmSync(path.join(m, "unet", "model.onnx"))),
    args: gen(),
    exit: 2,
    stderr: /unet\/model\.onnx: missing \(the U-Net\)/,
    absent: ["o.png"],
  },
  {
    name: "model: unet/config.json missing",
    setup: withModel((m) => fs.rmSync(path.join(m, "unet", "config.json"))),
    args: gen(),
    exit: 2,
    stderr: /unet\/config\.json: missing/,
  },
  {
    name: "model: a config that is not JSON",
    setup: withModel((m) => replace(path.join(m, "text_encoder", "config.json"), Buffer.from('{"hidden_size": 8,'))),
    args: gen(),
    exit: 2,
    stderr: /text_encoder\/config\.json: not valid JSON/,
  },
  {
    name: "model: external VAE weights intact: generates",
    setup: withModel((m) => {
      for (const f of ["model.onnx", "model.onnx_data"])
        replace(path.join(m, "vae_decoder", f), path.join(BROKEN, "external-data", "vae_decoder", f));
    }),
    args: gen(),
    exit: 0,
    stderr: /^seed 1, 2 steps/,
    stdout: /o\.png/,
    check: (d) => expect(fs.existsSync(path.join(d, "o.png"))).toBe(true),
  },
  {
    name: "model: external VAE weights missing (model.onnx_data)",
    setup: withModel((m) =>
      replace(path.join(m, "vae_decoder", "model.onnx"), path.join(BROKEN, "external-data", "vae_decoder", "model.onnx")),
    ),
    args: gen(),
    exit: 2,
    stderr: /vae_decoder\/model\.onnx: its external weights cannot be loaded/,
    absent: ["o.png"],
  },
  {
    name: "model: external VAE weights truncated",
    setup: withModel((m) => {
      replace(path.join(m, "vae_decoder", "model.onnx"), path.join(BROKEN, "external-data", "vae_decoder", "model.onnx"));
      replace(
        path.join(m, "vae_decoder", "model.onnx_data"),
        fs.readFileSync(path.join(BROKEN, "external-data", "vae_decoder", "model.onnx_data")).subarray(0, 1000),
      );
    }),
    args: gen(),
    exit: 2,
    stderr: /vae_decoder\/model\.onnx: its external weights cannot be loaded/,
  },
  {
    name: "model: truncated ONNX",
    setup: withModel((m) => replace(path.join(m, "text_encoder", "model.onnx"), path.join(BROKEN, "truncated", "model.onnx"))),
    args: gen(),
    exit: 2,
    stderr: /text_encoder\/model\.onnx: not a loadable ONNX model/,
  },
  {
    name: "model: a text file named model.onnx",
    setup: withModel((m) => replace(path.join(m, "text_encoder", "model.onnx"), Buffer.from("this is not a model\n"))),
    args: gen(),
    exit: 2,
    stderr: /text_encoder\/model\.onnx: not a loadable ONNX model/,
  },
  {
    name: "model: a zero-byte ONNX",
    setup: withModel((m) => replace(path.join(m, "text_encoder", "model.onnx"), Buffer.alloc(0))),
    args: gen(),
    exit: 2,
    stderr: /text_encoder\/model\.onnx: empty file \(0 bytes\)/,
  },
  {
    name: "model: the VAE decoder where the U-Net should be",
    setup: withModel((m) => replace(path.join(m, "unet", "model.onnx"), path.join(TINY, "vae_decoder", "model.onnx"))),
    args: gen(),
    exit: 2,
    stderr: /unet\/model\.onnx: has inputs \[latent_sample\], expected an SD 1\.x U-Net/,
  },
  {
    name: "model: SDXL model_index.json",
    setup: withModel((m) => replace(path.join(m, "model_index.json"), path.join(BROKEN, "sdxl-like", "model_index.json"))),
    args: gen(),
    exit: 2,
    stderr: /StableDiffusionXLPipeline; sd-harness runs SD 1\.x folders only/,
  },
  {
    name: "model: SDXL U-Net (text_embeds, time_ids inputs)",
    setup: withModel((m) => replace(path.join(m, "unet", "model.onnx"), path.join(BROKEN, "sdxl-like", "unet", "model.onnx"))),
    args: gen(),
    exit: 2,
    stderr: /unet\/model\.onnx: takes text_embeds \/ time_ids, an SDXL U-Net/,
  },
  {
    name: "model: SDXL U-Net config",
    setup: withModel((m) =>
      editJson(path.join(m, "unet", "config.json"), (c) => {
        c.addition_embed_type = "text_time";
        c.cross_attention_dim = 2048;
      }),
    ),
    args: gen(),
    exit: 2,
    stderr: /unet\/config\.json: an SDXL U-Net/,
  },
  {
    name: "model: U-Net sample_size 0 names the config file and key",
    setup: withModel((m) =>
      editJson(path.join(m, "unet", "config.json"), (c) => {
        c.sample_size = 0;
      }),
    ),
    args: gen(),
    exit: 2,
    stderr: /unet\/config\.json: "sample_size" 0 must be a positive integer/,
  },
  {
    name: "model: scheduler beta_end 2 names the config file and key",
    setup: withModel((m) =>
      editJson(path.join(m, "scheduler", "scheduler_config.json"), (c) => {
        c.beta_end = 2;
      }),
    ),
    args: gen(),
    exit: 2,
    stderr: /scheduler\/scheduler_config\.json: "beta_end" 2 must be in \(0, 1\)/,
    absent: ["o.png"],
  },
  {
    name: "model: scheduler beta_start 0",
    setup: withModel((m) =>
      editJson(path.join(m, "scheduler", "scheduler_config.json"), (c) => {
        c.beta_start = 0;
      }),
    ),
    args: gen(),
    exit: 2,
    stderr: /scheduler_config\.json: "beta_start" 0 must be in \(0, 1\)/,
  },
  {
    name: "model: scheduler trained_betas with a 1.5",
    setup: withModel((m) =>
      editJson(path.join(m, "scheduler", "scheduler_config.json"), (c) => {
        c.trained_betas = Array.from({ length: 1000 }, (_, i) => (i === 7 ? 1.5 : 0.01));
      }),
    ),
    args: gen(),
    exit: 2,
    stderr: /scheduler_config\.json: trained_betas\[7\] 1\.5 must be in \[0, 1\)/,
  },
  // special and oversized files inside a model folder
  {
    name: "model: model_index.json is /dev/zero",
    setup: withModel((m) => linkTo(path.join(m, "model_index.json"), "/dev/zero")),
    args: gen(),
    exit: 2,
    stderr: /model_index\.json: a character device, not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "model: model_index.json is a FIFO",
    setup: withModel((m) => mkfifo(path.join(m, "model_index.json"))),
    args: gen(),
    exit: 2,
    stderr: /model_index\.json: a FIFO, not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "model: model_index.json is a folder",
    setup: withModel((m) => {
      fs.rmSync(path.join(m, "model_index.json"));
      fs.mkdirSync(path.join(m, "model_index.json"));
    }),
    args: gen(),
    exit: 2,
    stderr: /model_index\.json: a directory, not a regular file/,
  },
  {
    name: "model: unet/config.json over 4 MiB",
    setup: withModel((m) => replace(path.join(m, "unet", "config.json"), Buffer.from(`{"x": "${"y".repeat(5 << 20)}"}`))),
    args: gen(),
    exit: 2,
    stderr: /unet\/config\.json: \d+ bytes, over the 4 MiB limit for the U-Net's config/,
  },
  {
    name: "model: tokenizer/vocab.json is /dev/zero",
    setup: withModel((m) => linkTo(path.join(m, "tokenizer", "vocab.json"), "/dev/zero")),
    args: gen(),
    exit: 2,
    stderr: /tokenizer\/vocab\.json: a character device, not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "model: tokenizer/merges.txt is a FIFO",
    setup: withModel((m) => mkfifo(path.join(m, "tokenizer", "merges.txt"))),
    args: gen(),
    exit: 2,
    stderr: /tokenizer\/merges\.txt: a FIFO, not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "model: tokenizer/special_tokens_map.json is /dev/zero",
    setup: withModel((m) => linkTo(path.join(m, "tokenizer", "special_tokens_map.json"), "/dev/zero")),
    args: gen(),
    exit: 2,
    stderr: /special_tokens_map\.json: a character device, not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "model: tokenizer/tokenizer_config.json is a FIFO",
    setup: withModel((m) => mkfifo(path.join(m, "tokenizer", "tokenizer_config.json"))),
    args: gen(),
    exit: 2,
    stderr: /tokenizer_config\.json: a FIFO, not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "model: unet/model.onnx is /dev/zero",
    setup: withModel((m) => linkTo(path.join(m, "unet", "model.onnx"), "/dev/zero")),
    args: gen(),
    exit: 2,
    stderr: /unet\/model\.onnx: not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "model: text_encoder/model.onnx is a FIFO",
    setup: withModel((m) => mkfifo(path.join(m, "text_encoder", "model.onnx"))),
    args: gen(),
    exit: 2,
    stderr: /text_encoder\/model\.onnx: not a regular file/,
    timeoutMs: 10_000,
  },
  // external-data text encoder under clip skip (the final layer norm is read from its initializers)
  {
    name: "model: --clip-skip with an external-data text encoder gives the embedded model's image",
    setup: (d) => {
      externalizeInitializers(path.join(model(d, "fast"), "text_encoder", "model.onnx"), "model.onnx_data");
    },
    args: [
      "generate",
      "--model",
      "{dir}/fast",
      "--prompt",
      "a cat",
      "--clip-skip",
      "1",
      "--steps",
      "2",
      "--seed",
      "3",
      "--threads",
      "1",
      "--out",
      "{dir}/o.png",
    ],
    exit: 0,
    stderr: /^seed 3, 2 steps/,
    check: (d) => expect(fs.readFileSync(path.join(d, "o.png")).equals(fs.readFileSync(CLIP_SKIP_REF))).toBe(true),
  },
  {
    name: "model: --clip-skip with an external-data text encoder whose data file is missing",
    setup: withModel((m) => {
      externalizeInitializers(path.join(m, "text_encoder", "model.onnx"), "model.onnx_data", null);
    }),
    args: gen("--clip-skip", "1"),
    exit: 2,
    stderr: /text_encoder\/model\.onnx: its external weights cannot be loaded/,
  },

  // --- flags --------------------------------------------------------------------------------------
  { name: "flag: --steps -1", args: gen("--steps", "-1"), exit: 2, stderr: /--steps: "-1" is not an integer from 1 to 1000/ },
  { name: "flag: --steps 0", args: gen("--steps", "0"), exit: 2, stderr: /--steps: "0" is not an integer/ },
  { name: "flag: --steps 2.5", args: gen("--steps", "2.5"), exit: 2, stderr: /--steps: "2\.5" is not an integer/ },
  {
    name: "flag: --width 0",
    setup: withModel(),
    args: gen("--width", "0"),
    exit: 2,
    stderr: /--width: "0" is not an integer from 8 to 8192/,
  },
  {
    name: "flag: --width 65 (not a multiple of the size step)",
    setup: withModel(),
    args: gen("--width", "65"),
    exit: 2,
    stderr: /--width: 65 is not a multiple of 64/,
  },
  {
    name: "flag: --height 100",
    setup: withModel(),
    args: gen("--height", "100"),
    exit: 2,
    stderr: /--height: 100 is not a multiple of 64/,
  },
  { name: "flag: --width 100000", args: gen("--width", "100000"), exit: 2, stderr: /--width: "100000" is not an integer from 8 to 8192/ },
  { name: "flag: --seed -1", args: gen("--seed", "-1"), exit: 2, stderr: /--seed: "-1" is not an integer from 0 to 18446744073709551615/ },
  {
    name: "flag: --seed 2^64",
    args: gen("--seed", "18446744073709551616"),
    exit: 2,
    stderr: /--seed: 18446744073709551616 is larger than 2\^64 - 1/,
  },
  { name: "flag: --seed 0x10", args: gen("--seed", "0x10"), exit: 2, stderr: /--seed: "0x10" is not an integer/ },
  { name: "flag: --guidance NaN", args: gen("--guidance", "NaN"), exit: 2, stderr: /--guidance: "NaN" is not a number from 0 to 100/ },
  { name: "flag: --guidance Infinity", args: gen("--guidance", "Infinity"), exit: 2, stderr: /--guidance: "Infinity" is not a number/ },
  { name: "flag: --strength 0", args: gen("--strength", "0"), exit: 2, stderr: /--strength: "0" is not a number/ },
  { name: "flag: --batch 0", args: gen("--batch", "0"), exit: 2, stderr: /--batch: "0" is not an integer from 1 to 64/ },
  {
    name: "flag: unknown scheduler",
    args: gen("--scheduler", "euler-b"),
    exit: 2,
    stderr: /--scheduler: unknown scheduler "euler-b"; choose one of .*euler-a/,
  },
  { name: "flag: unknown flag", args: gen("--stepz", "3"), exit: 2, stderr: /generate: Unknown argument: stepz/ },
  {
    name: "flag: missing --prompt",
    args: ["generate", "--out", "{dir}/o.png"],
    exit: 2,
    stderr: /generate: Missing required argument: prompt/,
  },
  {
    name: "flag: unknown command",
    args: ["genrate"],
    exit: 2,
    stderr: /unknown command "genrate"; commands: generate, conformance, .*report/,
  },
  { name: "flag: no command prints the usage", args: [], exit: 2, stderr: /^$/, stderrLines: "any", stdout: /Commands:/ },
  {
    name: 'flag: conformance: a repeated --profile takes its last value (it was \'unknown profile ["fp16","fp32"]\')',
    args: ["conformance", "--profile", "fp16", "--profile", "fp32", "--list", "--only", "rng:seed0-3"],
    exit: 0,
    stderr: /^$/,
    stdout: /^rng:seed0-3\n$/,
  },
  {
    name: "flag: unknown profile",
    args: ["conformance", "--profile", "fp8", "--list"],
    exit: 2,
    stderr: /--profile: unknown profile "fp8"; known: fp32/,
  },
  {
    name: "flag: --shard 3/2",
    args: ["conformance", "--shard", "3/2", "--out", "{dir}/r"],
    exit: 2,
    stderr: /--shard: "3\/2" must be i\/n with 1 <= i <= n/,
    absent: ["r"],
  },
  {
    name: "flag: --shard 0/2",
    args: ["conformance", "--shard", "0/2", "--out", "{dir}/r"],
    exit: 2,
    stderr: /--shard: "0\/2" must be i\/n/,
  },
  {
    name: "flag: --shard half",
    args: ["conformance", "--shard", "half", "--out", "{dir}/r"],
    exit: 2,
    stderr: /--shard: "half" must be i\/n/,
  },
  {
    name: "flag: conformance --threads -2",
    args: ["conformance", "--threads", "-2", "--out", "{dir}/r"],
    exit: 2,
    stderr: /--threads: "-2" is not an integer from 0 to \d+/,
  },
  { name: "flag: report without a subcommand", args: ["report"], exit: 2, stderr: /report: unknown subcommand ""/ },
  {
    name: "flag: --steps 1000 with PNDM's leading spacing",
    setup: withModel(),
    args: gen("--steps", "1000"),
    exit: 2,
    stderr: /--steps 1000: pndm's "leading" schedule with steps_offset 1 reaches timestep 1000/,
  },
  // thread counts: far more threads than cores hung for minutes
  {
    name: "threads: generate --threads 1024 is refused at once",
    setup: withModel(),
    args: gen("--threads", "1024"),
    exit: 2,
    stderr: /--threads: 1024 is more than 4 per CPU core \(\d+ cores? here: at most \d+; 0 lets ONNX Runtime choose\)/,
    timeoutMs: 10_000,
  },
  {
    name: "threads: conformance --threads 1024 is refused at once",
    args: ["conformance", "--threads", "1024", "--out", "{dir}/r"],
    exit: 2,
    stderr: /--threads: 1024 is more than 4 per CPU core/,
    absent: ["r"],
    timeoutMs: 10_000,
  },
  {
    name: "flags: a bare -- in generate is refused, not read as a missing --prompt",
    setup: withModel(),
    args: gen("--", "--seed", "1"),
    exit: 2,
    stderr: /generate: a bare "--" is not accepted/,
    timeoutMs: 10_000,
  },
  {
    name: "flags: a bare -- in conformance is refused",
    args: ["conformance", "--list", "--"],
    exit: 2,
    stderr: /conformance: a bare "--" is not accepted/,
    timeoutMs: 10_000,
  },
  {
    name: "threads: the rule is in generate --help",
    args: ["generate", "--help"],
    exit: 0,
    stderr: /^$/,
    stdout: /--threads +ONNX Runtime intra-op threads: 0 \(one per core\) up to 4 x\s+the CPU cores \(\d+ here\)/,
  },
  {
    name: 'flag: a repeated flag takes its last value (it made an array: --steps ["2","3"] is not an integer)',
    setup: withModel(),
    args: gen("--steps", "1", "--steps", "2", "--out", "{dir}/x.png", "--out", "{dir}/o.png"),
    exit: 0,
    stderr: /^seed 1, 2 steps/,
    check: (d) => expect(fs.readdirSync(d).filter((f) => f.endsWith(".png"))).toEqual(["o.png"]),
  },

  // --- images -------------------------------------------------------------------------------------
  {
    name: "image: init image missing",
    setup: withModel(),
    args: gen("--init-image", "{dir}/nope.png"),
    exit: 2,
    stderr: /--init-image .*nope\.png: missing \(a PNG image\)/,
  },
  {
    name: "image: init image not a PNG",
    setup: withModel((_m, d) => fs.writeFileSync(path.join(d, "fake.png"), "GIF89a....")),
    args: gen("--init-image", "{dir}/fake.png"),
    exit: 2,
    stderr: /--init-image .*fake\.png: not a PNG file/,
  },
  {
    name: "image: truncated PNG",
    setup: withModel((_m, d) => {
      pngFile(path.join(d, "t.png"), 64, 64, 2);
      replace(path.join(d, "t.png"), fs.readFileSync(path.join(d, "t.png")).subarray(0, 60));
    }),
    args: gen("--init-image", "{dir}/t.png"),
    exit: 2,
    stderr: /--init-image .*t\.png: unreadable PNG/,
  },
  {
    name: "image: grayscale init image",
    setup: withModel((_m, d) => pngFile(path.join(d, "g.png"), 64, 64, 0)),
    args: gen("--init-image", "{dir}/g.png"),
    exit: 2,
    stderr: /--init-image .*g\.png: a grayscale PNG; an RGB image is needed/,
  },
  {
    name: "image: mask of another size",
    setup: withModel((_m, d) => {
      pngFile(path.join(d, "i.png"), 64, 64, 2);
      pngFile(path.join(d, "k.png"), 32, 64, 0);
    }),
    args: gen("--init-image", "{dir}/i.png", "--mask", "{dir}/k.png"),
    exit: 2,
    stderr: /--mask is 32x64 but --init-image is 64x64; they must match/,
  },
  {
    name: "image: --mask without --init-image",
    setup: withModel((_m, d) => pngFile(path.join(d, "k.png"), 64, 64, 0)),
    args: gen("--mask", "{dir}/k.png"),
    exit: 2,
    stderr: /--mask needs --init-image/,
  },
  {
    name: "image: 16-bit grayscale mask (PIL clips it) is refused",
    setup: withModel((_m, d) => {
      pngFile(path.join(d, "i.png"), 64, 64, 2);
      pngFile(path.join(d, "k.png"), 64, 64, 0, 16);
    }),
    args: gen("--init-image", "{dir}/i.png", "--mask", "{dir}/k.png"),
    exit: 2,
    stderr: /--mask .*k\.png: a 16-bit grayscale PNG, which PIL \(and so diffusers\) clips/,
  },
  {
    name: "image: a 1x1 init image names the image and the size rule",
    setup: withModel((_m, d) => pngFile(path.join(d, "one.png"), 1, 1, 2)),
    args: gen("--init-image", "{dir}/one.png"),
    exit: 2,
    stderr: /--init-image .*one\.png: 1x1 pixels; the output takes the image's size, which must be a multiple of 64 on each side/,
  },
  {
    name: "image: init image of another size than --width",
    setup: withModel((_m, d) => pngFile(path.join(d, "i.png"), 64, 64, 2)),
    args: gen("--init-image", "{dir}/i.png", "--width", "128"),
    exit: 2,
    stderr: /--init-image .*i\.png: 64x64 pixels but --width\/--height ask for 128x64/,
  },
  {
    name: "image: init image is /dev/zero",
    setup: withModel(),
    args: gen("--init-image", "/dev/zero"),
    exit: 2,
    stderr: /--init-image \/dev\/zero: a character device, not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "image: init image is a FIFO",
    setup: withModel((_m, d) => mkfifo(path.join(d, "fifo.png"))),
    args: gen("--init-image", "{dir}/fifo.png"),
    exit: 2,
    stderr: /--init-image .*fifo\.png: a FIFO, not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "image: init image is a folder",
    setup: withModel((_m, d) => fs.mkdirSync(path.join(d, "dir.png"))),
    args: gen("--init-image", "{dir}/dir.png"),
    exit: 2,
    stderr: /--init-image .*dir\.png: a directory, not a regular file/,
  },
  {
    name: "image: mask is /dev/zero",
    setup: withModel((_m, d) => pngFile(path.join(d, "i.png"), 64, 64, 2)),
    args: gen("--init-image", "{dir}/i.png", "--mask", "/dev/zero"),
    exit: 2,
    stderr: /--mask \/dev\/zero: a character device, not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "image: a 300 MB (sparse) init image is over the PNG limit, refused without reading it",
    setup: withModel((_m, d) => {
      fs.writeFileSync(path.join(d, "big.png"), "");
      fs.truncateSync(path.join(d, "big.png"), 300 << 20);
    }),
    args: gen("--init-image", "{dir}/big.png"),
    exit: 2,
    stderr: /--init-image .*big\.png: 314572800 bytes, over the 256 MiB limit for a PNG image/,
    timeoutMs: 10_000,
  },
  {
    name: "image: decompression bomb (12000x12000 declared) is refused from its header",
    setup: withModel((_m, d) => bombPng(path.join(d, "bomb.png"), 12000, 12000)),
    args: gen("--init-image", "{dir}/bomb.png"),
    exit: 2,
    stderr: /--init-image .*bomb\.png: declares 12000x12000 pixels; images from 1 to 8192 pixels on a side are accepted/,
    timeoutMs: 10_000,
  },
  {
    name: "image: 8100x8100 declared (within the side limit, off the size step) is refused before decoding",
    setup: withModel((_m, d) => bombPng(path.join(d, "big.png"), 8100, 8100)),
    args: gen("--init-image", "{dir}/big.png"),
    exit: 2,
    stderr: /--init-image .*big\.png: 8100x8100 pixels; the output takes the image's size, which must be a multiple of 64/,
    timeoutMs: 10_000,
  },

  // --- prompts ------------------------------------------------------------------------------------
  {
    name: "prompt: lone surrogates, U+FFFD and NUL work and round-trip as U+FFFD",
    setup: withModel(),
    args: [
      "generate",
      "--model",
      "{dir}/m",
      "--prompt",
      "a \uD800cat\uDFFF on \uFFFD mat",
      "--steps",
      "2",
      "--seed",
      "1",
      "--threads",
      "1",
      "--out",
      "{dir}/o.png",
    ],
    exit: 0,
    stderr: /^seed 1/,
    check: (d) =>
      expect(readPngText(fs.readFileSync(path.join(d, "o.png"))).parameters.split("\n")[0]).toBe("a \uFFFDcat\uFFFD on \uFFFD mat"),
  },
  {
    name: "prompt: over 77 tokens is refused naming --prompt",
    setup: withModel(),
    args: gen("--prompt", "a photo of a cat, ".repeat(2000)),
    exit: 2,
    stderr: /--prompt: prompt truncated: 12002 tokens, CLIP reads only 77; shorten it, or pass --truncate/,
    absent: ["o.png"],
  },
  {
    name: "prompt: with --truncate a 36 KB prompt works, with a warning (a prompt of 29 KB or more segfaulted in ORT's telemetry)",
    setup: withModel(),
    args: gen("--prompt", "a photo of a cat, ".repeat(2000), "--truncate"),
    exit: 0,
    stderr: /^seed 1/,
    check: (d, r) => {
      expect(r.stderr).toMatch(/^sd-harness: warning: --prompt: prompt truncated: 12002 tokens, CLIP reads only 77$/m);
      expect(fs.existsSync(path.join(d, "o.png"))).toBe(true);
    },
  },
  {
    name: "prompt: a 131,000-letter word is refused in well under a second (it took 53-111 s)",
    args: gen("--prompt", "q".repeat(131_000)),
    exit: 2,
    stderr: /--prompt: 131000 characters, over the limit of 65536; CLIP reads only the first 77 tokens/,
    timeoutMs: 20_000,
    // node's start and the folder's configs take under a second; the old tokenizer took 53-111 s
    check: (_d, r) => expect(r.ms).toBeLessThan(10_000),
  },
  {
    name: "prompt: an over-long --negative-prompt is refused naming it",
    args: gen("--negative-prompt", "x ".repeat(40_000)),
    exit: 2,
    stderr: /--negative-prompt: 80000 characters, over the limit of 65536/,
    timeoutMs: 5_000,
  },

  // --- outputs ------------------------------------------------------------------------------------
  {
    name: "output: in a missing directory",
    setup: withModel(),
    args: gen("--out", "{dir}/no-dir/o.png"),
    exit: 3,
    stderr: /--out .*o\.png: directory .*no-dir does not exist/,
  },
  {
    name: "output: exists, no --overwrite",
    setup: withModel((_m, d) => fs.writeFileSync(path.join(d, "o.png"), "mine")),
    args: gen(),
    exit: 3,
    stderr: /--out .*o\.png: already exists \(pass --overwrite to replace it\)/,
    unchanged: ["o.png"],
  },
  {
    name: "output: is a directory",
    setup: withModel((_m, d) => fs.mkdirSync(path.join(d, "o.png"))),
    args: gen("--overwrite"),
    exit: 3,
    stderr: /--out .*o\.png: is a directory/,
  },
  {
    name: "output: a file as the parent directory",
    setup: withModel((_m, d) => fs.writeFileSync(path.join(d, "plain"), "x")),
    args: gen("--out", "{dir}/plain/o.png"),
    exit: 3,
    stderr: /--out .*o\.png: .*plain is not a directory/,
    unchanged: ["plain"],
  },
  {
    // chmod 555 does not stop root, and CI runs as root: /proc takes no new files whatever the user
    name: "output: a directory nothing can be created in",
    setup: withModel((_m, d) => {
      if (process.getuid?.() !== 0) {
        fs.mkdirSync(path.join(d, "ro"));
        fs.chmodSync(path.join(d, "ro"), 0o555);
      }
    }),
    args: (d) => [
      "generate",
      "--model",
      path.join(d, "m"),
      "--prompt",
      "x",
      "--out",
      process.getuid?.() === 0 ? "/proc/sd-harness-o.png" : path.join(d, "ro", "o.png"),
    ],
    exit: 3,
    stderr: /--out .*o\.png: directory .* is not writable \((EACCES|ENOENT|EROFS|EPERM)\)/,
    check: (_d, r) => expect(r.ms).toBeLessThan(10_000), // refused before any model is loaded
  },

  // --- the standard streams -------------------------------------------------------------------------
  {
    name: "streams: a closed stdout (| true) is not an error: exit 0, the PNG written",
    setup: withModel(),
    args: gen(),
    closeStdout: true,
    exit: 0,
    stderr: /^seed 1, 2 steps/,
    check: (d) => expect(fs.existsSync(path.join(d, "o.png"))).toBe(true),
  },
  {
    name: "streams: a closed stderr does not change generate's exit code",
    setup: withModel(),
    args: gen(),
    closeStderr: true,
    exit: 0,
    stderr: /^$/,
    check: (d) => expect(fs.existsSync(path.join(d, "o.png"))).toBe(true),
  },
  {
    name: "streams: a closed stderr does not change conformance's exit code",
    args: ["conformance", "--only", "rng:*", "--out", "{dir}/r", "--threads", "1"],
    closeStderr: true,
    exit: 0,
    stderr: /^$/,
    check: (d) => expect(fs.existsSync(path.join(d, "r", "report.json"))).toBe(true),
  },

  // --- conformance inputs -------------------------------------------------------------------------
  {
    name: "conformance: missing reference set",
    args: ["conformance", "--references", "{dir}/no-refs", "--list"],
    exit: 2,
    stderr: /no-refs: reference set does not exist/,
  },
  {
    name: "conformance: manifest that is not JSON",
    setup: (d) => {
      fs.mkdirSync(path.join(d, "refs"));
      fs.writeFileSync(path.join(d, "refs", "manifest.json"), '{"cases": [');
    },
    args: ["conformance", "--references", "{dir}/refs", "--list"],
    exit: 2,
    stderr: /manifest\.json: not valid JSON/,
  },
  {
    name: "conformance: manifest case pointing outside the set",
    setup: (d) => {
      fs.mkdirSync(path.join(d, "refs"));
      fs.writeFileSync(
        path.join(d, "refs", "manifest.json"),
        JSON.stringify({ cases: [{ id: "rng:x", stage: "rng", file: "../../etc/passwd", sha256: "0" }] }),
      );
    },
    args: ["conformance", "--references", "{dir}/refs", "--list"],
    exit: 2,
    stderr: /case rng:x points outside the set|rng:x.*outside/,
  },
  {
    name: "conformance: manifest.json is /dev/zero",
    setup: (d) => {
      fs.mkdirSync(path.join(d, "refs"));
      fs.symlinkSync("/dev/zero", path.join(d, "refs", "manifest.json"));
    },
    args: ["conformance", "--references", "{dir}/refs", "--list"],
    exit: 2,
    stderr: /manifest\.json: .*not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "conformance: manifest.json is a FIFO",
    setup: (d) => {
      fs.mkdirSync(path.join(d, "refs"));
      mkfifo(path.join(d, "refs", "manifest.json"));
    },
    args: ["conformance", "--references", "{dir}/refs", "--list"],
    exit: 2,
    stderr: /manifest\.json: .*not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "conformance: --tolerances is /dev/zero",
    args: ["conformance", "--tolerances", "/dev/zero", "--list"],
    exit: 2,
    stderr: /\/dev\/zero: a character device, not a regular file \(tolerances must be a file\)/,
    timeoutMs: 10_000,
  },
  {
    name: "conformance: --tolerances is a FIFO",
    setup: (d) => mkfifo(path.join(d, "tol.json")),
    args: ["conformance", "--tolerances", "{dir}/tol.json", "--list"],
    exit: 2,
    stderr: /tol\.json: a FIFO, not a regular file/,
    timeoutMs: 10_000,
  },
  {
    name: "conformance: --only '************#' answers at once (the regex glob never returned)",
    args: ["conformance", "--only", "************#", "--out", "{dir}/r"],
    exit: 2,
    stderr: /no cases match --only "\*{12}#"/,
    absent: ["r"],
    timeoutMs: 10_000,
  },
  {
    name: "conformance: --only with 100,000 stars and a long literal tail answers at once",
    args: ["conformance", "--only", `${"*a".repeat(50_000)}#`, "--out", "{dir}/r"],
    exit: 2,
    stderr: /no cases match --only/,
    timeoutMs: 10_000,
  },
  {
    name: "conformance: --list with a glob lists the matching ids only",
    args: ["conformance", "--list", "--only", "rng:seed42-1?"],
    exit: 0,
    stderr: /^$/,
    stdout: /^rng:seed42-15\nrng:seed42-16\nrng:seed42-17\n$/,
  },

  // --- signals ------------------------------------------------------------------------------------
  {
    name: "signal: SIGTERM mid-generate exits 143, no PNG and no temporary left",
    args: ["generate", "--model", TINY, "--prompt", "x", "--steps", "999", "--threads", "1", "--seed", "1", "--out", "{dir}/out/a.png"],
    setup: (d) => fs.mkdirSync(path.join(d, "out")),
    signal: { name: "SIGTERM", when: /generate \d+\/\d+ / },
    exit: 143,
    stderrLines: "any",
    stderr: /^sd-harness: terminated \(SIGTERM\); no partial output was written$/,
    timeoutMs: 120_000,
    check: (d, r) => {
      expect(fs.readdirSync(path.join(d, "out"))).toEqual([]);
      expect(r.msAfterSignal).toBeLessThan(10_000);
    },
  },
  {
    // ONNX Runtime creates a session in one synchronous call (the tiny U-Net: about 7 s here), so a
    // signal during loading is answered when that call returns; before main() has installed its
    // handlers the default action ends the process (also 143, with nothing to say)
    name: "signal: SIGTERM while the models load exits 143 once the session being created is ready",
    args: ["generate", "--model", TINY, "--prompt", "x", "--steps", "50", "--threads", "1", "--seed", "1", "--out", "{dir}/out/a.png"],
    setup: (d) => fs.mkdirSync(path.join(d, "out")),
    signal: { name: "SIGTERM", when: 1500 },
    exit: 143,
    stderrLines: "any",
    stderr: /^(sd-harness: terminated \(SIGTERM\); no partial output was written)?$/,
    timeoutMs: 120_000,
    check: (d, r) => {
      expect(fs.readdirSync(path.join(d, "out"))).toEqual([]);
      expect(r.msAfterSignal).toBeLessThan(30_000);
    },
  },
  {
    name: "signal: SIGTERM during scheduler cases (no ONNX work to yield on) exits 143, no report",
    args: ["conformance", "--only", "scheduler:*", "--out", "{dir}/r", "--threads", "1"],
    signal: { name: "SIGTERM", when: /^PASS /m },
    exit: 143,
    stderrLines: "any",
    stderr: /^sd-harness: terminated \(SIGTERM\); no partial output was written$/,
    absent: ["r"],
    timeoutMs: 120_000,
    check: (_d, r) => expect(r.msAfterSignal).toBeLessThan(5_000),
  },
  {
    name: "signal: SIGINT mid-conformance still exits 130",
    args: ["conformance", "--only", "scheduler:*", "--out", "{dir}/r", "--threads", "1"],
    signal: { name: "SIGINT", when: /^PASS /m },
    exit: 130,
    stderrLines: "any",
    stderr: /^sd-harness: interrupted; no partial output was written$/,
    absent: ["r"],
    timeoutMs: 120_000,
  },
];

testCliCases(cases);
