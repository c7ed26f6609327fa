/**
 * safetensors reader / writer (https://github.com/huggingface/safetensors, format: 8-byte LE header
 * length N, N bytes of JSON header, then the data buffer). The reader treats the file as hostile:
 * every length and offset is bounds-checked before anything is allocated, overlapping or
 * out-of-order ranges are rejected, and every failure is a HarnessError naming the file.
 */
import { HarnessError, ExitCode, oneLine } from "../errors";
import { readInputFile, INPUT_LIMITS } from "../util/read-input";
import { DType, Tensor, TypedData, numel, formatDims } from "./tensor";
import { writeFileAtomic } from "../util/atomic";

const MAX_HEADER = 100 * 1024 * 1024; // the reference implementation's own limit

const ST_DTYPES: Record<string, { dtype: DType; bytes: number }> = {
  F32: { dtype: "float32", bytes: 4 },
  F16: { dtype: "float16", bytes: 2 },
  F64: { dtype: "float64", bytes: 8 },
  I64: { dtype: "int64", bytes: 8 },
  I32: { dtype: "int32", bytes: 4 },
  I16: { dtype: "int16", bytes: 2 },
  I8: { dtype: "int8", bytes: 1 },
  U8: { dtype: "uint8", bytes: 1 },
  BOOL: { dtype: "bool", bytes: 1 },
};

export interface SafetensorsFile {
  readonly tensors: ReadonlyMap<string, Tensor<TypedData>>;
  readonly metadata: Readonly<Record<string, string>>;
}

function fail(file: string, why: string): never {
  throw new HarnessError(`${file}: not a valid safetensors file: ${why}`, ExitCode.usage);
}

function typedView(buf: Buffer, dtype: DType, start: number, count: number): TypedData {
  // Copy into an aligned buffer: views over a Buffer slice may be misaligned.
  const bytes = buf.subarray(start, start + count * bytesOf(dtype));
  const ab = new ArrayBuffer(bytes.length);
  new Uint8Array(ab).set(bytes);
  switch (dtype) {
    case "float32":
      return new Float32Array(ab);
    case "float64":
      return new Float64Array(ab);
    case "float16":
      return new Uint16Array(ab);
    case "int64":
      return new BigInt64Array(ab);
    case "int32":
      return new Int32Array(ab);
    case "int16":
      return new Int16Array(ab);
    case "int8":
      return new Int8Array(ab);
    case "uint8":
    case "bool":
      return new Uint8Array(ab);
  }
}

function bytesOf(dtype: DType): number {
  for (const v of Object.values(ST_DTYPES)) if (v.dtype === dtype) return v.bytes;
  throw new RangeError(dtype);
}

/** Parse safetensors bytes. `file` is only used in error messages. */
export function parseSafetensors(buf: Buffer, file: string): SafetensorsFile {
  if (buf.length < 8) fail(file, `${buf.length} bytes, shorter than the 8-byte header length`);
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER)) fail(file, `header length ${n} exceeds ${MAX_HEADER}`);
  const headerLen = Number(n);
  if (8 + headerLen > buf.length) fail(file, `header length ${headerLen} runs past the end of the file (${buf.length} bytes)`);
  let header: unknown;
  try {
    header = JSON.parse(buf.subarray(8, 8 + headerLen).toString("utf8"));
  } catch (e) {
    fail(file, `header is not JSON (${oneLine((e as Error).message)})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) fail(file, "header is not a JSON object");
  const dataStart = 8 + headerLen;
  const dataLen = buf.length - dataStart;
  const metadata: Record<string, string> = {};
  const entries: { name: string; dtype: DType; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof raw !== "object" || raw === null) fail(file, "__metadata__ is not an object");
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== "string") fail(file, `__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof info !== "object" || info === null) fail(file, `entry ${JSON.stringify(name)} is not an object`);
    const dt = typeof info.dtype === "string" ? ST_DTYPES[info.dtype] : undefined;
    if (!dt) fail(file, `tensor ${JSON.stringify(name)} has unsupported dtype ${JSON.stringify(info.dtype)}`);
    const shape = info.shape;
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0) || shape.length > 8) {
      fail(file, `tensor ${JSON.stringify(name)} has an invalid shape ${JSON.stringify(shape)}`);
    }
    const offs = info.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || offs.some((o) => !Number.isSafeInteger(o) || o < 0)) {
      fail(file, `tensor ${JSON.stringify(name)} has invalid data_offsets ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as number[];
    if (end < begin || end > dataLen)
      fail(file, `tensor ${JSON.stringify(name)} data_offsets [${begin}, ${end}] outside the ${dataLen}-byte data buffer`);
    const count = numel(shape as number[]);
    if (count * dt.bytes !== end - begin) {
      fail(
        file,
        `tensor ${JSON.stringify(name)} shape ${formatDims(shape as number[])} needs ${count * dt.bytes} bytes, offsets give ${end - begin}`,
      );
    }
    entries.push({ name, dtype: dt.dtype, shape: shape as number[], begin, end });
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < entries.length; i++) {
    if (entries[i].begin < entries[i - 1].end)
      fail(file, `tensors ${JSON.stringify(entries[i - 1].name)} and ${JSON.stringify(entries[i].name)} overlap`);
  }
  const tensors = new Map<string, Tensor<TypedData>>();
  for (const e of entries) {
    const count = numel(e.shape);
    tensors.set(e.name, { dtype: e.dtype, dims: e.shape, data: typedView(buf, e.dtype, dataStart + e.begin, count) });
  }
  return { tensors, metadata };
}

export function readSafetensors(file: string): SafetensorsFile {
  // a regular file only (a FIFO blocked, /dev/zero read without end), at most 2 GiB
  return parseSafetensors(readInputFile(file, "a safetensors file", INPUT_LIMITS.tensor), file);
}

const DTYPE_TO_ST: Record<DType, string> = {
  float32: "F32",
  float16: "F16",
  float64: "F64",
  int64: "I64",
  int32: "I32",
  int16: "I16",
  int8: "I8",
  uint8: "U8",
  bool: "BOOL",
};

export function encodeSafetensors(tensors: Record<string, Tensor<TypedData>>, metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  const chunks: Buffer[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: DTYPE_TO_ST[t.dtype], shape: t.dims, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += " "; // align the data buffer, as the reference writer does
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([len, Buffer.from(json, "utf8"), ...chunks]);
}

export function writeSafetensors(file: string, tensors: Record<string, Tensor<TypedData>>, metadata: Record<string, string> = {}): void {
  writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}
