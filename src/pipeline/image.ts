/**
 * Image I/O: PNG in (pngjs), PNG out with a `parameters` text chunk in the A1111 /
 * stable-diffusion.cpp format, and conversions between uint8 HWC pictures and the pipeline's
 * float NCHW tensors, with diffusers' VaeImageProcessor arithmetic.
 */
import * as zlib from "node:zlib";
import { PNG } from "pngjs";
import { HarnessError, ExitCode, oneLine } from "../errors";
import { F32, f32 } from "../tensor/tensor";
import { writeFileAtomic } from "../util/atomic";
import { readInputFile, INPUT_LIMITS } from "../util/read-input";

export interface RgbImage {
  readonly width: number;
  readonly height: number;
  /** HWC, 3 channels */
  readonly data: Uint8Array;
}

export interface GrayImage {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
}

/** The largest side and pixel count a PNG may declare: the largest output size (8192 x 8192). */
const MAX_IMAGE_SIDE = 8192;
const MAX_IMAGE_PIXELS = 8192 * 8192;

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** What a PNG's IHDR chunk declares. */
export interface PngHeader {
  readonly width: number;
  readonly height: number;
  readonly bitDepth: number;
  /** 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA */
  readonly colorType: number;
}

/** A decoded PNG: 8-bit RGBA, whatever the file held. */
interface DecodedPng extends PngHeader {
  readonly rgba: Uint8Array;
}

/** Checks a caller applies to the declared size before any pixel is decoded. */
export type PngSizeCheck = (header: PngHeader) => void;

function parseHeader(buf: Buffer, label: string): PngHeader {
  if (buf.length < 8 || !buf.subarray(0, 8).equals(PNG_SIGNATURE)) throw new HarnessError(`${label}: not a PNG file`, ExitCode.usage);
  if (buf.length < 33 || buf.readUInt32BE(8) !== 13 || buf.toString("latin1", 12, 16) !== "IHDR") {
    throw new HarnessError(`${label}: unreadable PNG (no IHDR header chunk)`, ExitCode.usage);
  }
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20), bitDepth: buf[24], colorType: buf[25] };
}

/**
 * The PNG without its tRNS chunks. PIL, which diffusers loads images with, ignores a transparency
 * key when it converts an RGB or grayscale image to "RGB" / "L" (the keyed colour keeps its value);
 * pngjs would turn every pixel of that colour into black. For palette images tRNS only sets alpha,
 * which both drop. Chunks are walked as far as their lengths allow; the rest is left to the decoder.
 */
function withoutTransparencyKey(buf: Buffer): Buffer {
  const parts: Buffer[] = [];
  let start = 8;
  let off = 8;
  while (off + 12 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const end = off + 12 + len;
    if (end > buf.length) break;
    if (buf.toString("latin1", off + 4, off + 8) === "tRNS") {
      parts.push(buf.subarray(start, off));
      start = end;
    }
    off = end;
  }
  if (start === 8) return buf;
  return Buffer.concat([buf.subarray(0, 8), ...parts, buf.subarray(start)]);
}

function readPng(file: string, flag: string, check?: PngSizeCheck): DecodedPng {
  const label = `${flag} ${file}`;
  const buf = readInputFile(file, "a PNG image", INPUT_LIMITS.png, label);
  const header = parseHeader(buf, label);
  // the declared size, before decoding: a 410 KB file declaring 12000x12000 took 1.8 GB to decode
  const { width, height } = header;
  if (width === 0 || height === 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE || width * height > MAX_IMAGE_PIXELS) {
    throw new HarnessError(
      `${label}: declares ${width}x${height} pixels; images from 1 to ${MAX_IMAGE_SIDE} pixels on a side are accepted`,
      ExitCode.usage,
    );
  }
  check?.(header);
  let png: PNG;
  try {
    // 16-bit samples unscaled, so they can be narrowed as PIL does (below)
    png = PNG.sync.read(withoutTransparencyKey(buf), { skipRescale: header.bitDepth === 16 });
  } catch (e) {
    throw new HarnessError(`${label}: unreadable PNG (${oneLine((e as Error).message)})`, ExitCode.usage);
  }
  let rgba: Uint8Array;
  if (header.bitDepth === 16) {
    // PIL reads 16-bit RGB(A) and gray+alpha PNGs as 8-bit modes through their high bytes
    // (rawmode "RGB;16B"), not by rounding v * 255 / 65535 as pngjs would
    const wide = png.data as unknown as Uint16Array;
    rgba = new Uint8Array(wide.length);
    for (let i = 0; i < wide.length; i++) rgba[i] = wide[i] >> 8;
  } else {
    rgba = png.data;
  }
  return { ...header, width: png.width, height: png.height, rgba };
}

