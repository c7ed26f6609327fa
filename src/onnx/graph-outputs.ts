/**
 * Module outputs inside an ONNX export, for `conformance --localize`: which tensor of the graph is
 * the output of a PyTorch module (`down_blocks.1.attentions.0.transformer_blocks.0.attn2`), and a
 * temporary copy of the model that returns those tensors as extra graph outputs.
 *
 * Two ways to find a module's tensor, tried in this order:
 *  1. **Scope names.** torch.onnx's TorchScript exporter (which optimum uses) names every node after
 *     the module scope it came from: `/model/down_blocks.1/attentions.0/proj_out/Conv` (our export
 *     wraps the model in a module called `model`; optimum's export has no wrapper). A scope's
 *     *exits* are the tensors its nodes produce that a node outside the scope reads (or that are
 *     graph outputs); the module's output is the last exit in graph order whose shape matches the
 *     reference's (checked when the model runs). Ops that compute shapes are not exits.
 *  2. **Parameter names**, for exports whose node names were replaced (scripts/quantize.py
 *     --compact-names keeps only initializer and I/O names): a module with its own bias or weight
 *     initializer (`model.conv_in.bias`) is a Conv / Linear / LayerNorm; the one node that reads
 *     its bias (a Conv, a MatMul's Add, or, after int8 quantization, a Reshape of it feeding an Add)
 *     produces the module's output. Modules without their own named parameters (blocks, GroupNorms
 *     whose gamma the exporter renamed) have no counterpart there, and say so.
 *
 * Nothing is guessed beyond that: a module with no nodes (dropout, identity, folded away) or whose
 * tensor has another shape is reported unmapped with the reason.
 *
 * Wire format written (protobuf, no dependency): ModelProto.graph = 7; GraphProto.node = 1,
 * initializer = 5, input = 11, output = 12; NodeProto: input = 1, output = 2, name = 3,
 * op_type = 4; ValueInfoProto.name = 1. Extra outputs are appended to GraphProto as output (12)
 * entries carrying only a name (onnxruntime infers their type); the model's own outputs keep their
 * order. Where the copy is written so that its external data is found without copying it:
 * writeTempModel. The user's files are never opened for writing.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { HarnessError, ExitCode } from "../errors";
import { trackPendingFile, untrackPendingFile, trackPendingDirectory, untrackPendingDirectory } from "../util/atomic";
import { fields } from "./initializers";

export interface GraphNode {
  readonly index: number;
  readonly name: string;
  readonly opType: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  /** the dynamo exporter's module scope (metadata `pkg.torch.onnx.name_scopes`), when the node carries one */
  readonly scope?: string;
}

export interface GraphSummary {
  readonly nodes: readonly GraphNode[];
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly initializers: ReadonlySet<string>;
  /** external-data locations named by initializers (relative to the model's folder) */
  readonly externalFiles: ReadonlySet<string>;
}

/**
 * Ops whose outputs are never a module's hidden states: shapes and constants, and the quantizers
 * an int8 conversion puts at a scope's end (their uint8 values, scale and zero point feed the next
 * module's integer op, named after the tensor they quantize).
 */
const QUANTIZERS = new Set(["DynamicQuantizeLinear", "QuantizeLinear"]);
const SHAPE_OPS = new Set(["Shape", "Constant", "ConstantOfShape", "Size", "Range", "NonZero", ...QUANTIZERS]);

function str(buf: Buffer, f: { start: number; end: number }): string {
  return buf.toString("utf8", f.start, f.end);
}

export function readGraph(buf: Buffer, file: string): GraphSummary {
  const nodes: GraphNode[] = [];
  const inputs: string[] = [];
  const outputs: string[] = [];
  const initializers = new Set<string>();
  const externalFiles = new Set<string>();
  for (const f of fields(buf, 0, buf.length, file)) {
    if (f.no !== 7 || f.wire !== 2) continue;
    for (const g of fields(buf, f.start, f.end, file)) {
      if (g.wire !== 2) continue;
      if (g.no === 1) {
        const ins: string[] = [];
        const outs: string[] = [];
        let name = "";
        let opType = "";
        let scope: string | undefined;
        for (const n of fields(buf, g.start, g.end, file)) {
          if (n.wire !== 2) continue;
          if (n.no === 1) ins.push(str(buf, n));
          else if (n.no === 2) outs.push(str(buf, n));
          else if (n.no === 3) name = str(buf, n);
          else if (n.no === 4) opType = str(buf, n);
          else if (n.no === 9) scope = dynamoScope(buf, n, file) ?? scope;
        }
        nodes.push({ index: nodes.length, name, opType, inputs: ins, outputs: outs, ...(scope !== undefined ? { scope } : {}) });
      } else if (g.no === 11 || g.no === 12) {
        for (const v of fields(buf, g.start, g.end, file))
          if (v.no === 1 && v.wire === 2) (g.no === 11 ? inputs : outputs).push(str(buf, v));
      } else if (g.no === 5) {
        for (const t of fields(buf, g.start, g.end, file)) {
          if (t.no === 8 && t.wire === 2) initializers.add(str(buf, t));
          else if (t.no === 13 && t.wire === 2) {
            let key = "";
            let value = "";
            for (const e of fields(buf, t.start, t.end, file)) {
              if (e.no === 1 && e.wire === 2) key = str(buf, e);
              else if (e.no === 2 && e.wire === 2) value = str(buf, e);
            }
            if (key === "location") externalFiles.add(value);
          }
        }
      }
    }
  }
  return { nodes, inputs, outputs, initializers, externalFiles };
}

