/**
 * `conformance --localize`: where inside a component drift starts. For each call a module
 * reference set records (scripts/make_module_references.py: one text-encoder call, two U-Net
 * calls of one end-to-end run, one VAE decode and encode), the ONNX component is run on the same
 * inputs in a temporary copy that also returns the modules' tensors (src/onnx/graph-outputs.ts),
 * and every module's output is compared with PyTorch's, in network order (the order the outputs
 * come to exist). Reported per call: the first module over its limit, and the leaf modules that
 * introduce the most drift (drift at the output / drift at the module's input, each relL2, the
 * input's floored at FLOOR).
 *
 * The per-module limits are data (conformance/module-limits.json), each with its reason.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { HarnessError, ExitCode } from "../../errors";
import { OnnxComponent, ComponentKind } from "../../pipeline/onnx-model";
import { toF32, fromF32 } from "../../tensor/float16";
import type { ModuleRequest, Runtime, RuntimeSession, RuntimeTensor } from "../../runtime/types";
import { parseSafetensors } from "../../tensor/safetensors";
import { f32, TypedData, Tensor } from "../../tensor/tensor";
import { readInputFile, INPUT_LIMITS } from "../../util/read-input";
import { compileGlob } from "../../util/glob";
import { PACKAGE_ROOT } from "../../util/package";
import { tensorMetrics } from "../judge/metrics";
import type { CallLocalization, LocalizeReport, ModuleDrift, ModuleLimitRules, Unmapped } from "../types";
import { LOCALIZE_COMPONENTS } from "./localize-components";
import { readGraph, matchModules, withExtraOutputs, writeTempModel, ModuleMatch } from "../../onnx/graph-outputs";

export type { ModuleDrift, Unmapped, CallLocalization, LocalizeReport } from "../types";

/** relL2 of float32 rounding in one operation: an input drift below it counts as this much. */
export const FLOOR = 1e-7;

export const DEFAULT_MODULE_LIMITS = path.join(PACKAGE_ROOT, "conformance", "module-limits.json");

// ---- the module reference set ------------------------------------------------------------------

export interface ModuleEntry {
  readonly name: string;
  readonly class: string;
  readonly shape: readonly number[];
  /**
   * Format 2: "whole" (every value, in flattened order), or the name of the positions tensor
   * (`<component>/<shape>` in the set's positions file) whose flat positions were stored.
   */
  readonly values?: string;
  /** format 2: where the module's values start in its call file's `modules` tensor */
  readonly offset?: number;
  /** format 1: every stride-th flattened value from 0 */
  readonly stride?: number;
  readonly count: number;
  readonly calls: number;
  readonly input: string | null;
}

export interface ModuleCall {
  readonly id: string;
  readonly component: ComponentKind;
  readonly file: string;
  readonly sha256: string;
  readonly source: { readonly references: string; readonly case: string; readonly file: string; readonly sha256: string };
  readonly onnx_inputs: Readonly<Record<string, string>>;
  /** the component's stored modules, in the order their outputs come to exist (from `components`) */
  readonly modules: readonly ModuleEntry[];
}

export interface ModuleManifest {
  readonly format: string;
  readonly model: string;
  readonly command: string;
  readonly versions: Readonly<Record<string, string>>;
  readonly calls: readonly ModuleCall[];
  /** per component: `modules` (stored, in output order) and the modules not stored with the reason */
  readonly components: Readonly<Record<string, { readonly modules: readonly ModuleEntry[] }>>;
  /** format 2: the byte budget per call, the seed and the positions file of sampled tensors */
  readonly sampling?: {
    readonly budget_bytes?: number;
    readonly seed?: number;
    readonly rule?: string;
    readonly file?: string;
    readonly sha256?: string;
  };
}

