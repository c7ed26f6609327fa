/**
 * Test-only ONNX surgery without a protobuf dependency: find named float / float16 initializers in
 * a model file and rewrite some of their values in place. The byte length of every field stays the
 * same, so no protobuf length prefix has to change. The initializers are found with the library's
 * own reader (src/onnx/initializers.ts).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { halfToFloat, floatToHalf } from "../../src/tensor/float16";
import { initializers, readFloatInitializers } from "../../src/onnx/initializers";

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
 * (from index `first` on, 0 by default). Returns what was edited; throws when nothing matched.
 */
export function scaleInitializers(file: string, want: (name: string) => boolean, factor: number, limit = Infinity, first = 0): Edited[] {
  const buf = fs.readFileSync(file);
  const edited: Edited[] = [];
  for (const init of initializers(buf, file)) {
    const { name, dataType } = init;
    // raw_data, or packed float_data; float16 in int32_data is not needed here
    const data = init.raw ?? (dataType === 1 ? init.floatData : null);
    if (!want(name) || !data || (dataType !== 1 && dataType !== 10)) continue;
    const width = dataType === 1 ? 4 : 2;
    const total = (data.end - data.start) / width;
    if (first >= total) throw new Error(`${file}: ${name} has ${total} values, no index ${first}`);
    const n = Math.min(total - first, limit);
    for (let k = first; k < first + n; k++) {
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

// ---- moving initializers to external data ----------------------------------------------------

function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

function lengthDelimited(no: number, body: Buffer): Buffer {
  return Buffer.concat([varint(no * 8 + 2), varint(body.length), body]);
}

/**
 * Rewrites `file` so that every initializer with raw_data keeps its bytes in `location` (beside the
 * model) instead, as onnx.save_model(..., save_as_external_data=True) writes it: external_data
 * entries location / offset / length (field 13) and data_location EXTERNAL (field 14). `location`
 * is written as given, so a test can also make hostile models (absolute paths, "../"). Returns the
 * names moved.
 */
export function externalizeInitializers(
  file: string,
  location: string,
  dataFile: string | null = path.join(path.dirname(file), location),
): string[] {
  const { fields } = require("../../src/onnx/initializers") as typeof import("../../src/onnx/initializers");
  const buf = fs.readFileSync(file);
  const chunks: Buffer[] = [];
  let offset = 0;
  const moved: string[] = [];
  type F = { no: number; wire: number; value: number; start: number; end: number };
  // a field as it was (varints re-encoded: the reader keeps their values, not their bytes)
  const encode = (f: F, body?: Buffer): Buffer =>
    f.wire === 2
      ? lengthDelimited(f.no, body ?? buf.subarray(f.start, f.end))
      : f.wire === 0
        ? Buffer.concat([varint(f.no * 8), varint(f.value)])
        : Buffer.concat([varint(f.no * 8 + f.wire), buf.subarray(f.start, f.end)]);
  const rewriteTensor = (start: number, end: number): Buffer => {
    const parts: Buffer[] = [];
    let raw: Buffer | null = null;
    let name = "";
    for (const t of fields(buf, start, end, file)) {
      if (t.no === 9 && t.wire === 2) {
        raw = buf.subarray(t.start, t.end);
        continue;
      }
      if (t.no === 8 && t.wire === 2) name = buf.toString("utf8", t.start, t.end);
      parts.push(encode(t));
    }
    if (raw) {
      const entry = (k: string, v: string) =>
        lengthDelimited(13, Buffer.concat([lengthDelimited(1, Buffer.from(k)), lengthDelimited(2, Buffer.from(v))]));
      parts.push(entry("location", location), entry("offset", String(offset)), entry("length", String(raw.length)));
      parts.push(Buffer.concat([varint(14 * 8), varint(1)]));
      chunks.push(raw);
      offset += raw.length;
      moved.push(name);
    }
    return Buffer.concat(parts);
  };
  const rewriteGraph = (start: number, end: number): Buffer =>
    Buffer.concat(
      [...fields(buf, start, end, file)].map((g) => (g.no === 5 && g.wire === 2 ? encode(g, rewriteTensor(g.start, g.end)) : encode(g))),
    );
  const top = [...fields(buf, 0, buf.length, file)].map((f) =>
    f.no === 7 && f.wire === 2 ? encode(f, rewriteGraph(f.start, f.end)) : encode(f),
  );
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, Buffer.concat(top));
  if (dataFile) fs.writeFileSync(dataFile, Buffer.concat(chunks));
  return moved;
}

/**
 * A copy of model folder `src` at `dst` in which only `part` (a component folder such as "unet")
 * is a private copy; every other entry is a symlink to the original's (real) path.
 */
export function copyPart(src: string, dst: string, part: string): string {
  fs.mkdirSync(dst);
  for (const e of fs.readdirSync(src)) {
    const from = fs.realpathSync(path.join(src, e));
    if (e === part) fs.cpSync(from, path.join(dst, e), { recursive: true, dereference: true });
    else fs.symlinkSync(from, path.join(dst, e));
  }
  if (!fs.existsSync(path.join(dst, part))) throw new Error(`${src} has no ${part}`);
  return dst;
}

/** Multiply the value at `index` of float32 initializer `name` by `factor`; returns the value before and after. */
export function scaleValue(file: string, name: string, index: number, factor: number): { before: number; after: number } {
  const read = () => readFloatInitializers(file, (n) => n === name).get(name)?.[index];
  const before = read();
  if (before === undefined) throw new Error(`${file}: no float initializer ${name} with an index ${index}`);
  scaleInitializers(file, (n) => n === name, factor, 1, index);
  return { before, after: read() as number };
}
