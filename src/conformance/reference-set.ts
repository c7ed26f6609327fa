/**
 * A reference set on disk (written by scripts/make_references.py): manifest.json with provenance
 * and one file per case, each with its sha256. Hashes are verified when a case is opened, so a
 * corrupted or edited reference can never pass silently.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { HarnessError, ExitCode } from "../errors";
import { parseSafetensors } from "../tensor/safetensors";
import { Tensor, TypedData, F32, f32, formatDims } from "../tensor/tensor";

export interface ReferenceCase {
  readonly id: string;
  readonly stage: string;
  readonly file: string;
  readonly sha256: string;
  readonly tensors?: Readonly<Record<string, [string, number[]]>>;
  readonly meta?: Readonly<Record<string, unknown>>;
}

export interface ReferenceManifest {
  readonly format: string;
  readonly model: string;
  readonly device: string;
  readonly device_name: string;
  readonly dtype: string;
  readonly command: string;
  readonly versions: Readonly<Record<string, string>>;
  readonly cases: readonly ReferenceCase[];
}

export class ReferenceSet {
  private constructor(readonly dir: string, readonly manifest: ReferenceManifest, private readonly byId: Map<string, ReferenceCase>) {}

  static open(dir: string): ReferenceSet {
    const file = path.join(dir, "manifest.json");
    if (!fs.existsSync(dir)) throw new HarnessError(`${dir}: reference set does not exist`, ExitCode.usage);
    let manifest: ReferenceManifest;
    try {
      manifest = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new HarnessError(code === "ENOENT" ? `${file}: missing (not a reference set)` : `${file}: not valid JSON`, ExitCode.usage);
    }
    if (typeof manifest !== "object" || manifest === null || !Array.isArray(manifest.cases)) {
      throw new HarnessError(`${file}: no "cases" list (not a reference set manifest)`, ExitCode.usage);
    }
    const byId = new Map<string, ReferenceCase>();
    for (const c of manifest.cases) {
      if (typeof c?.id !== "string" || typeof c.file !== "string" || typeof c.sha256 !== "string") {
        throw new HarnessError(`${file}: malformed case entry ${JSON.stringify(c).slice(0, 80)}`, ExitCode.usage);
      }
      if (c.file.includes("..") || path.isAbsolute(c.file)) throw new HarnessError(`${file}: case ${c.id} points outside the set (${c.file})`, ExitCode.usage);
      byId.set(c.id, c);
    }
    return new ReferenceSet(dir, manifest, byId);
  }

  get cases(): readonly ReferenceCase[] {
    return this.manifest.cases;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  get(id: string): ReferenceCase {
    const c = this.byId.get(id);
    if (!c) throw new HarnessError(`${this.dir}: no case ${id}`, ExitCode.usage);
    return c;
  }

  /** The case file's bytes after checking its sha256 against the manifest. */
  readVerified(id: string): Buffer {
    const c = this.get(id);
    const file = path.join(this.dir, c.file);
    let buf: Buffer;
    try {
      buf = fs.readFileSync(file);
    } catch (e) {
      throw new HarnessError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code}) for case ${id}`, ExitCode.usage);
    }
    const sha = crypto.createHash("sha256").update(buf).digest("hex");
    if (sha !== c.sha256) throw new HarnessError(`${file}: sha256 ${sha.slice(0, 12)}… does not match the manifest's ${c.sha256.slice(0, 12)}… (case ${id})`, ExitCode.usage);
    return buf;
  }

  tensors(id: string): CaseTensors {
    const c = this.get(id);
    const file = path.join(this.dir, c.file);
    const st = parseSafetensors(this.readVerified(id), file);
    return new CaseTensors(id, file, st.tensors, c.tensors);
  }

  json<T = unknown>(id: string): T {
    const c = this.get(id);
    try {
      return JSON.parse(this.readVerified(id).toString("utf8")) as T;
    } catch (e) {
      if (e instanceof HarnessError) throw e;
      throw new HarnessError(`${path.join(this.dir, c.file)}: not valid JSON`, ExitCode.usage);
    }
  }
}

export class CaseTensors {
  constructor(
    readonly id: string,
    readonly file: string,
    private readonly map: ReadonlyMap<string, Tensor<TypedData>>,
    private readonly declared?: Readonly<Record<string, [string, number[]]>>,
  ) {}

  names(): string[] {
    return [...this.map.keys()];
  }

  has(name: string): boolean {
    return this.map.has(name);
  }

  raw(name: string): Tensor<TypedData> {
    const t = this.map.get(name);
    if (!t) throw new HarnessError(`${this.file}: case ${this.id} has no tensor ${name}`, ExitCode.usage);
    const d = this.declared?.[name];
    if (d && (d[1].length !== t.dims.length || d[1].some((x, i) => x !== t.dims[i]))) {
      throw new HarnessError(`${this.file}: tensor ${name} is ${formatDims(t.dims)}, the manifest says ${formatDims(d[1])}`, ExitCode.usage);
    }
    return t;
  }

  /** A float32 tensor (errors on any other dtype: a dtype mismatch is a broken reference). */
  f32(name: string): F32 {
    const t = this.raw(name);
    if (t.dtype !== "float32") throw new HarnessError(`${this.file}: tensor ${name} is ${t.dtype}, expected float32`, ExitCode.usage);
    return f32(t.data as Float32Array, t.dims);
  }
}
