/**
 * NumPy .npy reader / writer (format 1.0, 2.0 and 3.0; numpy/lib/format.py), for tensors exchanged
 * with Python tooling. The layout: the magic "\x93NUMPY", major and minor version bytes, the
 * header length (uint16 LE for 1.0, uint32 LE for 2.0/3.0), a Python dict literal
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces to a multiple of 64 bytes and ended by "\n", then the raw data.
 *
 * The reader treats the file as hostile: the header length is bounded, the dict is parsed by a
 * small strict parser (never eval), every dimension must be a safe non-negative integer, and the
 * element count times the item size must equal the bytes actually present, all before anything
 * is allocated for the data. Supported: little-endian f4, f8, f2, i4, i8, u1 and b1, C order
 * (Fortran order only where it means the same bytes: rank <= 1). Every failure is a HarnessError
 * naming the file.
 */
import * as fs from "node:fs";
import { HarnessError, ExitCode } from "../errors";
import { DType, Tensor, TypedData, formatDims } from "./tensor";
import { writeFileAtomic } from "../util/atomic";

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY
/** numpy's own default limit (np.load(max_header_size=10000)) is lower; this only bounds hostile input */
const MAX_HEADER = 1 << 20;
const MAX_RANK = 64; // numpy 2's NPY_MAXDIMS

/** descr (after the byte-order character) -> our dtype */
const DESCR: Record<string, { dtype: DType; bytes: number }> = {
  f4: { dtype: "float32", bytes: 4 },
  f8: { dtype: "float64", bytes: 8 },
  f2: { dtype: "float16", bytes: 2 },
  i4: { dtype: "int32", bytes: 4 },
  i8: { dtype: "int64", bytes: 8 },
  u1: { dtype: "uint8", bytes: 1 },
  b1: { dtype: "bool", bytes: 1 },
};

const DTYPE_DESCR: Partial<Record<DType, string>> = {
  float32: "<f4", float64: "<f8", float16: "<f2", int32: "<i4", int64: "<i8", uint8: "|u1", bool: "|b1",
};

export interface NpyHeader {
  readonly version: 1 | 2 | 3;
  readonly dtype: DType;
  readonly itemBytes: number;
  readonly shape: readonly number[];
  readonly fortranOrder: boolean;
  /** byte offset of the data */
  readonly dataOffset: number;
  /** element count (product of the shape) */
  readonly count: number;
}

function fail(file: string, why: string): never {
  throw new HarnessError(`${file}: not a valid .npy file: ${why}`, ExitCode.usage);
}

/** A strict parser for the header's Python literal: a dict of str keys to str / bool / int tuples. */
class LiteralParser {
  private i = 0;
  constructor(private readonly s: string, private readonly file: string) {}

  private ws(): void {
    while (this.i < this.s.length && /[ \t\r\n]/.test(this.s[this.i])) this.i++;
  }

  private expect(ch: string): void {
    this.ws();
    if (this.s[this.i] !== ch) fail(this.file, `header: expected '${ch}' at offset ${this.i}`);
    this.i++;
  }

  private peek(): string {
    this.ws();
    return this.s[this.i] ?? "";
  }

  private str(): string {
    this.ws();
    const q = this.s[this.i];
    if (q !== "'" && q !== '"') fail(this.file, `header: expected a string at offset ${this.i}`);
    const end = this.s.indexOf(q, this.i + 1);
    if (end < 0) fail(this.file, "header: unterminated string");
    const v = this.s.slice(this.i + 1, end);
    if (v.includes("\\")) fail(this.file, "header: escapes in strings are not supported");
    this.i = end + 1;
    return v;
  }

  private int(): number {
    this.ws();
    const m = /^[0-9]{1,20}L?/.exec(this.s.slice(this.i, this.i + 22));
    if (!m) fail(this.file, `header: expected a dimension at offset ${this.i}`);
    this.i += m[0].length;
    const v = Number(m[0].replace("L", ""));
    if (!Number.isSafeInteger(v)) fail(this.file, `header: dimension ${m[0]} is too large`);
    return v;
  }