export { LOCALIZE_COMPONENTS };
const COMPONENTS = LOCALIZE_COMPONENTS;
const SAFE_FILE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.safetensors$/;
const FORMATS = ["sd-harness-module-references/1", "sd-harness-module-references/2"];
/** format 2: the call file's tensor holding every module's values */
const VALUES = "modules";

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export class ModuleReferences {
  private positionCache: ReadonlyMap<string, Int32Array> | null = null;

  private constructor(
    readonly dir: string,
    readonly manifest: ModuleManifest,
    readonly sha256: string,
  ) {}

  /** The module set beside a reference set: `<set>/../modules` (fixtures/references/tiny-sd/modules). */
  static besides(references: string): string {
    return path.join(path.dirname(references), "modules");
  }

  static open(dir: string): ModuleReferences {
    const file = path.join(dir, "manifest.json");
    const bytes = readInputFile(file, "a module reference manifest", INPUT_LIMITS.manifest);
    let m: ModuleManifest;
    try {
      m = JSON.parse(bytes.toString("utf8")) as ModuleManifest;
    } catch (e) {
      throw new HarnessError(`${file}: not JSON (${(e as Error).message.split("\n")[0]})`, ExitCode.usage);
    }
    if (!FORMATS.includes(m?.format) || !Array.isArray(m.calls) || typeof m.components !== "object" || m.components === null) {
      throw new HarnessError(
        `${file}: not a module reference manifest (format ${FORMATS.join(" or ")}, from scripts/make_module_references.py)`,
        ExitCode.usage,
      );
    }
    const v2 = m.format === FORMATS[1];
    const entryOk = (e: ModuleEntry) => {
      if (typeof e?.name !== "string" || !Array.isArray(e.shape) || !Number.isSafeInteger(e.count) || e.count < 0) return false;
      const n = numel(e.shape);
      if (!v2) return Number.isSafeInteger(e.stride) && e.stride! >= 1 && (e.count - 1) * e.stride! < n;
      if (!Number.isSafeInteger(e.offset) || e.offset! < 0 || typeof e.values !== "string") return false;
      return e.values === "whole" ? e.count === n : e.count <= n;
    };
    const calls = m.calls.map((c) => {
      const modules = COMPONENTS.includes(c?.component) ? m.components[c.component]?.modules : undefined;
      const entriesOk = Array.isArray(modules) && modules.every(entryOk);
      if (typeof c.file !== "string" || !SAFE_FILE.test(c.file) || !entriesOk) {
        throw new HarnessError(
          `${file}: call ${JSON.stringify(String(c?.id)).slice(0, 80)} is malformed (component, file or its component's modules)`,
          ExitCode.usage,
        );
      }
      return { ...c, modules: modules! };
    });
    return new ModuleReferences(dir, { ...m, calls }, crypto.createHash("sha256").update(bytes).digest("hex"));
  }

  /** The call's tensors, checked against the manifest's sha256. */
  tensors(call: ModuleCall): ReadonlyMap<string, Tensor<TypedData>> {
    return this.readChecked(call.file, call.sha256);
  }

  private readChecked(name: string, sha256: string | undefined): ReadonlyMap<string, Tensor<TypedData>> {
    const file = path.join(this.dir, name);
    const buf = readInputFile(file, "a module reference file", 1 << 30);
    const digest = crypto.createHash("sha256").update(buf).digest("hex");
    if (digest !== sha256) throw new HarnessError(`${file}: sha256 ${digest.slice(0, 12)}… differs from the manifest's`, ExitCode.usage);
    return parseSafetensors(buf, file).tensors;
  }

  /**
   * The reference values of each module of a call, by module name: format 2 slices the call file's
   * `modules` tensor at each entry's offset, format 1 holds one tensor per module. A module whose
   * values are missing or of another length is absent, with the reason in `problems`.
   */
  moduleValues(
    call: ModuleCall,
    tensors = this.tensors(call),
  ): { values: ReadonlyMap<string, Float32Array>; problems: ReadonlyMap<string, string> } {
    const values = new Map<string, Float32Array>();
    const problems = new Map<string, string>();
    const all = tensors.get(VALUES);
    for (const e of call.modules) {
      if (e.offset !== undefined) {
        if (!all || !(all.data instanceof Float32Array)) problems.set(e.name, `the reference file has no float32 tensor ${VALUES}`);
        else if (e.offset + e.count > all.data.length)
          problems.set(
            e.name,
            `the reference file's ${VALUES} tensor holds ${all.data.length} values, the manifest places this module at ${e.offset}..${e.offset + e.count}`,
          );
        else values.set(e.name, all.data.subarray(e.offset, e.offset + e.count));
        continue;
      }
      const r = tensors.get(e.name);
      if (!r || r.data.length !== e.count)
        problems.set(
          e.name,
          r
            ? `the reference file holds ${r.data.length} values for it, the manifest ${e.count}`
            : "the reference file has no tensor for it",
        );
      else values.set(e.name, asF32(r));
    }
    return { values, problems };
  }

  /** The flat positions of the module's output that were stored, or null when it was stored whole. */
  positions(e: ModuleEntry): Int32Array | null {
    if (e.stride !== undefined && e.values === undefined) {
      if (e.stride === 1 && e.count === numel(e.shape)) return null;
      return Int32Array.from({ length: e.count }, (_, k) => k * e.stride!);
    }
    if (e.values === "whole") return null;
    if (!this.positionCache) {
      const s = this.manifest.sampling;
      if (typeof s?.file !== "string" || !SAFE_FILE.test(s.file))
        throw new HarnessError(
          `${path.join(this.dir, "manifest.json")}: ${e.name} is sampled (${e.values}) but the manifest names no positions file`,
          ExitCode.usage,
        );
      const map = new Map<string, Int32Array>();
      for (const [k, t] of this.readChecked(s.file, s.sha256)) if (t.data instanceof Int32Array) map.set(k, t.data);
      this.positionCache = map;
    }
    const p = this.positionCache.get(e.values!);
    const n = numel(e.shape);
    if (!p || p.length !== e.count || p.some((x) => x < 0 || x >= n)) {
      throw new HarnessError(
        `${path.join(this.dir, this.manifest.sampling!.file!)}: no int32 positions ${JSON.stringify(e.values)} of ${e.count} values below ${n} (module ${e.name})`,
        ExitCode.usage,
      );
    }
    return p;
  }
}