/**
 * An RGB (or RGBA, alpha dropped) PNG, as PIL's Image.open(f).convert("RGB") reads it for diffusers.
 * Grayscale and palette images are refused: convert them first. `check` sees the declared size
 * before any pixel is decoded.
 */
export function readRgbPng(file: string, flag = "--init-image", check?: PngSizeCheck): RgbImage {
  const png = readPng(file, flag, (h) => {
    // PNG colour types: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA
    if (h.colorType !== 2 && h.colorType !== 6) {
      const kind =
        ({ 0: "grayscale", 3: "palette", 4: "grayscale+alpha" } as Record<number, string>)[h.colorType] ?? `colour type ${h.colorType}`;
      throw new HarnessError(`${flag} ${file}: a ${kind} PNG; an RGB image is needed (convert it to RGB first)`, ExitCode.usage);
    }
    check?.(h);
  });
  const n = png.width * png.height;
  const data = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    data[3 * i] = png.rgba[4 * i];
    data[3 * i + 1] = png.rgba[4 * i + 1];
    data[3 * i + 2] = png.rgba[4 * i + 2];
  }
  return { width: png.width, height: png.height, data };
}

/**
 * A mask PNG as 8-bit luminance, converted as PIL's convert("L") does for RGB
 * (L = (19595 R + 38470 G + 7471 B + 2^15) >> 16, ITU-R 601-2). A 16-bit grayscale mask is refused:
 * PIL opens it as mode "I;16" and convert("L") clips it to 0..255 instead of scaling it, so nearly
 * every pixel would become white in diffusers; sd-harness will not silently reproduce or differ.
 */
export function readMaskPng(file: string, flag = "--mask", check?: PngSizeCheck): GrayImage {
  const png = readPng(file, flag, (h) => {
    if (h.colorType === 0 && h.bitDepth === 16) {
      throw new HarnessError(
        `${flag} ${file}: a 16-bit grayscale PNG, which PIL (and so diffusers) clips to 0..255 rather than scaling; save the mask as 8-bit`,
        ExitCode.usage,
      );
    }
    check?.(h);
  });
  const n = png.width * png.height;
  const data = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const r = png.rgba[4 * i],
      g = png.rgba[4 * i + 1],
      b = png.rgba[4 * i + 2];
    data[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
  }
  return { width: png.width, height: png.height, data };
}

/** uint8 HWC -> float [1, 3, H, W] in [-1, 1]: x / 255 (float32), then 2x - 1 (VaeImageProcessor). */
export function imageToTensor(img: RgbImage): F32 {
  const { width: w, height: h } = img;
  const plane = w * h;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const x = Math.fround(img.data[3 * i + c] / 255);
      out[c * plane + i] = Math.fround(Math.fround(2 * x) - 1);
    }
  }
  return f32(out, [1, 3, h, w]);
}

/** Mask -> float [1, 1, H, W], binarised at 0.5 as the inpainting mask processor does (1 = repaint). */
export function maskToTensor(mask: GrayImage): F32 {
  const out = new Float32Array(mask.width * mask.height);
  for (let i = 0; i < out.length; i++) out[i] = Math.fround(mask.data[i] / 255) >= 0.5 ? 1 : 0;
  return f32(out, [1, 1, mask.height, mask.width]);
}

