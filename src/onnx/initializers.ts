/**
 * A minimal ONNX protobuf reader that pulls named float initializers out of a model file, without
 * a protobuf dependency. Used for clip skip: diffusers applies the text encoder's final layer norm
 * to the penultimate hidden state, and an optimum export carries that norm's weights but exposes
 * only the raw hidden states.
 * Wire format: ModelProto.graph = 7; GraphProto.initializer = 5; TensorProto: dims = 1,
 * data_type = 2, float_data = 4, int32_data = 5 (float16 bit patterns), name = 8, raw_data = 9,
 * external_data = 13 (StringStringEntryProto: key = 1, value = 2), data_location = 14 (1 = EXTERNAL).
 * FLOAT16 initializers (fp16 conversions that do not keep the norms in fp32) are widened to float32.
 * External data (any model over protobuf's 2 GB, and some exporters always) is read from the file
 * its `location` names, relative to the model's folder and confined to it, at `offset` for `length`
 * bytes; ignoring it gave empty norm weights and NaN under --clip-skip.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { HarnessError, ExitCode } from "../errors";
import { halfToFloat } from "../tensor/float16";

export interface Field {
  readonly no: number;
  readonly wire: number;
  readonly value: number;
  readonly start: number;
  readonly end: number;
}

export function* fields(buf: Buffer, start: number, end: number, file: string): Generator<Field> {
  let p = start;
  const varint = (): number => {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (p >= end) throw new HarnessError(`${file}: truncated protobuf`, ExitCode.usage);
      const b = buf[p++];
      result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return result;
      mul *= 128;
    }
    throw new HarnessError(`${file}: malformed protobuf varint`, ExitCode.usage);
  };
  while (p < end) {
    const key = varint();
    const no = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) yield { no, wire, value: varint(), start: p, end: p };
    else if (wire === 1) {
      p += 8;
      yield { no, wire, value: 0, start: p - 8, end: p };
    } else if (wire === 5) {
      p += 4;
      yield { no, wire, value: 0, start: p - 4, end: p };
    } else if (wire === 2) {
      const len = varint();
      if (p + len > end) throw new HarnessError(`${file}: truncated protobuf field`, ExitCode.usage);
      p += len;
      yield { no, wire, value: len, start: p - len, end: p };
    } else throw new HarnessError(`${file}: unsupported protobuf wire type ${wire}`, ExitCode.usage);
  }
}

/** A packed repeated varint field's values (int32_data). */
function packedVarints(buf: Buffer, start: number, end: number): number[] {
  const out: number[] = [];
  let v = 0;
  let mul = 1;
  for (let p = start; p < end; p++) {
    v += (buf[p] & 0x7f) * mul;
    mul *= 128;
    if ((buf[p] & 0x80) === 0) {
      out.push(v);
      v = 0;
      mul = 1;
    }
  }
  return out;
}

/** One initializer (TensorProto) of a model: its name, data type and where its values lie. */
export interface InitializerSpans {
  readonly name: string;
  /** 1 = FLOAT, 10 = FLOAT16, … */
  readonly dataType: number;
  /** raw_data (field 9) */
  readonly raw: Field | null;
  /** packed float_data (field 4) */
  readonly floatData: Field | null;
  /** unpacked float_data values */
  readonly floatScalars: readonly number[];
  /** packed int32_data (field 5; float16 bit patterns) */
  readonly int32Data: Field | null;
  /** unpacked int32_data values */
  readonly int32Scalars: readonly number[];
  /** set when data_location is EXTERNAL: where the raw bytes lie */
  readonly external: ExternalData | null;
}

/** TensorProto.external_data: a file beside the model, and the byte range of this tensor in it. */
export interface ExternalData {
  readonly location: string;
  readonly offset: number;
  /** null: to the end of the file */
  readonly length: number | null;
}

/** Every initializer of an ONNX model held in `buf` (ModelProto.graph.initializer). */
export function* initializers(buf: Buffer, file: string): Generator<InitializerSpans> {
  for (const f of fields(buf, 0, buf.length, file)) {
    if (f.no !== 7 || f.wire !== 2) continue;
    for (const g of fields(buf, f.start, f.end, file)) {
      if (g.no !== 5 || g.wire !== 2) continue;
      let name = "";
      let dataType = 0;
      let raw: Field | null = null;
      let floatData: Field | null = null;
      let int32Data: Field | null = null;
      const floatScalars: number[] = [];
      const int32Scalars: number[] = [];
      const externalEntries = new Map<string, string>();
      let dataLocation = 0;
      for (const t of fields(buf, g.start, g.end, file)) {
        if (t.no === 8 && t.wire === 2) name = buf.toString("utf8", t.start, t.end);
        else if (t.no === 2 && t.wire === 0) dataType = t.value;
        else if (t.no === 9 && t.wire === 2) raw = t;
        else if (t.no === 4 && t.wire === 2) floatData = t;
        else if (t.no === 4 && t.wire === 5) floatScalars.push(buf.readFloatLE(t.start));
        else if (t.no === 5 && t.wire === 0) int32Scalars.push(t.value);
        else if (t.no === 5 && t.wire === 2) int32Data = t;
        else if (t.no === 14 && t.wire === 0) dataLocation = t.value;
        else if (t.no === 13 && t.wire === 2) {
          let key = "";
          let value = "";
          for (const e of fields(buf, t.start, t.end, file)) {
            if (e.no === 1 && e.wire === 2) key = buf.toString("utf8", e.start, e.end);
            else if (e.no === 2 && e.wire === 2) value = buf.toString("utf8", e.start, e.end);
          }
          externalEntries.set(key, value);
        }
      }
      const external = dataLocation === 1 ? externalDataOf(name, externalEntries, file) : null;
      yield { name, dataType, raw, floatData, floatScalars, int32Data, int32Scalars, external };
    }
  }
}