  private value(): string | boolean | number[] {
    const c = this.peek();
    if (c === "'" || c === '"') return this.str();
    if (c === "(" || c === "[") {
      const close = c === "(" ? ")" : "]";
      this.i++;
      const dims: number[] = [];
      while (this.peek() !== close) {
        if (dims.length >= MAX_RANK) fail(this.file, `header: more than ${MAX_RANK} dimensions`);
        dims.push(this.int());
        if (this.peek() === ",") this.i++;
        else if (this.peek() !== close) fail(this.file, `header: expected ',' or '${close}' at offset ${this.i}`);
      }
      this.i++;
      return dims;
    }
    for (const [word, v] of [["True", true], ["False", false]] as const) {
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return v;
      }
    }
    fail(this.file, `header: unexpected ${JSON.stringify(this.s.slice(this.i, this.i + 12))} at offset ${this.i}`);
  }

  dict(): Map<string, string | boolean | number[]> {
    const out = new Map<string, string | boolean | number[]>();
    this.expect("{");
    while (this.peek() !== "}") {
      const key = this.str();
      if (out.has(key)) fail(this.file, `header: key ${JSON.stringify(key)} appears twice`);
      this.expect(":");
      out.set(key, this.value());
      if (this.peek() === ",") this.i++;
      else if (this.peek() !== "}") fail(this.file, `header: expected ',' or '}' at offset ${this.i}`);
    }
    this.i++;
    this.ws();
    if (this.i !== this.s.length) fail(this.file, `header: trailing characters after the dict`);
    return out;
  }
}

/**
 * Parse and validate the header only. `totalBytes` is the file's size: the data it declares must be
 * exactly what follows the header.
 */
export function parseNpyHeader(head: Uint8Array, totalBytes: number, file: string): NpyHeader {
  const buf = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (buf.length < 10 || !buf.subarray(0, 6).equals(MAGIC)) fail(file, "no \\x93NUMPY magic");
  const major = buf[6];
  const minor = buf[7];
  if (major < 1 || major > 3 || minor !== 0) fail(file, `unsupported format version ${major}.${minor}`);
  const lenBytes = major === 1 ? 2 : 4;
  if (buf.length < 8 + lenBytes) fail(file, `${buf.length} bytes, shorter than the header`);
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const dataOffset = 8 + lenBytes + headerLen;
  if (headerLen > MAX_HEADER) fail(file, `header length ${headerLen} exceeds ${MAX_HEADER}`);
  if (dataOffset > totalBytes) fail(file, `header length ${headerLen} runs past the end of the file (${totalBytes} bytes)`);
  if (dataOffset > buf.length) fail(file, `header truncated (${buf.length} of ${dataOffset} bytes)`);
  const raw = buf.subarray(8 + lenBytes, dataOffset);
  let text: string;
  if (major === 3) {
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
    } catch {
      fail(file, "header is not valid UTF-8");
    }
  } else {
    if (raw.some((b) => b > 0x7f)) fail(file, "header is not ASCII (version 1.0/2.0)");
    text = raw.toString("latin1");
  }
  const dict = new LiteralParser(text, file).dict();
  const keys = [...dict.keys()].sort();
  if (keys.join(",") !== "descr,fortran_order,shape") fail(file, `header keys are ${JSON.stringify(keys)}, expected descr, fortran_order, shape`);
  const descr = dict.get("descr");
  const fortran = dict.get("fortran_order");
  const shape = dict.get("shape");
  if (typeof descr !== "string") fail(file, "descr is not a string");
  if (typeof fortran !== "boolean") fail(file, "fortran_order is not True/False");
  if (!Array.isArray(shape)) fail(file, "shape is not a tuple");
  const order = descr[0];
  const kind = DESCR[descr.slice(1)];
  if (!kind || descr.length !== 3) fail(file, `unsupported dtype ${JSON.stringify(descr)} (supported: f4, f8, f2, i4, i8, u1, b1)`);
  if (order === ">" && kind.bytes > 1) fail(file, `dtype ${descr} is big-endian; only little-endian data is supported`);
  if (order !== "<" && order !== "|" && order !== "=" && !(order === ">" && kind.bytes === 1)) fail(file, `unsupported dtype ${JSON.stringify(descr)}`);
  if (fortran && shape.length > 1) fail(file, `Fortran-order array ${formatDims(shape)}; only C order is supported`);
  // count the elements without overflowing: stop as soon as the bytes would exceed the file
  const available = totalBytes - dataOffset;
  let count = 1;
  for (const d of shape) {
    count *= d;
    if (count * kind.bytes > available && !shape.includes(0)) {
      fail(file, `shape ${formatDims(shape)} of ${descr.slice(1)} needs more than the ${available} data bytes present`);
    }
  }
  if (count * kind.bytes !== available) {
    fail(file, `shape ${formatDims(shape)} of ${descr.slice(1)} needs ${count * kind.bytes} data bytes, the file has ${available}`);
  }
  return { version: major as 1 | 2 | 3, dtype: kind.dtype, itemBytes: kind.bytes, shape, fortranOrder: fortran, dataOffset, count };
}