// ---- limits ------------------------------------------------------------------------------------

export interface ModuleLimit {
  readonly relL2: number;
  readonly reason: string;
  /** which rule of the file gave it */
  readonly source: string;
}

export interface ModuleLimitFile extends ModuleLimitRules {
  readonly file?: string;
}

export function loadModuleLimits(file = DEFAULT_MODULE_LIMITS): ModuleLimitFile {
  const text = readInputFile(file, "the module limits", INPUT_LIMITS.manifest).toString("utf8");
  let data: ModuleLimitFile;
  try {
    data = JSON.parse(text) as ModuleLimitFile;
  } catch (e) {
    throw new HarnessError(`${file}: not JSON (${(e as Error).message.split("\n")[0]})`, ExitCode.usage);
  }
  for (const [p, l] of Object.entries(data.profiles ?? {})) {
    if (!(typeof l?.relL2 === "number" && l.relL2 > 0) || typeof l.reason !== "string" || !l.reason) {
      throw new HarnessError(`${file}: profile ${p} needs a positive relL2 and a reason`, ExitCode.usage);
    }
  }
  for (const o of data.overrides ?? []) {
    if (typeof o?.module !== "string" || !(o.relL2 > 0) || !o.reason)
      throw new HarnessError(`${file}: every override needs module (a glob), profile, relL2 and a reason`, ExitCode.usage);
  }
  return { ...data, file };
}

