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

/**
 * Relative cost of one case in U-Net calls, the unit that dominates at real size. The other parts
 * are weighed by their time at SD 1.5 size, 512x512, on this project's 2-core machine (README's
 * benchmark: U-Net step with CFG 12.06 s, VAE decode 16.18 s, VAE encode 7.49 s, text encoder
 * 0.157 s); traces, draws and the tokenizer are milliseconds.
 */
export const COST = { unetCall: 1, vaeDecode: 16.18 / 12.06, vaeEncode: 7.49 / 12.06, textEncoder: 0.157 / 12.06, small: 1e-4 } as const;

export function caseCost(refs: ReferenceSet, c: CaseDef): number {
  const meta = (refs.has(c.refId) ? (refs.get(c.refId).meta as Record<string, unknown> | undefined) : undefined) ?? {};
  const calls = typeof meta.unet_calls === "number" && meta.unet_calls > 0 ? meta.unet_calls : 1;
  const encodes = meta.kind === "img2img" ? 1 : meta.kind === "inpaint" ? 2 : 0;
  switch (c.kind) {
    case "unet": return COST.unetCall;
    case "unet_free": return calls * COST.unetCall;
    case "end_to_end": return calls * COST.unetCall + 2 * COST.textEncoder + COST.vaeDecode + encodes * COST.vaeEncode;
    case "vae_decode": return COST.vaeDecode;
    case "vae_encode": return COST.vaeEncode;
    case "vae_roundtrip": return COST.vaeEncode + COST.vaeDecode;
    case "text_encoder": return 2 * COST.textEncoder;
    default: return COST.small;
  }
}

/**
 * Shard i of n, balanced by estimated cost (U-Net calls), not by count: the longest-processing-time
 * rule (cases by cost, largest first, each to the shard with the least so far; ties by id and by
 * shard number), so every shard process computes the same partition from the same list.
 */
export function shardCases(cases: readonly CaseDef[], shard: { index: number; count: number }, cost: (c: CaseDef) => number = () => 1): CaseDef[] {
  const order = cases.map((c, k) => ({ c, k, w: cost(c) })).sort((a, b) => b.w - a.w || (a.c.id < b.c.id ? -1 : a.c.id > b.c.id ? 1 : 0));
  const load = new Array<number>(shard.count).fill(0);
  const mine = new Set<number>();
  for (const { k, w } of order) {
    let best = 0;
    for (let s = 1; s < shard.count; s++) if (load[s] < load[best]) best = s;
    load[best] += w;
    if (best === shard.index - 1) mine.add(k);
  }
  return cases.filter((_, k) => mine.has(k));
}

/** Estimated cost of each shard of a case list (for reports and the balance test). */
export function shardLoads(cases: readonly CaseDef[], count: number, cost: (c: CaseDef) => number): number[] {
  return Array.from({ length: count }, (_, i) => shardCases(cases, { index: i + 1, count }, cost).reduce((s, c) => s + cost(c), 0));
}
