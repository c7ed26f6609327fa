/**
 * A reference set on disk (written by scripts/make_references.py): manifest.json with provenance
 * and one file per case, each with its sha256. Hashes are verified when a case is opened, so a
 * corrupted or edited reference can never pass silently.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { HarnessError, ExitCode, oneLine } from "../../errors";
import { parseSafetensors } from "../../tensor/safetensors";
import { Tensor, TypedData, F32, f32, formatDims } from "../../tensor/tensor";

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

/**
 * A case id: `stage:name`, the stage a lower-case identifier and the name a plain file-name-like
 * word. Ids reach the terminal, asset file names and every report, so anything else (path
 * separators, "..", control characters, markup) is refused when the manifest is opened.
 */
const CASE_ID_PATTERN = /^[a-z][a-z0-9_]{0,31}:[A-Za-z0-9][A-Za-z0-9._+-]{0,159}$/;
/** a case file: relative, "/"-separated plain names (no "..", no leading dot, no backslash) */
const CASE_FILE_PATTERN = /^(?:[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,199}\/){0,8}[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,199}$/;
/** manifest.json of SD 1.5 with every trace is well under a megabyte */
const MAX_MANIFEST_BYTES = 64 << 20;

function sha256Hex(buf: Buffer): string {
  return crypto.createHash("sha256").update(buf).digest("hex");
}

export class ReferenceSet {
  /** sha256 of manifest.json's bytes: the set's identity in reports */
  readonly sha256: string;

  private constructor(
    readonly dir: string,
    readonly manifest: ReferenceManifest,
    private readonly byId: Map<string, ReferenceCase>,
    manifestSha256: string,
  ) {
    this.sha256 = manifestSha256;
  }

  /** The manifest's own fingerprint object, when the generator wrote one. */
  get fingerprint(): unknown {
    const f = (this.manifest as unknown as Record<string, unknown>).fingerprint;
    return f !== null && typeof f === "object" ? f : undefined;
  }

  static open(dir: string): ReferenceSet {
    const file = path.join(dir, "manifest.json");
    if (!fs.existsSync(dir)) throw new HarnessError(`${dir}: reference set does not exist`, ExitCode.usage);
    let manifest: ReferenceManifest;
    let bytes: Buffer;
    try {
      const st = fs.statSync(file);
      if (!st.isFile()) throw new HarnessError(`${file}: not a regular file`, ExitCode.usage);
      if (st.size > MAX_MANIFEST_BYTES)
        throw new HarnessError(`${file}: ${st.size} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit for a manifest`, ExitCode.usage);
      bytes = fs.readFileSync(file);
      manifest = JSON.parse(bytes.toString("utf8"));
    } catch (e) {
      if (e instanceof HarnessError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      throw new HarnessError(
        code === "ENOENT" ? `${file}: missing (not a reference set)` : code ? `${file}: cannot read (${code})` : `${file}: not valid JSON`,
        ExitCode.usage,
      );
    }
    if (typeof manifest !== "object" || manifest === null || !Array.isArray(manifest.cases)) {
      throw new HarnessError(`${file}: no "cases" list (not a reference set manifest)`, ExitCode.usage);
    }
    const byId = new Map<string, ReferenceCase>();
    for (const [k, c] of manifest.cases.entries()) {
      if (
        typeof c !== "object" ||
        c === null ||
        typeof c.id !== "string" ||
        typeof c.file !== "string" ||
        typeof c.sha256 !== "string" ||
        typeof c.stage !== "string"
      ) {
        throw new HarnessError(`${file}: malformed case entry cases[${k}] ${oneLine(JSON.stringify(c) ?? String(c), 80)}`, ExitCode.usage);
      }
      if (!CASE_ID_PATTERN.test(c.id) || c.id.includes("..")) {
        throw new HarnessError(
          `${file}: cases[${k}].id ${JSON.stringify(oneLine(c.id, 80))} is not a case id (stage:name of letters, digits and . _ + -)`,
          ExitCode.usage,
        );
      }
      if (!c.id.startsWith(`${c.stage}:`)) {
        throw new HarnessError(
          `${file}: cases[${k}].stage ${JSON.stringify(oneLine(c.stage, 40))} does not match its id ${c.id}`,
          ExitCode.usage,
        );
      }
      if (!CASE_FILE_PATTERN.test(c.file) || c.file.split("/").includes("..")) {
        throw new HarnessError(
          `${file}: case ${c.id} points outside the set or at an odd name (${JSON.stringify(oneLine(c.file, 80))})`,
          ExitCode.usage,
        );
      }
      if (!/^[0-9a-f]{64}$/.test(c.sha256)) throw new HarnessError(`${file}: case ${c.id} has no valid sha256`, ExitCode.usage);
      if (c.tensors !== undefined && (typeof c.tensors !== "object" || c.tensors === null || Array.isArray(c.tensors))) {
        throw new HarnessError(`${file}: case ${c.id}: "tensors" is not an object`, ExitCode.usage);
      }
      for (const [name, d] of Object.entries(c.tensors ?? {})) {
        if (
          !Array.isArray(d) ||
          typeof d[0] !== "string" ||
          !Array.isArray(d[1]) ||
          !d[1].every((x) => Number.isSafeInteger(x) && x >= 0)
        ) {
          throw new HarnessError(
            `${file}: case ${c.id}: tensors[${JSON.stringify(oneLine(name, 40))}] is not [dtype, shape]`,
            ExitCode.usage,
          );
        }
      }
      if (byId.has(c.id)) throw new HarnessError(`${file}: case ${c.id} appears twice`, ExitCode.usage);
      byId.set(c.id, c);
    }
    return new ReferenceSet(dir, manifest, byId, sha256Hex(bytes));
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
      // the name is checked when the manifest is opened; a symlink must not lead out of the set either
      const real = fs.realpathSync(file);
      const rel = path.relative(fs.realpathSync(this.dir), real);
      if (rel === "" || rel.startsWith("..") || path.isAbsolute(rel))
        throw new HarnessError(`${file}: resolves outside the reference set (case ${id})`, ExitCode.usage);
      if (!fs.statSync(real).isFile()) throw new HarnessError(`${file}: not a regular file (case ${id})`, ExitCode.usage);
      buf = fs.readFileSync(real);
    } catch (e) {
      if (e instanceof HarnessError) throw e;
      throw new HarnessError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code}) for case ${id}`, ExitCode.usage);
    }
    const sha = sha256Hex(buf);
    if (sha !== c.sha256)
      throw new HarnessError(
        `${file}: sha256 ${sha.slice(0, 12)}… does not match the manifest's ${c.sha256.slice(0, 12)}… (case ${id})`,
        ExitCode.usage,
      );
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
      throw new HarnessError(
        `${this.file}: tensor ${name} is ${formatDims(t.dims)}, the manifest says ${formatDims(d[1])}`,
        ExitCode.usage,
      );
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