export function moduleLimit(limits: ModuleLimitFile, profile: string, component: string, module: string): ModuleLimit {
  const key = `${component}/${module}`;
  for (const o of limits.overrides ?? []) {
    if (o.profile === profile && compileGlob(o.module).test(key))
      return { relL2: o.relL2, reason: o.reason, source: `override ${o.module}` };
  }
  const p = limits.profiles[profile];
  if (!p)
    throw new HarnessError(
      `--localize: the module limits${limits.file ? ` (${limits.file})` : ""} have no profile ${JSON.stringify(profile)}; known: ${Object.keys(limits.profiles).join(", ")}`,
      ExitCode.usage,
    );
  return { relL2: p.relL2, reason: p.reason, source: `profile ${profile}` };
}

// ---- results -----------------------------------------------------------------------------------

export interface LocalizeModel {
  readonly label: string;
  readonly dir: string;
}

export interface LocalizeOptions {
  readonly models: readonly LocalizeModel[];
  readonly moduleReferences: string;
  readonly profile: string;
  readonly limits?: ModuleLimitFile;
  readonly threads?: number;
  /** the runtime that runs the components (default: ort-node) */
  readonly runtime?: Runtime;
  readonly log?: (line: string) => void;
  /** how many drift introducers to keep per call */
  readonly top?: number;
  readonly signal?: AbortSignal;
  /** port vs port: compare with this model's module outputs instead of PyTorch's (--against) */
  readonly against?: LocalizeModel;
  /** only these components of a model (--localize-failed: those whose stages failed); default all */
  readonly components?: (label: string) => ReadonlySet<ComponentKind>;
}

const PART_DIR: Readonly<Record<ComponentKind, string>> = {
  text_encoder: "text_encoder",
  unet: "unet",
  vae_decoder: "vae_decoder",
  vae_encoder: "vae_encoder",
};

function asF32(t: Tensor<TypedData>): Float32Array {
  if (t.data instanceof Float32Array) return t.data;
  if (t.data instanceof BigInt64Array) return Float32Array.from(t.data, Number);
  return Float32Array.from(t.data as ArrayLike<number>);
}

/** The feeds for one call, typed as the session declares its inputs. */
function feeds(
  comp: Pick<OnnxComponent, "inputType" | "inputs">,
  call: ModuleCall,
  tensors: ReadonlyMap<string, Tensor<TypedData>>,
): Record<string, RuntimeTensor> {
  const out: Record<string, RuntimeTensor> = {};
  for (const [name, key] of Object.entries(call.onnx_inputs)) {
    const t = tensors.get(key);
    if (!t) throw new HarnessError(`module references: call ${call.id} has no tensor ${key}`, ExitCode.usage);
    const type = comp.inputType(name);
    if (name === "input_ids") {
      const ids = Array.from(t.data as ArrayLike<number | bigint>, Number);
      out[name] =
        type === "int64"
          ? { dtype: "int64", dims: t.dims, data: BigInt64Array.from(ids, BigInt) }
          : { dtype: "int32", dims: t.dims, data: Int32Array.from(ids) };
    } else if (name === "timestep") {
      // as StableDiffusionPipeline.runUnet feeds it: rank 0 or [1], float or int64 (truncated)
      const spec = comp.inputs.get("timestep");
      const v = asF32(t)[0];
      const shape = spec && spec.shape.length === 0 ? [] : [1];
      out[name] =
        type === "int64"
          ? { dtype: "int64", dims: shape, data: BigInt64Array.of(BigInt(Math.trunc(v))) }
          : type === "float16"
            ? fromF32(f32(Float32Array.of(v), shape), "float16")
            : { dtype: "float32", dims: shape, data: Float32Array.of(v) };
    } else {
      out[name] = fromF32(f32(asF32(t), t.dims), type);
    }
  }
  return out;
}

