/**
 * Reading the files a user hands us: the bounded reader (regular files only, size limits), PNGs
 * read as diffusers' PIL reads them (tRNS, 16-bit samples), and ONNX initializers stored as
 * external data (clip skip's final layer norm).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { execFileSync } from "node:child_process";
import { HarnessError } from "../src/errors";
import { readInputFile } from "../src/util/read-input";
import { readRgbPng, readMaskPng } from "../src/pipeline/image";
import { readFloatInitializers } from "../src/onnx/initializers";
import { externalizeInitializers } from "./helpers/onnx-edit";
import { TINY } from "./helpers/fixtures";
import { chunk } from "./helpers/png-chunks";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-input-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function thrown(f: () => unknown): HarnessError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(HarnessError);
    expect((e as Error).message.split("\n")).toHaveLength(1);
    return e as HarnessError;
  }
  throw new Error("did not throw");
}

describe("readInputFile", () => {
  test("reads a regular file whole, up to the limit", () => {
    const f = path.join(tmp, "ok.json");
    fs.writeFileSync(f, "x".repeat(1000));
    expect(readInputFile(f, "a config", 1000).length).toBe(1000);
    expect(thrown(() => readInputFile(f, "a config", 999)).message).toBe(`${f}: 1000 bytes, over the 999 bytes limit for a config`);
  });

  test("refuses devices, FIFOs and folders without blocking or reading", () => {
    const fifo = path.join(tmp, "fifo");
    execFileSync("mkfifo", [fifo]);
    const t0 = Date.now();
    expect(thrown(() => readInputFile(fifo, "a config", 1 << 20)).message).toBe(
      `${fifo}: a FIFO, not a regular file (a config must be a file)`,
    );
    expect(thrown(() => readInputFile("/dev/zero", "a PNG image", 1 << 20, "--init-image /dev/zero")).message).toBe(
      "--init-image /dev/zero: a character device, not a regular file (a PNG image must be a file)",
    );
    expect(thrown(() => readInputFile(tmp, "a config", 1 << 20)).message).toMatch(/: a directory, not a regular file/);
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  test("a missing file says so", () => {
    expect(thrown(() => readInputFile(path.join(tmp, "nope"), "the U-Net's config", 10)).message).toBe(
      `${path.join(tmp, "nope")}: missing (the U-Net's config)`,
    );
  });
});

// ---- PNGs as PIL reads them --------------------------------------------------------------------

/** A PNG from rows of raw samples (filter byte 0 added), with optional extra chunks before IDAT. */
function png(
  file: string,
  width: number,
  height: number,
  colorType: number,
  bitDepth: number,
  rows: Buffer[],
  extra: Buffer[] = [],
): string {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([bitDepth, colorType, 0, 0, 0], 8);
  const raw = Buffer.concat(rows.map((r) => Buffer.concat([Buffer.from([0]), r])));
  fs.writeFileSync(
    file,
    Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk("IHDR", ihdr),
      ...extra,
      chunk("IDAT", zlib.deflateSync(raw)),
      chunk("IEND", Buffer.alloc(0)),
    ]),
  );
  return file;
}

const u16 = (...v: number[]) => {
  const b = Buffer.alloc(2 * v.length);
  v.forEach((x, i) => b.writeUInt16BE(x, 2 * i));
  return b;
};

describe("PNG reading matches PIL (diffusers: Image.open(f).convert('RGB') / .convert('L'))", () => {
  // Expected values measured with Pillow 13.0.0 on the same bytes.
  const rgbRows = [Buffer.from([10, 20, 30, 200, 100, 50, 0, 0, 0]), Buffer.from([0, 0, 0, 0, 0, 0, 10, 20, 30])];

  test("an RGB PNG with a tRNS colour key: the keyed colour keeps its value (pngjs made it black)", () => {
    const keyed = png(path.join(tmp, "rgb-trns.png"), 3, 2, 2, 8, rgbRows, [chunk("tRNS", u16(10, 20, 30))]);
    const plain = png(path.join(tmp, "rgb.png"), 3, 2, 2, 8, rgbRows);
    const expected = [10, 20, 30, 200, 100, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 20, 30];
    expect(Array.from(readRgbPng(keyed).data)).toEqual(expected);
    expect(Array.from(readRgbPng(plain).data)).toEqual(expected);
    expect(Array.from(readMaskPng(keyed).data)).toEqual([18, 124, 0, 0, 0, 18]);
  });

  test("a grayscale PNG with a tRNS key, as a mask: values unchanged", () => {
    const keyed = png(
      path.join(tmp, "l-trns.png"),
      3,
      2,
      0,
      8,
      [Buffer.from([0, 77, 255]), Buffer.from([77, 128, 77])],
      [chunk("tRNS", u16(77))],
    );
    expect(Array.from(readMaskPng(keyed).data)).toEqual([0, 77, 255, 77, 128, 77]);
  });

  test("16-bit RGB: the high byte of each sample, as PIL's RGB;16B (pngjs rounded v*255/65535)", () => {
    const f = png(path.join(tmp, "rgb16.png"), 2, 1, 2, 16, [u16(0x0000, 0x80ff, 0x7f80, 0xffff, 0x00ff, 0x0100)]);
    expect(Array.from(readRgbPng(f).data)).toEqual([0, 128, 127, 255, 0, 1]);
    expect(Array.from(readMaskPng(f).data)).toEqual([90, 76]);
  });

  test("a 16-bit grayscale mask is refused (PIL's I;16 -> L clips instead of scaling)", () => {
    const f = png(path.join(tmp, "g16.png"), 2, 1, 0, 16, [u16(0x80ff, 0x00ff)]);
    expect(thrown(() => readMaskPng(f)).message).toMatch(/a 16-bit grayscale PNG, which PIL \(and so diffusers\) clips/);
  });

  test("the declared size is checked before decoding: the size check sees the header only", () => {
    const f = png(path.join(tmp, "small.png"), 3, 2, 2, 8, rgbRows);
    const seen: string[] = [];
    expect(
      thrown(() =>
        readRgbPng(f, "--init-image", (h) => {
          seen.push(`${h.width}x${h.height}`);
          throw new HarnessError("stop");
        }),
      ).message,
    ).toBe("stop");
    expect(seen).toEqual(["3x2"]);
    // 9000 pixels wide: refused from the header whatever follows
    const wide = png(path.join(tmp, "wide.png"), 9000, 1, 2, 8, [Buffer.alloc(27000)]);
    expect(thrown(() => readRgbPng(wide)).message).toMatch(/declares 9000x1 pixels; images from 1 to 8192 pixels on a side are accepted/);
  });
});

