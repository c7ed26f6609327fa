/**
 * Test-only ONNX surgery without a protobuf dependency: find named float / float16 initializers in
 * a model file and rewrite some of their values in place. The byte length of every field stays the
 * same, so no protobuf length prefix has to change. The initializers are found with the library's
 * own reader (src/pipeline/onnx-initializers.ts).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { halfToFloat, floatToHalf } from "../../src/pipeline/onnx-model";
import { initializers } from "../../src/pipeline/onnx-initializers";

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
  for (const init of initializers(buf, file)) {
    const { name, dataType } = init;
    // raw_data, or packed float_data; float16 in int32_data is not needed here
    const data = init.raw ?? (dataType === 1 ? init.floatData : null);
    if (!want(name) || !data || (dataType !== 1 && dataType !== 10)) continue;
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