function externalDataOf(name: string, entries: ReadonlyMap<string, string>, file: string): ExternalData {
  const location = entries.get("location");
  if (!location)
    throw new HarnessError(`${file}: initializer ${JSON.stringify(name)} is stored externally but names no location`, ExitCode.usage);
  const int = (key: string): number | null => {
    const v = entries.get(key);
    if (v === undefined) return null;
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v)))
      throw new HarnessError(
        `${file}: initializer ${JSON.stringify(name)} has external ${key} ${JSON.stringify(v)}, not a byte count`,
        ExitCode.usage,
      );
    return Number(v);
  };
  return { location, offset: int("offset") ?? 0, length: int("length") };
}

/**
 * The bytes of an external initializer. The location is relative to the model's folder and must
 * stay inside it (no absolute paths, no "..", no symlink out): a model file must not make us read
 * arbitrary files.
 */
function readExternal(file: string, name: string, ext: ExternalData): Buffer {
  const dir = path.dirname(path.resolve(file));
  const target = path.resolve(dir, ext.location);
  const where = `${file}: initializer ${JSON.stringify(name)}'s external data ${JSON.stringify(ext.location)}`;
  const inside = (root: string, p: string) => {
    const rel = path.relative(root, p);
    return rel !== "" && !rel.startsWith("..") && !path.isAbsolute(rel);
  };
  if (path.isAbsolute(ext.location) || !inside(dir, target))
    throw new HarnessError(`${where} is outside the model's folder`, ExitCode.usage);
  let fd: number;
  try {
    if (!inside(fs.realpathSync(dir), fs.realpathSync(target)))
      throw new HarnessError(`${where} resolves outside the model's folder`, ExitCode.usage);
    fd = fs.openSync(target, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    if (e instanceof HarnessError) throw e;
    throw new HarnessError(`${where} cannot be read (${(e as NodeJS.ErrnoException).code ?? "error"})`, ExitCode.usage);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new HarnessError(`${where} is not a regular file`, ExitCode.usage);
    const length = ext.length ?? st.size - ext.offset;
    if (ext.offset + length > st.size || length < 0) {
      throw new HarnessError(`${where}: bytes ${ext.offset}..${ext.offset + length} run past its end (${st.size} bytes)`, ExitCode.usage);
    }
    const out = Buffer.alloc(length);
    let n = 0;
    while (n < length) {
      const got = fs.readSync(fd, out, n, length - n, ext.offset + n);
      if (got === 0) break;
      n += got;
    }
    if (n < length) throw new HarnessError(`${where}: short read (${n} of ${length} bytes)`, ExitCode.usage);
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** Float32 initializers whose names satisfy `want`, from an ONNX file (weights embedded or external). */
export function readFloatInitializers(file: string, want: (name: string) => boolean): Map<string, Float32Array> {
  const buf = fs.readFileSync(file);
  const out = new Map<string, Float32Array>();
  for (const init of initializers(buf, file)) {
    const { name, dataType } = init;
    if (!want(name) || (dataType !== 1 && dataType !== 10)) continue; // 1 = FLOAT, 10 = FLOAT16
    if (init.external) {
      // external data holds the tensor's raw little-endian bytes, as raw_data would
      const bytes = readExternal(file, name, init.external);
      const width = dataType === 1 ? 4 : 2;
      if (bytes.length % width !== 0)
        throw new HarnessError(
          `${file}: initializer ${JSON.stringify(name)}'s external data is ${bytes.length} bytes, not whole ${dataType === 1 ? "float32" : "float16"} values`,
          ExitCode.usage,
        );
      const a = new Float32Array(bytes.length / width);
      for (let i = 0; i < a.length; i++) a[i] = dataType === 1 ? bytes.readFloatLE(4 * i) : halfToFloat(bytes.readUInt16LE(2 * i));
      out.set(name, a);
      continue;
    }
    const { raw } = init;
    if (dataType === 10) {
      const packed = init.int32Data ? packedVarints(buf, init.int32Data.start, init.int32Data.end) : [];
      const a = raw ? new Float32Array((raw.end - raw.start) / 2) : Float32Array.from([...init.int32Scalars, ...packed], halfToFloat);
      if (raw) for (let i = 0; i < a.length; i++) a[i] = halfToFloat(buf.readUInt16LE(raw.start + 2 * i));
      out.set(name, a);
    } else if (raw) {
      const a = new Float32Array((raw.end - raw.start) / 4);
      for (let i = 0; i < a.length; i++) a[i] = buf.readFloatLE(raw.start + 4 * i);
      out.set(name, a);
    } else {
      const floats = [...init.floatScalars];
      if (init.floatData) for (let q = init.floatData.start; q + 4 <= init.floatData.end; q += 4) floats.push(buf.readFloatLE(q));
      out.set(name, Float32Array.from(floats));
    }
  }
  return out;
}