// ---- ONNX initializers stored as external data ---------------------------------------------------

describe("external-data initializers", () => {
  const want = (n: string) => /final_layer_norm\.(weight|bias)$/.test(n);
  const embedded = readFloatInitializers(path.join(TINY, "text_encoder", "model.onnx"), want);

  function externalCopy(name: string, location: string, dataFile?: string | null): string {
    const dir = path.join(tmp, name);
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, "model.onnx");
    fs.copyFileSync(path.join(TINY, "text_encoder", "model.onnx"), file);
    externalizeInitializers(file, location, dataFile === undefined ? path.join(dir, location) : dataFile);
    return file;
  }

  test("the final layer norm read from external data equals the embedded one (it came back empty)", () => {
    expect(embedded.size).toBe(2);
    const file = externalCopy("ext-ok", "weights.bin");
    const ext = readFloatInitializers(file, want);
    expect([...ext.keys()].sort()).toEqual([...embedded.keys()].sort());
    for (const [k, v] of embedded) {
      expect(v.length).toBeGreaterThan(0);
      expect(Array.from(ext.get(k) as Float32Array)).toEqual(Array.from(v));
    }
  });

  test("locations outside the model's folder are refused", () => {
    const outside = path.join(tmp, "outside.bin");
    fs.writeFileSync(outside, Buffer.alloc(1 << 22));
    const up = externalCopy("ext-up", "../outside.bin", null);
    expect(thrown(() => readFloatInitializers(up, want)).message).toMatch(
      /external data "\.\.\/outside\.bin" is outside the model's folder/,
    );
    const abs = externalCopy("ext-abs", outside, null);
    expect(thrown(() => readFloatInitializers(abs, want)).message).toMatch(/is outside the model's folder/);
    // a symlink inside the folder that leads out of it
    const link = externalCopy("ext-link", "link.bin", null);
    fs.symlinkSync(outside, path.join(path.dirname(link), "link.bin"));
    expect(thrown(() => readFloatInitializers(link, want)).message).toMatch(/"link\.bin" resolves outside the model's folder/);
  });

  test("a data file too short for the offsets, or missing, is a one-line error", () => {
    const file = externalCopy("ext-short", "w.bin");
    fs.truncateSync(path.join(path.dirname(file), "w.bin"), 100);
    expect(thrown(() => readFloatInitializers(file, want)).message).toMatch(/"w\.bin": bytes \d+\.\.\d+ run past its end \(100 bytes\)/);
    const missing = externalCopy("ext-missing", "gone.bin", null);
    expect(thrown(() => readFloatInitializers(missing, want)).message).toMatch(/"gone\.bin" cannot be read \(ENOENT\)/);
  });
});

describe("library options", () => {
  test("threads above 4 per CPU core are refused before any session is made (1024 on 2 cores hung)", async () => {
    const { StableDiffusionPipeline } = await import("../src/pipeline/pipeline");
    const { maxThreads } = await import("../src/util/threads");
    const t0 = Date.now();
    await expect(StableDiffusionPipeline.load(TINY, { threads: maxThreads() + 1 })).rejects.toThrow(
      new RegExp(`^threads: ${maxThreads() + 1} is more than 4 per CPU core`),
    );
    await expect(StableDiffusionPipeline.load(TINY, { threads: -1 })).rejects.toThrow(/^threads: -1 is not a whole number >= 0$/);
    expect(Date.now() - t0).toBeLessThan(5000);
    const ok = await StableDiffusionPipeline.load(TINY, { threads: maxThreads() });
    await ok.release();
  });
});

describe("tensor files", () => {
  test("readSafetensors refuses FIFOs and devices at once (a FIFO blocked them)", async () => {
    const { readSafetensors } = await import("../src/tensor/safetensors");
    const fifo = path.join(tmp, "tensor-fifo");
    execFileSync("mkfifo", [fifo]);
    const t0 = Date.now();
    expect(thrown(() => readSafetensors(fifo)).message).toBe(`${fifo}: a FIFO, not a regular file (a safetensors file must be a file)`);
    expect(thrown(() => readSafetensors("/dev/zero")).message).toMatch(/^\/dev\/zero: a character device, not a regular file/);
    expect(Date.now() - t0).toBeLessThan(1000);
  });
});
