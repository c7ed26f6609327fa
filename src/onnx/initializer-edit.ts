/**
 * In-place edits of float initializers in an ONNX model, for mutation testing (`sd-harness
 * sensitivity`): find a weight's bytes (raw_data or packed float_data in the model file, or its
 * range of an external-data file such as model.onnx_data), change some values and write exactly
 * as many bytes back at the same offset. No protobuf length prefix changes, so no rewrite of the
 * model is needed, and an edit is undone by writing the saved bytes back.
 *
 * The initializers are found with the library's own reader (src/onnx/initializers.ts);
 * this file adds the graph's nodes (GraphProto.node = 1; NodeProto: input = 1, output = 2,
 * name = 3, op_type = 4), because exporters name some weights anonymously (`onnx::MatMul_5643`
 * for a transposed Linear weight, `onnx::Mul_5637` for a GroupNorm's gamma) and only the
 * consuming node's module-scoped name (`/model/down_blocks.0/.../attn1/to_q/MatMul`) says what
 * they are.
 *
 * Nothing here opens a file for writing except `applyEdit` / `Undo`, and they write only the byte
 * range of the tensor they were given; callers edit copies, never a user's model.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { HarnessError, ExitCode } from "../errors";
import { fields, initializers } from "./initializers";
import { halfToFloat, floatToHalf } from "../tensor/float16";

/** Where a tensor's values lie: `count` little-endian values of `width` bytes from `offset` in `file`. */
export interface WeightBytes {
  /** absolute path of the model file, or of the external-data file holding the bytes */
  readonly file: string;
  readonly offset: number;
  readonly count: number;
  /** 1 = FLOAT (4 bytes), 10 = FLOAT16 (2 bytes) */
  readonly dataType: 1 | 10;
  readonly external: boolean;
}

export interface NodeUse {
  readonly node: string;
  readonly opType: string;
  /** which input of the node the initializer is */
  readonly input: number;
}

export interface InitializerInfo {
  readonly name: string;
  readonly dataType: number;
  /** null: not editable in place (not float / float16, or values stored as unpacked scalars) */
  readonly bytes: WeightBytes | null;
  /** the nodes that read it */
  readonly consumers: readonly NodeUse[];
}

export interface GraphNode {
  readonly name: string;
  readonly opType: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
}

/** The nodes of a model's main graph (subgraphs of If / Loop are not walked: SD exports have none). */
export function graphNodes(buf: Buffer, file: string): GraphNode[] {
  const out: GraphNode[] = [];
  for (const f of fields(buf, 0, buf.length, file)) {
    if (f.no !== 7 || f.wire !== 2) continue;
    for (const g of fields(buf, f.start, f.end, file)) {
      if (g.no !== 1 || g.wire !== 2) continue;
      let name = "";
      let opType = "";
      const inputs: string[] = [];
      const outputs: string[] = [];
      for (const t of fields(buf, g.start, g.end, file)) {
        if (t.wire !== 2) continue;
        const s = buf.toString("utf8", t.start, t.end);
        if (t.no === 1) inputs.push(s);
        else if (t.no === 2) outputs.push(s);
        else if (t.no === 3) name = s;
        else if (t.no === 4) opType = s;
      }
      out.push({ name, opType, inputs, outputs });
    }
  }
  return out;
}

/**
 * An external-data location resolved inside the model's folder: absolute paths, "..", and
 * symlinks that leave the folder are refused, so a model file cannot make us write elsewhere.
 */
function externalFile(modelFile: string, name: string, location: string): string {
  const dir = path.dirname(path.resolve(modelFile));
  const target = path.resolve(dir, location);
  const where = `${modelFile}: initializer ${JSON.stringify(name)}'s external data ${JSON.stringify(location)}`;
  const inside = (root: string, p: string) => {
    const rel = path.relative(root, p);
    return rel !== "" && !rel.startsWith("..") && !path.isAbsolute(rel);
  };
  if (path.isAbsolute(location) || !inside(dir, target)) throw new HarnessError(`${where} is outside the model's folder`, ExitCode.usage);
  let real: string;
  try {
    real = fs.realpathSync(target);
  } catch (e) {
    throw new HarnessError(`${where} cannot be read (${(e as NodeJS.ErrnoException).code ?? "error"})`, ExitCode.usage);
  }
  if (!inside(fs.realpathSync(dir), real)) throw new HarnessError(`${where} resolves outside the model's folder`, ExitCode.usage);
  return real;
}