function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** One model's sampled module outputs for each call, and why the others have none. */
interface Sampled {
  readonly scopeNamed: boolean;
  readonly calls: readonly {
    readonly values: ReadonlyMap<string, Float32Array>;
    readonly how: ReadonlyMap<string, ModuleDrift["how"]>;
    readonly unmapped: ReadonlyMap<string, string>;
    readonly timeMs: number;
  }[];
}

/** Run `model`'s component on every call in a copy that returns the modules' tensors; sample them as the references are sampled. */
async function sampleModules(
  model: LocalizeModel,
  component: ComponentKind,
  calls: readonly ModuleCall[],
  refs: ModuleReferences,
  threads: number,
  runtime?: Runtime,
): Promise<Sampled> {
  const file = path.join(model.dir, PART_DIR[component], "model.onnx");
  if (runtime?.modulesNotCovered) return sampleThroughRuntime(file, runtime, calls, refs, threads);
  const t0 = process.hrtime.bigint();
  const buf = readInputFile(file, `the ${component}`, 2 ** 31 - 1);
  const graph = readGraph(buf, file);
  const names = [...new Set(calls.flatMap((c) => c.modules.map((m) => m.name)))];
  const { matches, scopeNamed } = matchModules(graph, names);
  const byModule = new Map<string, ModuleMatch>(matches.map((m) => [m.module, m]));
  const own = new Set([...graph.outputs, ...graph.inputs]);
  const extra = [...new Set(matches.flatMap((m) => (m.how === "none" ? [] : m.candidates)))].filter((n) => !own.has(n));
  const tmp = writeTempModel(file, withExtraOutputs(buf, file, extra), graph.externalFiles);
  const out: Sampled["calls"][number][] = [];
  let comp: OnnxComponent | null = null;
  try {
    comp = await OnnxComponent.load(component, tmp.file, { threads, runtime });
    const wanted = [...new Set([...extra, ...matches.flatMap((m) => (m.how === "none" ? [] : m.candidates.filter((c) => own.has(c))))])];
    for (const call of calls) {
      const c0 = process.hrtime.bigint();
      const result = await comp.run(
        feeds(comp, call, refs.tensors(call)),
        wanted.filter((n) => !graph.inputs.includes(n)),
      );
      const values = new Map<string, Float32Array>();
      const how = new Map<string, "scope" | "parameter">();
      const unmapped = new Map<string, string>();
      for (const e of call.modules) {
        const match = byModule.get(e.name)!;
        if (match.how === "none") {
          unmapped.set(e.name, match.why);
          continue;
        }
        // the last float candidate (graph order) whose shape is the module's; a quantized export's
        // scopes also hand uint8 tensors and their scales to the next module
        const isFloat = (n: string) => result[n]?.dtype === "float32" || result[n]?.dtype === "float16";
        const pick = [...match.candidates].reverse().find((n) => isFloat(n) && sameDims(result[n].dims as number[], e.shape));
        if (!pick) {
          const seen = match.candidates
            .map((n) => (result[n] ? `${result[n].dtype} [${(result[n].dims as number[]).join(", ")}]` : "?"))
            .join(", ");
          unmapped.set(
            e.name,
            `its ${match.how === "scope" ? "scope's outputs have" : "tensor has"} shape ${seen}, the module's output [${e.shape.join(", ")}]`,
          );
          continue;
        }
        const full = toF32(result[pick]).data;
        const at = refs.positions(e);
        values.set(e.name, at ? Float32Array.from(at, (p) => full[p]) : Float32Array.from(full));
        how.set(e.name, match.how);
      }
      out.push({
        values,
        how,
        unmapped,
        timeMs: Number(process.hrtime.bigint() - c0) / 1e6 + (out.length === 0 ? Number(c0 - t0) / 1e6 : 0),
      });
    }
  } finally {
    await comp?.release();
    tmp.dispose();
  }
  return { scopeNamed, calls: out };
}

/**
 * The same samples from a runtime that computes module outputs itself (a port's `modules`
 * operation, protocol 1.1): it loads the component's own model.onnx, and is asked per call for
 * every module by name, with the export's tensors for it where the graph has them (the candidates
 * the ONNX path would fetch, so an adapter on the same files picks the same tensor).
 */
