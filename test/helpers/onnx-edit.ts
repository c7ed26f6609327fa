/**
 * Test-only ONNX surgery without a protobuf dependency: find named float / float16 initializers in
 * a model file and rewrite some of their values in place. The byte length of every field stays the
 * same, so no protobuf length prefix has to change. Wire format as in src/pipeline/onnx-initializers.ts:
 * ModelProto.graph = 7, GraphProto.initializer = 5, TensorProto: data_type = 2, float_data = 4,
 * name = 8, raw_data = 9 (data_type 1 = FLOAT, 10 = FLOAT16).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { halfToFloat, floatToHalf } from "../../src/pipeline/onnx-model";

interface Span { no: number; wire: number; start: number; end: number; value: number }

function* fields(buf: Buffer, start: number, end: number): Generator<Span> {
  let p = start;
  const varint = (): number => {
    let r = 0;
    let mul = 1;
    for (;;) {
      const b = buf[p++];
      r += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return r;
      mul *= 128;
    }
  };
  while (p < end) {
    const key = varint();
    const no = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) yield { no, wire, value: varint(), start: p, end: p };
    else if (wire === 1) { p += 8; yield { no, wire, value: 0, start: p - 8, end: p }; }
    else if (wire === 5) { p += 4; yield { no, wire, value: 0, start: p - 4, end: p }; }
    else if (wire === 2) { const len = varint(); p += len; yield { no, wire, value: len, start: p - len, end: p }; }
    else throw new Error(`unsupported wire type ${wire}`);
  }
}

export interface Edited {
  readonly name: string;
  readonly dataType: number;
  /** values changed */
  readonly changed: number;
  readonly total: number;
}

/**
 * Multiply values of every initializer whose name satisfies `want` by `factor` (float32 or
 * float16, raw_data or packed float_data). `limit` caps the number of values changed per tensor
 * (the first ones). Returns what was edited; throws when nothing matched.
 */
export function scaleInitializers(file: string, want: (name: string) => boolean, factor: number, limit = Infinity): Edited[] {
  const buf = fs.readFileSync(file);
  const edited: Edited[] = [];
  for (const g of fields(buf, 0, buf.length)) {
    if (g.no !== 7 || g.wire !== 2) continue;
    for (const init of fields(buf, g.start, g.end)) {
      if (init.no !== 5 || init.wire !== 2) continue;
      let name = "";
      let dataType = 0;
      let data: Span | null = null;
      for (const t of fields(buf, init.start, init.end)) {
        if (t.no === 8 && t.wire === 2) name = buf.toString("utf8", t.start, t.end);
        else if (t.no === 2 && t.wire === 0) dataType = t.value;
        else if ((t.no === 9 || t.no === 4) && t.wire === 2) data = t;
      }
      if (!want(name) || !data || (dataType !== 1 && dataType !== 10)) continue;
      if (dataType === 10 && data.no !== 9) continue; // float16 in int32_data: not needed here
      const width = dataType === 1 ? 4 : 2;
      const total = (data.end - data.start) / width;
      const n = Math.min(total, limit);
      for (let k = 0; k < n; k++) {
        const at = data.start + k * width;
        if (dataType === 1) buf.writeFloatLE(Math.fround(buf.readFloatLE(at) * factor), at);
        else buf.writeUInt16LE(floatToHalf(halfToFloat(buf.readUInt16LE(at)) * factor), at);
      }
      edited.push({ name, dataType, changed: n, total });
    }
  }
  if (edited.length === 0) throw new Error(`${file}: no float initializer matched`);
  fs.writeFileSync(file, buf);
  return edited;
}

/** A private, fully materialized copy of a model folder (symlinked parts are copied as files). */
export function copyModel(src: string, tmpRoot: string, name: string): string {
  const dst = path.join(tmpRoot, name);
  fs.cpSync(src, dst, { recursive: true, dereference: true });
  return dst;
}

/** Edit a JSON file in place. */
export function editJson(file: string, edit: (json: Record<string, unknown>) => void): void {
  const json = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  edit(json);
  fs.writeFileSync(file, JSON.stringify(json, null, 2) + "\n");
}