function typed(dtype: DType, ab: ArrayBuffer): TypedData {
  switch (dtype) {
    case "float32": return new Float32Array(ab);
    case "float64": return new Float64Array(ab);
    case "float16": return new Uint16Array(ab);
    case "int32": return new Int32Array(ab);
    case "int64": return new BigInt64Array(ab);
    case "uint8":
    case "bool": return new Uint8Array(ab);
    default: throw new RangeError(dtype);
  }
}

/** Parse .npy bytes. `file` is only used in error messages. */
export function parseNpy(bytes: Uint8Array, file: string): Tensor<TypedData> {
  const h = parseNpyHeader(bytes, bytes.length, file);
  // copy into an aligned buffer (the data offset need not be a multiple of the item size)
  const ab = new ArrayBuffer(h.count * h.itemBytes);
  new Uint8Array(ab).set(bytes.subarray(h.dataOffset, h.dataOffset + ab.byteLength));
  return { dtype: h.dtype, dims: [...h.shape], data: typed(h.dtype, ab) };
}

/** Read a .npy file: the header is read and checked against the file's size before the data is. */
export function readNpy(file: string): Tensor<TypedData> {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new HarnessError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, ExitCode.usage);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) fail(file, "not a regular file");
    const size = st.size;
    const pre = Buffer.alloc(Math.min(12, size));
    fs.readSync(fd, pre, 0, pre.length, 0);
    if (pre.length < 10 || !pre.subarray(0, 6).equals(MAGIC)) fail(file, "no \\x93NUMPY magic");
    const lenBytes = pre[6] === 1 ? 2 : 4;
    const headerLen = lenBytes === 2 ? pre.readUInt16LE(8) : pre.length >= 12 ? pre.readUInt32LE(8) : fail(file, "truncated header");
    if (headerLen > MAX_HEADER) fail(file, `header length ${headerLen} exceeds ${MAX_HEADER}`);
    const headEnd = Math.min(8 + lenBytes + headerLen, size);
    const head = Buffer.alloc(headEnd);
    fs.readSync(fd, head, 0, headEnd, 0);
    const h = parseNpyHeader(head, size, file);
    const ab = new ArrayBuffer(h.count * h.itemBytes);
    const view = new Uint8Array(ab);
    let got = 0;
    while (got < view.length) {
      const n = fs.readSync(fd, view, got, view.length - got, h.dataOffset + got);
      if (n === 0) fail(file, "file shrank while being read");
      got += n;
    }
    return { dtype: h.dtype, dims: [...h.shape], data: typed(h.dtype, ab) };
  } finally {
    fs.closeSync(fd);
  }
}

function pyShape(dims: readonly number[]): string {
  if (dims.length === 0) return "()";
  if (dims.length === 1) return `(${dims[0]},)`;
  return `(${dims.join(", ")})`;
}

/** .npy bytes for a tensor, as numpy.save writes them (version 1.0 unless the header needs 2.0). */
export function encodeNpy(t: Tensor<TypedData>): Buffer {
  const descr = DTYPE_DESCR[t.dtype];
  if (!descr) throw new HarnessError(`.npy: cannot write dtype ${t.dtype}`, ExitCode.usage);
  let count = 1;
  for (const d of t.dims) count *= d;
  const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  if (bytes.length !== count * (DESCR[descr.slice(1)]?.bytes ?? 0)) {
    throw new RangeError(`encodeNpy: ${bytes.length} data bytes for ${t.dtype} ${formatDims(t.dims)}`);
  }
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${pyShape(t.dims)}, }`;
  const build = (lenBytes: number): Buffer => {
    const pre = 8 + lenBytes;
    const padded = Math.ceil((pre + dict.length + 1) / 64) * 64;
    const header = dict + " ".repeat(padded - pre - dict.length - 1) + "\n";
    const out = Buffer.alloc(pre);
    MAGIC.copy(out, 0);
    out[6] = lenBytes === 2 ? 1 : 2;
    out[7] = 0;
    if (lenBytes === 2) out.writeUInt16LE(header.length, 8);
    else out.writeUInt32LE(header.length, 8);
    return Buffer.concat([out, Buffer.from(header, "latin1"), bytes]);
  };
  return dict.length + 11 <= 0xffff ? build(2) : build(4);
}

export function writeNpy(file: string, t: Tensor<TypedData>): void {
  writeFileAtomic(file, encodeNpy(t));
}