async function sampleThroughRuntime(
  file: string,
  runtime: Runtime,
  calls: readonly ModuleCall[],
  refs: ModuleReferences,
  threads: number,
): Promise<Sampled> {
  const t0 = process.hrtime.bigint();
  const buf = readInputFile(file, "the component", 2 ** 31 - 1);
  const graph = readGraph(buf, file);
  const names = [...new Set(calls.flatMap((c) => c.modules.map((m) => m.name)))];
  const { matches, scopeNamed } = matchModules(graph, names);
  const byModule = new Map<string, ModuleMatch>(matches.map((m) => [m.module, m]));
  const out: Sampled["calls"][number][] = [];
  let session: RuntimeSession | null = null;
  try {
    session = await runtime.load(file, { threads });
    const s = session;
    if (!s.runModules)
      throw new HarnessError(
        `runtime ${runtime.name}: its ${path.basename(path.dirname(file))} session returns no module outputs`,
        ExitCode.usage,
      );
    const specs = new Map(s.inputs.map((i) => [i.name, i]));
    const typed = { inputs: specs, inputType: (n: string) => specs.get(n)?.type ?? "float32" };
    for (const call of calls) {
      const c0 = process.hrtime.bigint();
      const requests: ModuleRequest[] = call.modules.map((e) => {
        const m = byModule.get(e.name)!;
        return { name: e.name, shape: e.shape, ...(m.how === "none" ? {} : { tensors: m.candidates }) };
      });
      const result = await s.runModules(feeds(typed, call, refs.tensors(call)), requests, call.id);
      const values = new Map<string, Float32Array>();
      const how = new Map<string, ModuleDrift["how"]>();
      const unmapped = new Map<string, string>();
      for (const e of call.modules) {
        const m = byModule.get(e.name)!;
        const t = result.values.get(e.name);
        if (!t) {
          // where the export has no tensor for it, the harness's reason (as the ONNX path gives it)
          unmapped.set(e.name, m.how === "none" ? m.why : `the port: ${result.missing.get(e.name) ?? "not returned"}`);
          continue;
        }
        const full = toF32(t).data;
        const at = refs.positions(e);
        values.set(e.name, at ? Float32Array.from(at, (p) => full[p]) : Float32Array.from(full));
        how.set(e.name, m.how === "none" ? "module" : m.how);
      }
      out.push({
        values,
        how,
        unmapped,
        timeMs: Number(process.hrtime.bigint() - c0) / 1e6 + (out.length === 0 ? Number(c0 - t0) / 1e6 : 0),
      });
    }
  } finally {
    await session?.release();
  }
  return { scopeNamed, calls: out };
}