/**
 * NodeProto.metadata_props (9) entry `pkg.torch.onnx.name_scopes`, which torch.onnx's dynamo
 * exporter writes (its node names are flat: `node_conv2d_10`): a Python list of the enclosing
 * module paths, outermost first, ending with the op's own name —
 * `['', 'model', 'model.down_blocks.1', 'model.down_blocks.1.resnets.0', 'model.down_blocks.1.resnets.0.norm1', 'group_norm_6']`.
 * The scope is the last module path (the entry before the op's name).
 */
function dynamoScope(buf: Buffer, f: { start: number; end: number }, file: string): string | undefined {
  let key = "";
  let value = "";
  for (const e of fields(buf, f.start, f.end, file)) {
    if (e.no === 1 && e.wire === 2) key = str(buf, e);
    else if (e.no === 2 && e.wire === 2) value = str(buf, e);
  }
  if (key !== "pkg.torch.onnx.name_scopes") return undefined;
  const items = [...value.matchAll(/'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1] ?? m[2]);
  return items.length >= 2 ? items[items.length - 2] : undefined;
}

/** How a module's tensor was found, or why it was not. */
export type ModuleMatch =
  | { readonly module: string; readonly how: "scope"; readonly candidates: readonly string[] }
  | { readonly module: string; readonly how: "parameter"; readonly candidates: readonly string[]; readonly parameter: string }
  | { readonly module: string; readonly how: "none"; readonly why: string };

/** The scope path a node name carries: `/model/down_blocks.0/resnets.0/conv1/Conv` -> `model.down_blocks.0.resnets.0.conv1`. */
export function scopeOf(nodeName: string): string | null {
  if (!nodeName.startsWith("/")) return null;
  const parts = nodeName.split("/").slice(1, -1);
  return parts.length ? parts.join(".") : null;
}

/** Up to this many exits per scope become candidate outputs (the last ones in graph order). */
const MAX_CANDIDATES = 4;

/**
 * Map module paths to graph tensors. `modules` are the reference's module paths; the exporter's
 * wrapper prefix (`model.` in our export, none in optimum's) is found by which prefix names more
 * of them.
 */
export function matchModules(
  graph: GraphSummary,
  modules: readonly string[],
): { matches: ModuleMatch[]; prefix: string; scopeNamed: boolean } {
  const wanted = new Set(modules);
  const consumers = new Map<string, number[]>();
  for (const n of graph.nodes) for (const x of n.inputs) if (x) (consumers.get(x) ?? consumers.set(x, []).get(x)!).push(n.index);
  const graphOutputs = new Set(graph.outputs);
  // a dynamo export's scope is in the node's metadata; the TorchScript exporter's in its name
  const scopes = graph.nodes.map((n) => (n.scope !== undefined ? n.scope || null : scopeOf(n.name)));
  const prefixes = ["", "model."];
  let prefix = "";
  let best = -1;
  for (const p of prefixes) {
    const hits = new Set<string>();
    for (const s of scopes) {
      if (s === null || !s.startsWith(p)) continue;
      const m = s.slice(p.length);
      if (wanted.has(m)) hits.add(m);
    }
    if (hits.size > best) {
      best = hits.size;
      prefix = p;
    }
  }
  const scopeNamed = best > 0;
  // nodes per module scope (a node belongs to its scope and every enclosing one)
  const members = new Map<string, Set<number>>();
  if (scopeNamed) {
    scopes.forEach((s, i) => {
      if (s === null || !s.startsWith(prefix)) return;
      const parts = s.slice(prefix.length).split(".");
      // module paths contain dots themselves (`down_blocks.0`): every prefix of the dotted path
      // that is a reference module gets the node
      for (let k = 1; k <= parts.length; k++) {
        const m = parts.slice(0, k).join(".");
        if (wanted.has(m)) (members.get(m) ?? members.set(m, new Set()).get(m)!).add(i);
      }
    });
  }
  const matches: ModuleMatch[] = [];
  for (const m of modules) {
    const inside = members.get(m);
    if (scopeNamed) {
      if (!inside || inside.size === 0) {
        matches.push({
          module: m,
          how: "none",
          why: "no node carries this module's scope (no computation at inference, or folded into a neighbour by the exporter)",
        });
        continue;
      }
      const exits: string[] = [];
      for (const i of [...inside].sort((a, b) => a - b)) {
        const n = graph.nodes[i];
        if (SHAPE_OPS.has(n.opType)) continue;
        for (const o of n.outputs) {
          if (!o) continue;
          // a quantizer named in this scope stands for the next module's input
          const outside = (consumers.get(o) ?? []).some((c) => !inside.has(c) || QUANTIZERS.has(graph.nodes[c].opType));
          if (outside || graphOutputs.has(o)) exits.push(o);
        }
      }
      if (exits.length === 0) matches.push({ module: m, how: "none", why: "the scope's nodes produce nothing read outside it" });
      else matches.push({ module: m, how: "scope", candidates: exits.slice(-MAX_CANDIDATES) });
      continue;
    }
    matches.push(parameterMatch(graph, consumers, m));
  }
  return { matches, prefix, scopeNamed };
}

function parameterMatch(graph: GraphSummary, consumers: ReadonlyMap<string, number[]>, m: string): ModuleMatch {
  const none = (why: string): ModuleMatch => ({ module: m, how: "none", why });
  const find = (suffix: string) => [`model.${m}.${suffix}`, `${m}.${suffix}`].find((n) => graph.initializers.has(n));
  const bias = find("bias");
  const weight = find("weight");
  const noScopes = "no scope names in this export (node names were replaced)";
  if (!bias && !weight) return none(`${noScopes}, and the module has no parameter of its own under its name`);
  if (bias) {
    const readers = consumers.get(bias) ?? [];
    if (readers.length !== 1) return none(`${noScopes}; its bias is read by ${readers.length} nodes`);
    let node = graph.nodes[readers[0]];
    if (node.opType === "Reshape") {
      // int8 quantization reshapes a Conv's bias and adds it after the integer convolution
      const next = consumers.get(node.outputs[0]) ?? [];
      if (next.length !== 1 || graph.nodes[next[0]].opType !== "Add")
        return none(`${noScopes}; its reshaped bias has no single Add reading it`);
      node = graph.nodes[next[0]];
    }
    if (!["Conv", "Add", "Gemm", "LayerNormalization"].includes(node.opType))
      return none(`${noScopes}; its bias is read by a ${node.opType}`);
    return { module: m, how: "parameter", parameter: bias, candidates: [node.outputs[0]] };
  }
  const readers = (consumers.get(weight!) ?? []).map((i) => graph.nodes[i]);
  if (readers.length === 1 && ["Conv", "Gemm", "LayerNormalization"].includes(readers[0].opType)) {
    return { module: m, how: "parameter", parameter: weight!, candidates: [readers[0].outputs[0]] };
  }
  return none(`${noScopes}; its weight is not read by one Conv / Gemm / LayerNormalization`);
}

// ---- writing the copy --------------------------------------------------------------------------

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return Buffer.from(out);
}

function lengthDelimited(fieldNo: number, payload: Buffer): Buffer {
  return Buffer.concat([varint(fieldNo * 8 + 2), varint(payload.length), payload]);
}

/** The model bytes with `extra` appended to GraphProto.output (names only). */
export function withExtraOutputs(buf: Buffer, file: string, extra: readonly string[]): Buffer {
  let graph: { start: number; end: number; value: number } | null = null;
  for (const f of fields(buf, 0, buf.length, file)) if (f.no === 7 && f.wire === 2) graph = f;
  if (!graph) throw new HarnessError(`${file}: no graph in this ONNX file`, ExitCode.usage);
  const header = varint(7 * 8 + 2).length + varint(graph.value).length;
  const added = Buffer.concat(extra.map((name) => lengthDelimited(12, lengthDelimited(1, Buffer.from(name, "utf8")))));
  const newGraph = Buffer.concat([buf.subarray(graph.start, graph.end), added]);
  return Buffer.concat([buf.subarray(0, graph.start - header), lengthDelimited(7, newGraph), buf.subarray(graph.end)]);
}

/**
 * The temporary model: the graph with extra outputs, written where onnxruntime finds the model's
 * external data without a copy. `dispose` removes it.
 */
export interface TempModel {
  readonly file: string;
  /** the folder the temporary file lies in (the model's own, or a temporary folder) */
  readonly dir: string;
  dispose(): void;
}

export interface TempModelOptions {
  /** try the model's own folder first (default true); false: the temporary folder only (tests) */
  readonly beside?: boolean;
}

/**
 * Temporary paths alive in this process, removed synchronously at exit. The CLI's signal handler
 * removes them through src/util/atomic.ts on every SIGINT / SIGTERM, the second one included,
 * which ends the process before a `finally` could run.
 */
const live = new Set<string>();
let exitHook = false;

function track(p: string): void {
  if (!exitHook) {
    exitHook = true;
    process.on("exit", () => {
      for (const q of live) {
        try {
          fs.rmSync(q, { recursive: true, force: true });
        } catch {
          /* gone */
        }
      }
    });
  }
  live.add(p);
}

function untrack(p: string): void {
  live.delete(p);
}

/** Writes `bytes` to a new file (O_EXCL: never through an existing name or a symlink); removes it on failure. */
function writeNew(file: string, bytes: Buffer): void {
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
  try {
    for (let at = 0; at < bytes.length;) at += fs.writeSync(fd, bytes, at, bytes.length - at);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * onnxruntime 1.30 resolves an external-data `location` against the model file's folder and
 * refuses an absolute location, a `../` one and a symlink leading out of that folder ("External
 * data path escapes model directory"; measured, test/localize.test.ts). So the copy goes:
 *  1. beside the model, as `.sd-harness-localize-<pid>-<random>.onnx` in the component's own folder:
 *     its locations resolve to the model's own weights, nothing is linked or copied;
 *  2. where that folder cannot be written: into a fresh folder under the OS temporary folder, the
 *     data hard-linked beside it (the same bytes). Where a hard link is impossible (another file
 *     system) the data is not copied (gigabytes at SD 1.5 size, into a /tmp that may be memory):
 *     the component is refused in one line that says what to change.
 * Either way the temporary path is removed by `dispose`, at exit, and by the CLI on a signal.
 * The user's files are never opened for writing.
 */
export function writeTempModel(
  modelFile: string,
  bytes: Buffer,
  externalFiles: ReadonlySet<string>,
  options: TempModelOptions = {},
): TempModel {
  const src = path.dirname(path.resolve(modelFile));
  const data: string[] = [];
  for (const loc of externalFiles) {
    // the same confinement the initializer reader applies: a location stays inside the model's folder
    const target = path.resolve(src, loc);
    const rel = path.relative(src, target);
    if (path.isAbsolute(loc) || rel.startsWith("..") || rel.includes(path.sep) || rel === "") {
      throw new HarnessError(`${modelFile}: external data ${JSON.stringify(loc)} is not a file beside the model`, ExitCode.usage);
    }
    data.push(rel);
  }
  let besideError = "";
  if (options.beside ?? true) {
    const file = path.join(src, `.sd-harness-localize-${process.pid}-${crypto.randomBytes(6).toString("hex")}.onnx`);
    track(file);
    trackPendingFile(file);
    const dispose = () => {
      try {
        fs.rmSync(file, { force: true });
      } catch {
        /* gone */
      }
      untrack(file);
      untrackPendingFile(file);
    };
    try {
      writeNew(file, bytes);
      return { file, dir: src, dispose };
    } catch (e) {
      dispose();
      besideError = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sd-harness-localize-"));
  track(dir);
  trackPendingDirectory(dir, "tree");
  const dispose = () => {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      /* gone */
    }
    untrack(dir);
    untrackPendingDirectory(dir);
  };
  try {
    for (const rel of data) {
      try {
        fs.linkSync(path.join(src, rel), path.join(dir, rel));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? "error";
        const size = fs.statSync(path.join(src, rel)).size;
        throw new HarnessError(
          `${modelFile}: --localize needs a temporary model beside its external data (${rel}, ${(size / 2 ** 20).toFixed(1)} MiB), which is not copied: ${besideError ? `the model's folder cannot be written (${besideError}) and ` : ""}${os.tmpdir()} cannot hold a hard link to it (${code}); set TMPDIR to a folder on the model's file system`,
          ExitCode.usage,
        );
      }
    }
    const file = path.join(dir, "model.onnx");
    writeNew(file, bytes);
    return { file, dir, dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}