/** Every initializer of `file` with where its bytes lie and which nodes read it. */
export function describeInitializers(file: string): InitializerInfo[] {
  const abs = path.resolve(file);
  const buf = fs.readFileSync(abs);
  const consumers = new Map<string, NodeUse[]>();
  for (const n of graphNodes(buf, file)) {
    n.inputs.forEach((inp, k) => {
      if (!inp) return;
      let list = consumers.get(inp);
      if (!list) consumers.set(inp, (list = []));
      list.push({ node: n.name, opType: n.opType, input: k });
    });
  }
  const out: InitializerInfo[] = [];
  const sizes = new Map<string, number>();
  for (const init of initializers(buf, file)) {
    const { name, dataType } = init;
    let bytes: WeightBytes | null = null;
    if (dataType === 1 || dataType === 10) {
      const width = dataType === 1 ? 4 : 2;
      const dt = dataType as 1 | 10;
      if (init.external) {
        const target = externalFile(file, name, init.external.location);
        const size = sizes.get(target) ?? fs.statSync(target).size;
        sizes.set(target, size);
        const length = init.external.length ?? size - init.external.offset;
        if (init.external.offset + length > size || length < 0 || length % width !== 0) {
          throw new HarnessError(
            `${file}: initializer ${JSON.stringify(name)}'s external data ${init.external.offset}..${init.external.offset + length} does not fit ${path.basename(target)} (${size} bytes)`,
            ExitCode.usage,
          );
        }
        bytes = { file: target, offset: init.external.offset, count: length / width, dataType: dt, external: true };
      } else if (init.raw) {
        bytes = { file: abs, offset: init.raw.start, count: (init.raw.end - init.raw.start) / width, dataType: dt, external: false };
      } else if (dataType === 1 && init.floatData) {
        bytes = {
          file: abs,
          offset: init.floatData.start,
          count: (init.floatData.end - init.floatData.start) / 4,
          dataType: 1,
          external: false,
        };
      }
    }
    out.push({ name, dataType, bytes, consumers: consumers.get(name) ?? [] });
  }
  return out;
}

function width(b: WeightBytes): number {
  return b.dataType === 1 ? 4 : 2;
}

function readRange(b: WeightBytes, start: number, count: number): Buffer {
  const out = Buffer.alloc(count * width(b));
  const fd = fs.openSync(b.file, "r");
  try {
    let n = 0;
    while (n < out.length) {
      const got = fs.readSync(fd, out, n, out.length - n, b.offset + start * width(b) + n);
      if (got === 0) throw new HarnessError(`${b.file}: short read`, ExitCode.usage);
      n += got;
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

function writeRange(b: WeightBytes, start: number, data: Buffer): void {
  // r+: never creates or truncates; the write covers exactly the bytes read before
  const fd = fs.openSync(b.file, "r+");
  try {
    let n = 0;
    while (n < data.length) n += fs.writeSync(fd, data, n, data.length - n, b.offset + start * width(b) + n);
  } finally {
    fs.closeSync(fd);
  }
}

function decode(b: WeightBytes, raw: Buffer): Float32Array {
  const a = new Float32Array(raw.length / width(b));
  for (let i = 0; i < a.length; i++) a[i] = b.dataType === 1 ? raw.readFloatLE(4 * i) : halfToFloat(raw.readUInt16LE(2 * i));
  return a;
}

function encode(b: WeightBytes, values: Float32Array): Buffer {
  const raw = Buffer.alloc(values.length * width(b));
  for (let i = 0; i < values.length; i++) {
    if (b.dataType === 1) raw.writeFloatLE(values[i], 4 * i);
    else raw.writeUInt16LE(floatToHalf(values[i]), 2 * i);
  }
  return raw;
}

/** The tensor's values (float16 widened). */
export function readWeights(b: WeightBytes, start = 0, count = b.count - start): Float32Array {
  if (start < 0 || count < 0 || start + count > b.count) throw new RangeError(`values ${start}..${start + count} of ${b.count}`);
  return decode(b, readRange(b, start, count));
}

/** One edit: a single value times (1 + relative), or every value times `scale`. */
export type WeightEdit =
  { readonly kind: "single"; readonly index: number; readonly relative: number } | { readonly kind: "scale"; readonly factor: number };

export interface AppliedEdit {
  /** the value(s) before and after, as stored (after rounding to the tensor's precision) */
  readonly before: number;
  readonly after: number;
  /** the relative change actually stored: (after - before) / before of the edited value (single), or of the tensor's L2 norm (scale) */
  readonly appliedRelative: number;
  /** false when rounding to the tensor's precision left every value unchanged */
  readonly changed: boolean;
  /** writes the saved bytes back */
  readonly undo: () => void;
}

/** Apply `edit` to the tensor's bytes in place; `undo()` restores them exactly. */
export function applyEdit(b: WeightBytes, edit: WeightEdit): AppliedEdit {
  if (edit.kind === "single") {
    if (!Number.isInteger(edit.index) || edit.index < 0 || edit.index >= b.count)
      throw new RangeError(`index ${edit.index} outside 0..${b.count - 1}`);
    const saved = readRange(b, edit.index, 1);
    const before = decode(b, saved)[0];
    const next = Float32Array.of(before * (1 + edit.relative));
    const raw = encode(b, next);
    const after = decode(b, raw)[0];
    writeRange(b, edit.index, raw);
    return {
      before,
      after,
      appliedRelative: before === 0 ? 0 : (after - before) / before,
      changed: !raw.equals(saved),
      undo: () => writeRange(b, edit.index, saved),
    };
  }
  const saved = readRange(b, 0, b.count);
  const values = decode(b, saved);
  const scaled = values.map((v) => v * edit.factor);
  const raw = encode(b, scaled);
  const stored = decode(b, raw);
  let n0 = 0;
  let n1 = 0;
  for (let i = 0; i < values.length; i++) {
    n0 += values[i] * values[i];
    n1 += stored[i] * stored[i];
  }
  writeRange(b, 0, raw);
  const before = Math.sqrt(n0);
  const after = Math.sqrt(n1);
  return {
    before,
    after,
    appliedRelative: before === 0 ? 0 : (after - before) / before,
    changed: !raw.equals(saved),
    undo: () => writeRange(b, 0, saved),
  };
}