async function localizeComponent(
  model: LocalizeModel,
  component: ComponentKind,
  calls: readonly ModuleCall[],
  refs: ModuleReferences,
  opts: LocalizeOptions,
  limits: ModuleLimitFile,
  against: Sampled | null,
): Promise<CallLocalization[]> {
  const ours = await sampleModules(model, component, calls, refs, opts.threads ?? 0, opts.runtime);
  return calls.map((call, k) => {
    const mine = ours.calls[k];
    const theirs = against?.calls[k] ?? null;
    const reference = theirs ? null : refs.moduleValues(call);
    const drifts: ModuleDrift[] = [];
    const unmapped: Unmapped[] = [];
    const relByModule = new Map<string, number>();
    call.modules.forEach((e, position) => {
      const a = mine.values.get(e.name);
      if (!a) {
        unmapped.push({ module: e.name, why: mine.unmapped.get(e.name) ?? "not found" });
        return;
      }
      let ref: Float32Array;
      if (theirs) {
        const b = theirs.values.get(e.name);
        if (!b) {
          unmapped.push({ module: e.name, why: `in ${opts.against!.label}: ${theirs.unmapped.get(e.name) ?? "not found"}` });
          return;
        }
        ref = b;
      } else {
        const r = reference!.values.get(e.name);
        if (!r) {
          unmapped.push({ module: e.name, why: reference!.problems.get(e.name) ?? "the reference file has no values for it" });
          return;
        }
        ref = r;
      }
      const m = tensorMetrics(a, ref, [e.count]);
      relByModule.set(e.name, m.relL2);
      const limit = moduleLimit(limits, opts.profile, component, e.name).relL2;
      const nonFinite = m.nanCount + m.infCount;
      drifts.push({
        module: e.name,
        class: e.class,
        position,
        relL2: m.relL2,
        maxAbs: m.maxAbs,
        cosine: m.cosine,
        nonFinite,
        count: e.count,
        stride: numel(e.shape) / Math.max(1, e.count),
        limit,
        over: nonFinite > 0 || !(m.relL2 <= limit),
        input: e.input,
        inputRelL2: null,
        introduced: null,
        how: mine.how.get(e.name)!,
      });
    });
    const withInputs = drifts.map((d) => {
      const inRel = d.input === null ? null : d.input.startsWith("input:") ? 0 : (relByModule.get(d.input) ?? null);
      return { ...d, inputRelL2: inRel, introduced: inRel === null ? null : d.relL2 / Math.max(inRel, FLOOR) };
    });
    const top = opts.top ?? 5;
    // ranked among leaves: a block's ratio is the sum of everything inside it (the VAE's `decoder`,
    // the whole text model fed the call's input), not drift it introduces itself
    const names = call.modules.map((e) => e.name);
    const leaf = (m: string) => !names.some((n) => n.startsWith(`${m}.`));
    const growth = withInputs
      .filter((d) => leaf(d.module) && d.introduced !== null && Number.isFinite(d.introduced))
      .sort((x, y) => y.introduced! - x.introduced! || x.position - y.position)
      .slice(0, top);
    return {
      model: model.label,
      component,
      call: call.id,
      total: call.modules.length,
      modules: withInputs,
      unmapped,
      naming: ours.scopeNamed ? "scope" : "parameter",
      first: withInputs.find((d) => d.over) ?? null,
      growth,
      timeMs: mine.timeMs + (theirs?.timeMs ?? 0),
    } as CallLocalization;
  });
}

/** Open the module set and the limits before any case runs: a missing set or profile is a usage error up front. */
export function checkLocalize(
  moduleReferences: string,
  profile: string,
  limits?: ModuleLimitFile,
  caseSha256?: (id: string) => string | null,
  warn?: (line: string) => void,
): ModuleLimitFile {
  const l = limits ?? loadModuleLimits();
  const refs = ModuleReferences.open(moduleReferences);
  moduleLimit(l, profile, "", "");
  // the module set carries its own copy of the inputs, so it stays valid; the warning says the two
  // sets no longer describe the same calls
  for (const c of refs.manifest.calls) {
    const now = caseSha256?.(c.source?.case);
    if (now !== undefined && now !== c.source?.sha256) {
      warn?.(
        `warning: ${moduleReferences}: ${c.id} was recorded from ${c.source?.case} with sha256 ${String(c.source?.sha256).slice(0, 12)}…, the reference set's case is now ${now ? `${now.slice(0, 12)}…` : "absent"}; regenerate the module set (scripts/make_module_references.py) to compare the same calls`,
      );
    }
  }
  return l;
}