/**
 * VAE output [B, 3, H, W] in [-1, 1] -> uint8 HWC pictures: (x * 0.5 + 0.5).clamp(0, 1) in float32,
 * then numpy_to_pil's (x * 255).round() (round half to even).
 */
export function tensorToImages(t: F32): RgbImage[] {
  const [b, c, h, w] = t.dims;
  if (c !== 3) throw new RangeError(`tensorToImages: ${c} channels`);
  const plane = h * w;
  const images: RgbImage[] = [];
  for (let n = 0; n < b; n++) {
    const data = new Uint8Array(plane * 3);
    for (let ch = 0; ch < 3; ch++) {
      const base = (n * 3 + ch) * plane;
      for (let i = 0; i < plane; i++) {
        data[3 * i + ch] = toByte(denormalize(t.data[base + i]));
      }
    }
    images.push({ width: w, height: h, data });
  }
  return images;
}

function denormalize(x: number): number {
  const y = Math.fround(Math.fround(x * 0.5) + 0.5);
  return y < 0 ? 0 : y > 1 ? 1 : y;
}

function toByte(v: number): number {
  const s = Math.fround(v * 255);
  const r = Math.round(s);
  // numpy rounds half to even
  return s - Math.floor(s) === 0.5 && r % 2 === 1 ? r - 1 : r;
}

// ---- PNG writing with a text chunk -------------------------------------------------------------

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "latin1");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/**
 * A text chunk as PIL's PngInfo.add_text writes it: tEXt when the value is Latin-1, else iTXt
 * (UTF-8). A1111 and stable-diffusion.cpp read the `parameters` key from either.
 */
function textChunk(key: string, value: string): Buffer {
  const latin1 = /^[\u0000-\u00ff]*$/.test(value);
  if (latin1) return chunk("tEXt", Buffer.concat([Buffer.from(key, "latin1"), Buffer.from([0]), Buffer.from(value, "latin1")]));
  // iTXt: keyword \0 compression-flag compression-method language-tag \0 translated-keyword \0 text
  return chunk("iTXt", Buffer.concat([Buffer.from(key, "latin1"), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(value, "utf8")]));
}

export function encodePng(img: RgbImage, text: Record<string, string> = {}): Buffer {
  const png = new PNG({ width: img.width, height: img.height, colorType: 2, inputColorType: 2, inputHasAlpha: false });
  png.data = Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength);
  const encoded = PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false, deflateLevel: 9 });
  // splice the text chunks right after IHDR (8-byte signature + 25-byte IHDR chunk)
  const at = 8 + 25;
  const extra = Object.entries(text).map(([k, v]) => textChunk(k, v));
  return Buffer.concat([encoded.subarray(0, at), ...extra, encoded.subarray(at)]);
}

export function writePng(file: string, img: RgbImage, text: Record<string, string> = {}, noClobber = false): void {
  writeFileAtomic(file, encodePng(img, text), { noClobber });
}

/** The text chunks of a PNG (tEXt, and iTXt uncompressed or zlib-compressed). */
export function readPngText(buf: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let off = 8;
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString("latin1", off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === "tEXt") {
      const z = data.indexOf(0);
      out[data.toString("latin1", 0, z)] = data.toString("latin1", z + 1);
    } else if (type === "iTXt") {
      const z = data.indexOf(0);
      const key = data.toString("latin1", 0, z);
      const compressed = data[z + 1] === 1;
      let p = z + 3;
      p = data.indexOf(0, p) + 1; // language tag
      p = data.indexOf(0, p) + 1; // translated keyword
      const body = data.subarray(p);
      out[key] = (compressed ? zlib.inflateSync(body) : body).toString("utf8");
    }
    off += 12 + len;
  }
  return out;
}
