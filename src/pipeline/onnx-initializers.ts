/**
 * A minimal ONNX protobuf reader that pulls named float initializers out of a model file, without
 * a protobuf dependency. Used for clip skip: diffusers applies the text encoder's final layer norm
 * to the penultimate hidden state, and an optimum export carries that norm's weights but exposes
 * only the raw hidden states.
 * Wire format: ModelProto.graph = 7; GraphProto.initializer = 5; TensorProto: dims = 1,
 * data_type = 2, float_data = 4, int32_data = 5 (float16 bit patterns), name = 8, raw_data = 9,
 * data_location = 14. FLOAT16 initializers (fp16 conversions that do not keep the norms in fp32)
 * are widened to float32.
 */
import * as fs from "node:fs";
import { HarnessError, ExitCode } from "../errors";
import { halfToFloat } from "./onnx-model";

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
    else if (wire === 1) { p += 8; yield { no, wire, value: 0, start: p - 8, end: p }; }
    else if (wire === 5) { p += 4; yield { no, wire, value: 0, start: p - 4, end: p }; }
    else if (wire === 2) {
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
      for (const t of fields(buf, g.start, g.end, file)) {
        if (t.no === 8 && t.wire === 2) name = buf.toString("utf8", t.start, t.end);
        else if (t.no === 2 && t.wire === 0) dataType = t.value;
        else if (t.no === 9 && t.wire === 2) raw = t;
        else if (t.no === 4 && t.wire === 2) floatData = t;
        else if (t.no === 4 && t.wire === 5) floatScalars.push(buf.readFloatLE(t.start));
        else if (t.no === 5 && t.wire === 0) int32Scalars.push(t.value);
        else if (t.no === 5 && t.wire === 2) int32Data = t;
      }
      yield { name, dataType, raw, floatData, floatScalars, int32Data, int32Scalars };
    }
  }
}

/** Float32 initializers whose names satisfy `want`, from an ONNX file with embedded weights. */
export function readFloatInitializers(file: string, want: (name: string) => boolean): Map<string, Float32Array> {
  const buf = fs.readFileSync(file);
  const out = new Map<string, Float32Array>();
  for (const init of initializers(buf, file)) {
    const { name, dataType, raw } = init;
    if (!want(name) || (dataType !== 1 && dataType !== 10)) continue; // 1 = FLOAT, 10 = FLOAT16
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