export async function runLocalize(opts: LocalizeOptions): Promise<LocalizeReport> {
  const t0 = Date.now();
  const refs = ModuleReferences.open(opts.moduleReferences);
  const limits = opts.limits ?? loadModuleLimits();
  moduleLimit(limits, opts.profile, "", ""); // the profile must exist before anything runs
  const calls: CallLocalization[] = [];
  const log = opts.log ?? (() => {});
  const againstCache = new Map<ComponentKind, Sampled>();
  const notCovered: { model: string; component: ComponentKind; why: string }[] = [];
  for (const model of opts.models) {
    for (const component of COMPONENTS) {
      const these = refs.manifest.calls.filter((c) => c.component === component);
      if (these.length === 0 || (opts.components && !opts.components(model.label).has(component))) continue;
      await new Promise<void>((r) => setImmediate(r));
      if (opts.signal?.aborted) throw new HarnessError("interrupted", ExitCode.interrupted);
      if (!fs.existsSync(path.join(model.dir, PART_DIR[component], "model.onnx"))) {
        for (const c of these)
          calls.push(emptyCall(model.label, component, c, `the model folder has no ${PART_DIR[component]}/model.onnx`));
        continue;
      }
      let results: CallLocalization[];
      try {
        // a runtime that computes module outputs itself (a port) may not offer them: a gap, not an error
        const why = await opts.runtime?.modulesNotCovered?.(path.join(model.dir, PART_DIR[component], "model.onnx"));
        if (why) {
          notCovered.push({ model: model.label, component, why });
          log(
            `LOCALIZE ${model.label} ${component}: not covered by ${opts.runtime!.name === "port" ? "this port" : `runtime ${opts.runtime!.name}`}: ${why}`,
          );
          continue;
        }
        // B's tensors once per component, reused for every --model
        if (opts.against && !againstCache.has(component))
          againstCache.set(component, await sampleModules(opts.against, component, these, refs, opts.threads ?? 0, opts.runtime));
        results = await localizeComponent(model, component, these, refs, opts, limits, againstCache.get(component) ?? null);
      } catch (e) {
        if (e instanceof HarnessError && e.exitCode === ExitCode.interrupted) throw e;
        results = these.map((c) => emptyCall(model.label, component, c, (e as Error).message.split("\n")[0]));
      }
      for (const r of results) {
        calls.push(r);
        log(localizeLine(r));
      }
    }
  }
  const m = refs.manifest;
  return {
    references: { dir: opts.moduleReferences, model: m.model, sha256: refs.sha256, command: m.command, versions: m.versions },
    profile: opts.profile,
    limits: { file: limits.file ?? "(in memory)", profiles: limits.profiles, overrides: limits.overrides ?? [] },
    floor: FLOOR,
    ...(opts.against ? { against: { label: opts.against.label, dir: opts.against.dir } } : {}),
    calls,
    ...(notCovered.length ? { notCovered } : {}),
    timeMs: Date.now() - t0,
  };
}

function emptyCall(model: string, component: ComponentKind, c: ModuleCall, error: string): CallLocalization {
  return {
    model,
    component,
    call: c.id,
    total: c.modules.length,
    modules: [],
    unmapped: [],
    naming: "scope",
    first: null,
    growth: [],
    timeMs: 0,
    error,
  };
}

function sci(x: number | null): string {
  return x === null ? "?" : Number.isFinite(x) ? x.toExponential(2) : String(x);
}

/** One terminal line per call. */
export function localizeLine(r: CallLocalization): string {
  const head = `LOCALIZE ${r.model} ${r.call}: ${r.modules.length}/${r.total} modules compared`;
  if (r.error) return `${head}; not run: ${r.error}`;
  const naming = r.naming === "parameter" ? " (no scope names in this export: leaf modules matched by parameter names)" : "";
  const first = r.first
    ? `first over its limit: ${r.first.module} (relL2 ${sci(r.first.relL2)} > ${sci(r.first.limit)}${r.first.introduced !== null ? `, introduced x${sci(r.first.introduced)}` : ""})`
    : "no module over its limit";
  const grow = r.growth
    .slice(0, 3)
    .map((g) => `${g.module} x${sci(g.introduced)}`)
    .join(", ");
  return `${head}${naming}; ${first}${grow ? `; most drift introduced: ${grow}` : ""}`;
}
