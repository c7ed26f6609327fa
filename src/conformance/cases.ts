/**
 * The case list, derived from a reference set's manifest: every reference case is a conformance
 * case with the same id, and each end-to-end run also yields a free-running U-Net case
 * (`unet:<run>-free`). Filtering (--only / --skip globs) and sharding (--shard i/n) act on ids.
 */
import { HarnessError, ExitCode } from "../errors";
import { ReferenceSet } from "./reference-set";
import { globToRegExp } from "./tolerances";

export type CaseKind =
  | "tokenizer" | "text_encoder" | "rng" | "scheduler" | "unet" | "unet_free"
  | "vae_decode" | "vae_encode" | "vae_roundtrip" | "end_to_end";

export interface CaseDef {
  readonly id: string;
  readonly stage: string;
  readonly kind: CaseKind;
  /** the reference case it reads */
  readonly refId: string;
}

const KINDS = new Set<string>(["tokenizer", "text_encoder", "rng", "scheduler", "unet", "vae_decode", "vae_encode", "vae_roundtrip", "end_to_end"]);

export function listCases(refs: ReferenceSet): CaseDef[] {
  const out: CaseDef[] = [];
  for (const c of refs.cases) {
    if (!KINDS.has(c.stage)) continue;
    // tensor stages read safetensors cases; other files in a set (an index, notes) are not cases
    if (c.stage !== "tokenizer" && !c.file.endsWith(".safetensors")) continue;
    out.push({ id: c.id, stage: c.stage, kind: c.stage as CaseKind, refId: c.id });
    if (c.stage === "end_to_end") {
      out.push({ id: `unet:${c.id.slice("end_to_end:".length)}-free`, stage: "unet", kind: "unet_free", refId: c.id });
    }
  }
  return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export function filterCases(cases: readonly CaseDef[], only: readonly string[], skip: readonly string[]): CaseDef[] {
  const o = only.map(globToRegExp);
  const s = skip.map(globToRegExp);
  return cases.filter((c) => (o.length === 0 || o.some((r) => r.test(c.id))) && !s.some((r) => r.test(c.id)));
}

export function parseShard(text: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!m || count < 1 || index < 1 || index > count) {
    throw new HarnessError(`--shard: ${JSON.stringify(text)} must be i/n with 1 <= i <= n (for example 2/4)`, ExitCode.usage);
  }
  return { index, count };
}

/** Shard i of n: every n-th case of the id-sorted list, so shards stay balanced across stages. */
export function shardCases(cases: readonly CaseDef[], shard: { index: number; count: number }): CaseDef[] {
  return cases.filter((_, k) => k % shard.count === shard.index - 1);
}
