/**
 * CLIP's byte-level BPE tokenizer, reproducing transformers' slow `CLIPTokenizer` exactly as
 * diffusers calls it for SD 1.x (`padding="max_length", max_length=77, truncation=True`) in an
 * environment without ftfy, where text is cleaned by BERT's BasicTokenizer rather than by
 * ftfy.fix_text. The steps, in transformers' order:
 *
 *  1. literal added tokens (`<|startoftext|>`, `<|endoftext|>`) are split out of the raw text and
 *     map straight to their ids; the pieces between them are tokenized independently;
 *  2. clean-up: control/format/unassigned characters dropped, whitespace characters turned into
 *     spaces, spaces put around CJK ideographs, NFC, split on whitespace, lower-cased, re-joined;
 *  3. CLIP's word pattern splits the text into words, numbers (one digit each) and symbol runs;
 *  4. each piece is UTF-8 encoded, bytes mapped to printable characters (bytes_to_unicode), and
 *     BPE-merged with `</w>` marking the end of the piece; pieces map to ids through vocab.json.
 *
 * The reference is checked id for id by test/tokenizer.test.ts against PyTorch-side output.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { inputError, oneLine } from "../errors";
import { readInputText, INPUT_LIMITS } from "../util/read-input";

/** SD 1.x's values, used where the tokenizer folder's config files do not say otherwise. */
const SD1_DEFAULTS = {
  bosToken: "<|startoftext|>",
  eosToken: "<|endoftext|>",
  unkToken: "<|endoftext|>",
  padToken: "<|endoftext|>",
  modelMaxLength: 77,
} as const;

/** transformers reads at most this many merges (lines 1..48894 of merges.txt), as OpenAI's CLIP. */
const MAX_MERGES = 49152 - 256 - 2;

/**
 * The longest text the tokenizer accepts, in UTF-16 code units. CLIP reads 77 tokens (a few hundred
 * characters); the limit leaves room for prompts that rely on truncation (a 36,000-character
 * prompt of 12,000 tokens is tokenized in a few milliseconds) while bounding the work a pasted
 * file or a hostile argument can cause.
 */
export const MAX_PROMPT_CHARS = 65_536;

/**
 * transformers writes int(1e30) as model_max_length when no limit was recorded; anything this
 * large is that sentinel, and CLIP's position embedding (77 rows) is the real limit.
 */
const UNLIMITED_SENTINEL = 1_000_000;

/**
 * Code points assigned in Unicode 15.0-17.0. The references come from Python 3.11, whose
 * unicodedata is Unicode 14.0 and reports them as unassigned (category Cn), so BasicTokenizer
 * drops them as control characters; Node's ICU knows them as letters, symbols (new emoji such as
 * U+1FA77 pink heart) and so on. Everything else BasicTokenizer drops is exactly Node's \p{C}
 * (checked over all code points against the reference environment).
 */
const ASSIGNED_AFTER_UNICODE_14: ReadonlyArray<readonly [number, number]> = [
  [0x88f, 0x88f],
  [0x897, 0x897],
  [0xc5c, 0xc5c],
  [0xcdc, 0xcdc],
  [0xcf3, 0xcf3],
  [0xece, 0xece],
  [0x1acf, 0x1add],
  [0x1ae0, 0x1aeb],
  [0x1b4e, 0x1b4f],
  [0x1b7f, 0x1b7f],
  [0x1c89, 0x1c8a],
  [0x20c1, 0x20c1],
  [0x2427, 0x2429],
  [0x2b96, 0x2b96],
  [0x2ffc, 0x2fff],
  [0x31e4, 0x31e5],
  [0x31ef, 0x31ef],
  [0xa7cb, 0xa7cf],
  [0xa7d2, 0xa7d2],
  [0xa7d4, 0xa7d4],
  [0xa7da, 0xa7dc],
  [0xa7f1, 0xa7f1],
  [0xfbc3, 0xfbd2],
  [0xfd90, 0xfd91],
  [0xfdc8, 0xfdce],
  [0x105c0, 0x105f3],
  [0x10940, 0x10959],
  [0x10d40, 0x10d65],
  [0x10d69, 0x10d85],
  [0x10d8e, 0x10d8f],
  [0x10ec2, 0x10ec7],
  [0x10ed0, 0x10ed8],
  [0x10efa, 0x10eff],
  [0x1123f, 0x11241],
  [0x11380, 0x11389],
  [0x1138b, 0x1138b],
  [0x1138e, 0x1138e],
  [0x11390, 0x113b5],
  [0x113b7, 0x113c0],
  [0x113c2, 0x113c2],
  [0x113c5, 0x113c5],
  [0x113c7, 0x113ca],
  [0x113cc, 0x113d5],
  [0x113d7, 0x113d8],
  [0x113e1, 0x113e2],
  [0x116d0, 0x116e3],
  [0x11b00, 0x11b09],
  [0x11b60, 0x11b67],
  [0x11bc0, 0x11be1],
  [0x11bf0, 0x11bf9],
  [0x11db0, 0x11ddb],
  [0x11de0, 0x11de9],
  [0x11f00, 0x11f10],
  [0x11f12, 0x11f3a],
  [0x11f3e, 0x11f5a],
  [0x1342f, 0x1342f],
  [0x13440, 0x13455],
  [0x13460, 0x143fa],
  [0x16100, 0x16139],
  [0x16d40, 0x16d79],
  [0x16ea0, 0x16eb8],
  [0x16ebb, 0x16ed3],
  [0x16ff2, 0x16ff6],
  [0x187f8, 0x187ff],
  [0x18cff, 0x18cff],
  [0x18d09, 0x18d1e],
  [0x18d80, 0x18df2],
  [0x1b132, 0x1b132],
  [0x1b155, 0x1b155],
  [0x1cc00, 0x1ccfc],
  [0x1cd00, 0x1ceb3],
  [0x1ceba, 0x1ced0],
  [0x1cee0, 0x1cef0],
  [0x1d2c0, 0x1d2d3],
  [0x1df25, 0x1df2a],
  [0x1e030, 0x1e06d],
  [0x1e08f, 0x1e08f],
  [0x1e4d0, 0x1e4f9],
  [0x1e5d0, 0x1e5fa],
  [0x1e5ff, 0x1e5ff],
  [0x1e6c0, 0x1e6de],
  [0x1e6e0, 0x1e6f5],
  [0x1e6fe, 0x1e6ff],
  [0x1f6d8, 0x1f6d8],
  [0x1f6dc, 0x1f6dc],
  [0x1f774, 0x1f77f],
  [0x1f7d9, 0x1f7d9],
  [0x1f8b2, 0x1f8bb],
  [0x1f8c0, 0x1f8c1],
  [0x1f8d0, 0x1f8d8],
  [0x1fa54, 0x1fa57],
  [0x1fa75, 0x1fa77],
  [0x1fa87, 0x1fa8a],
  [0x1fa8e, 0x1fa8f],
  [0x1faad, 0x1faaf],
  [0x1fabb, 0x1fabf],
  [0x1fac6, 0x1fac6],
  [0x1fac8, 0x1fac8],
  [0x1facd, 0x1facf],
  [0x1fada, 0x1fadc],
  [0x1fadf, 0x1fadf],
  [0x1fae8, 0x1faea],
  [0x1faef, 0x1faef],
  [0x1faf7, 0x1faf8],
  [0x1fbcb, 0x1fbef],
  [0x1fbfa, 0x1fbfa],
  [0x2b739, 0x2b73f],
  [0x2cea2, 0x2cead],
  [0x2ebf0, 0x2ee5d],
  [0x31350, 0x33479],
];

const codePointRange = ([a, b]: readonly [number, number]): string =>
  a === b ? `\\u{${a.toString(16)}}` : `\\u{${a.toString(16)}}-\\u{${b.toString(16)}}`;

/**
 * BasicTokenizer._clean_text drops NUL, U+FFFD and every category-C character except tab, newline
 * and carriage return (those count as whitespace).
 */
const DROPPED_CHARS = new RegExp(`(?![\\t\\n\\r])[\\p{C}\\u{fffd}${ASSIGNED_AFTER_UNICODE_14.map(codePointRange).join("")}]`, "gu");

/** _clean_text's whitespace: space, tab, newline, carriage return and category Zs, each -> " ". */
const WHITESPACE_CHARS = /[\t\n\r\p{Zs}]/gu;

/** BasicTokenizer._is_chinese_char's blocks; each such character gets a space on both sides. */
const CJK_IDEOGRAPHS =
  /[\u{4e00}-\u{9fff}\u{3400}-\u{4dbf}\u{20000}-\u{2a6df}\u{2a700}-\u{2b73f}\u{2b740}-\u{2b81f}\u{2b820}-\u{2ceaf}\u{f900}-\u{faff}\u{2f800}-\u{2fa1f}]/gu;

/**
 * Python's str.split() after clean-up: the only whitespace left by then is the space and the
 * line/paragraph separators U+2028/U+2029 (categories Zl/Zp, which _clean_text keeps).
 */
const WORD_SEPARATORS = /[ \u2028\u2029]+/u;

/**
 * CLIP's pattern, compiled case-insensitively as transformers does (the `regex` module's simple
 * case folding matches JS's /iu: "'ſ" is taken for "'s"). One difference remains: for U+0345
 * (combining ypogegrammeni, which case-folds to iota) `regex` puts it in neither [\p{L}] nor the
 * negated class, so no alternative matches and it vanishes, splitting the word around it. JS would
 * count it as a letter, so it is turned into a space first, which has exactly that effect.
 */
const WORD_PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;
const YPOGEGRAMMENI = /\u0345/g;

/** Pieces that CLIPTokenizer's BPE cache maps to themselves, without `</w>`. */
const BPE_PRESEEDED = ["<|startoftext|>", "<|endoftext|>"] as const;

/** GPT-2/CLIP's reversible map from bytes to printable characters (bytes_to_unicode). */
const BYTE_TO_CHAR: readonly string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let next = 256;
  for (let b = 0; b < 256; b++) table.push(String.fromCharCode(printable(b) ? b : next++));
  return table;
})();

const utf8 = new TextEncoder();

/** The text clean-up of CLIPTokenizer._tokenize without ftfy: BasicTokenizer, then " ".join. */
function cleanText(text: string): string {
  const normalized = text.replace(DROPPED_CHARS, "").replace(WHITESPACE_CHARS, " ").replace(CJK_IDEOGRAPHS, " $& ").normalize("NFC");
  const words: string[] = [];
  for (const word of normalized.split(WORD_SEPARATORS)) {
    // lower-cased word by word as BasicTokenizer does (Greek final sigma depends on context)
    if (word) words.push(word.toLowerCase());
  }
  return words.join(" ");
}

function byteEncode(piece: string): string {
  let out = "";
  for (const b of utf8.encode(piece)) out += BYTE_TO_CHAR[b];
  return out;
}

/**
 * CLIPTokenizer.bpe: repeatedly take the adjacent pair with the lowest merge rank and merge all its
 * non-overlapping occurrences left to right, until no pair has a rank. Symbols never contain a
 * space (bytes_to_unicode maps 0x20 away), so "a b" is an unambiguous pair key.
 *
 * Done with a doubly linked list and a min-heap of (rank, position) instead of Python's rescan of
 * the whole word per merge, which is quadratic (a 131,000-letter word took 53-111 s). A rank names
 * exactly one pair, so popping every heap entry of the lowest rank in position order and merging
 * those still valid is Python's left-to-right pass over that pair; pairs the merges create carry
 * another rank and wait in the heap for a later round, as Python finds them on its next scan.
 * O(n log n) in the word's length.
 */
export function bytePairEncode(piece: string, ranks: ReadonlyMap<string, number>): string[] {
  const sym = piece.split("");
  if (sym.length === 0) return sym;
  sym[sym.length - 1] += "</w>";
  const n = sym.length;
  if (n === 1) return sym;
  // alive nodes form a list through next/prev; a merged node keeps the left node's index, so
  // indices stay in word order
  const next = new Int32Array(n);
  const prev = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  const alive = new Uint8Array(n).fill(1);
  const heap = new PairHeap();
  const push = (i: number) => {
    const j = next[i];
    if (j < 0) return;
    const rank = ranks.get(sym[i] + " " + sym[j]);
    if (rank !== undefined) heap.push(rank, i);
  };
  for (let i = 0; i + 1 < n; i++) push(i);
  while (heap.size > 0) {
    const rank = heap.topRank();
    // one round: every entry of this rank, leftmost first (the pair (first, second) it names)
    const created: number[] = [];
    while (heap.size > 0 && heap.topRank() === rank) {
      const i = heap.pop();
      const j = next[i];
      // stale: the left symbol was merged away or changed, or its right neighbour changed
      if (!alive[i] || j < 0 || ranks.get(sym[i] + " " + sym[j]) !== rank) continue;
      sym[i] += sym[j];
      alive[j] = 0;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      created.push(i);
    }
    for (const i of created) {
      if (!alive[i]) continue;
      if (prev[i] >= 0) push(prev[i]);
      push(i);
    }
  }
  const out: string[] = [];
  for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
  return out;
}

/**
 * A binary min-heap of (rank, position) pairs, ordered by rank, then position, each held as one
 * number rank * 2^32 + position (exact: ranks stay below 2^20, positions below 2^32).
 */
class PairHeap {
  private keys: number[] = [];

  get size(): number {
    return this.keys.length;
  }

  topRank(): number {
    return Math.floor(this.keys[0] / 2 ** 32);
  }

  push(rank: number, pos: number): void {
    const keys = this.keys;
    const key = rank * 2 ** 32 + pos;
    let c = keys.length;
    keys.push(key);
    while (c > 0) {
      const p = (c - 1) >> 1;
      if (keys[p] <= key) break;
      keys[c] = keys[p];
      c = p;
    }
    keys[c] = key;
  }

  /** removes the top entry and returns its position */
  pop(): number {
    const keys = this.keys;
    const top = keys[0];
    const last = keys.pop() as number;
    const size = keys.length;
    if (size > 0) {
      let p = 0;
      for (;;) {
        const l = 2 * p + 1;
        if (l >= size) break;
        const m = l + 1 < size && keys[l + 1] < keys[l] ? l + 1 : l;
        if (keys[m] >= last) break;
        keys[p] = keys[m];
        p = m;
      }
      keys[p] = last;
    }
    return top % 2 ** 32;
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export interface TokenizedPrompt {
  /** BOS, tokens, EOS, then pad ids up to maxLength; cut to maxLength-1 tokens + EOS if longer */
  readonly ids: Int32Array;
  /** whether the prompt had more than maxLength ids (with BOS/EOS) and lost its tail */
  readonly truncated: boolean;
  /** the number of ids (with BOS/EOS) before truncation */
  readonly untruncatedLength: number;
}

export interface ClipTokenizerConfig {
  /** token -> id, as vocab.json */
  readonly vocab: ReadonlyMap<string, number>;
  /** merge pairs in rank order, as merges.txt after its header line */
  readonly merges: ReadonlyArray<readonly [string, string]>;
  readonly bosToken?: string;
  readonly eosToken?: string;
  readonly unkToken?: string;
  readonly padToken?: string;
  readonly modelMaxLength?: number;
  /** further added tokens (tokenizer_config.json's added_tokens_decoder): content -> id */
  readonly addedTokens?: ReadonlyMap<string, number>;
}

export class ClipTokenizer {
  readonly modelMaxLength: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly unkId: number;
  private readonly vocab: ReadonlyMap<string, number>;
  private readonly ranks: Map<string, number>;
  /** added tokens, split out of the raw text before anything else */
  private readonly addedIds: Map<string, number>;
  private readonly addedPattern: RegExp;
  /** word pattern match -> ids; prompts repeat words a lot */
  private readonly cache = new Map<string, readonly number[]>();

  /** `source` names the vocabulary in error messages. */
  constructor(config: ClipTokenizerConfig, source = "tokenizer vocabulary") {
    this.vocab = config.vocab;
    const idOf = (token: string, role: string): number => {
      const id = config.addedTokens?.get(token) ?? this.vocab.get(token);
      if (id === undefined) throw inputError(`${source}: ${role} token ${JSON.stringify(token)} is not in the vocabulary`);
      return id;
    };
    const bos = config.bosToken ?? SD1_DEFAULTS.bosToken;
    const eos = config.eosToken ?? SD1_DEFAULTS.eosToken;
    const unk = config.unkToken ?? SD1_DEFAULTS.unkToken;
    const pad = config.padToken ?? SD1_DEFAULTS.padToken;
    this.bosId = idOf(bos, "bos");
    this.eosId = idOf(eos, "eos");
    this.unkId = idOf(unk, "unk");
    this.padId = idOf(pad, "pad");
    this.modelMaxLength = config.modelMaxLength ?? SD1_DEFAULTS.modelMaxLength;

    // dict(zip(merges, range(n))): a repeated pair keeps its later rank
    this.ranks = new Map();
    config.merges.forEach(([a, b], rank) => this.ranks.set(`${a} ${b}`, rank));

    this.addedIds = new Map(config.addedTokens ?? []);
    this.addedIds.set(bos, this.bosId);
    this.addedIds.set(eos, this.eosId);
    this.addedIds.set(unk, this.unkId);
    this.addedIds.set(pad, this.padId);
    // longest first, so that the alternation finds the longest token at the leftmost position,
    // as transformers' trie does
    const alternatives = [...this.addedIds.keys()].sort((x, y) => y.length - x.length).map(escapeRegExp);
    this.addedPattern = new RegExp(alternatives.join("|"), "gu");

    for (const piece of BPE_PRESEEDED) this.cache.set(piece, [this.pieceId(piece)]);
  }

  /** Reads a diffusers `tokenizer/` folder: vocab.json, merges.txt and the optional configs. */
  static fromDir(dir: string): ClipTokenizer {
    const vocabFile = path.join(dir, "vocab.json");
    const mergesFile = path.join(dir, "merges.txt");
    const vocabJson = parseJson(vocabFile, readText(vocabFile, "tokenizer vocabulary"));
    if (typeof vocabJson !== "object" || vocabJson === null || Array.isArray(vocabJson)) {
      throw inputError(`${vocabFile}: tokenizer vocabulary is not a JSON object of token -> id`);
    }
    const vocab = new Map<string, number>();
    for (const [token, id] of Object.entries(vocabJson as Record<string, unknown>)) {
      if (!Number.isSafeInteger(id) || (id as number) < 0) {
        throw inputError(`${vocabFile}: id of token ${JSON.stringify(token)} is not a non-negative integer`);
      }
      vocab.set(token, id as number);
    }

    // transformers: read().strip().split("\n")[1 : MAX_MERGES + 1], each line split on whitespace
    const lines = readText(mergesFile, "tokenizer merges")
      .trim()
      .split("\n")
      .slice(1, MAX_MERGES + 1);
    const merges = lines.map((line, i): [string, string] => {
      const parts = line.trim().split(/\s+/);
      if (parts.length !== 2) throw inputError(`${mergesFile}: line ${i + 2} is not a pair of symbols`);
      return [parts[0], parts[1]];
    });

    // special_tokens_map.json overrides tokenizer_config.json, as in from_pretrained
    const config = readOptionalJson(path.join(dir, "tokenizer_config.json"));
    const specials = readOptionalJson(path.join(dir, "special_tokens_map.json"));
    const token = (key: string): string | undefined =>
      tokenContent(specials.file, specials.json[key]) ?? tokenContent(config.file, config.json[key]);

    return new ClipTokenizer(
      {
        vocab,
        merges,
        bosToken: token("bos_token"),
        eosToken: token("eos_token"),
        unkToken: token("unk_token"),
        padToken: token("pad_token"),
        modelMaxLength: maxLengthOf(config.file, config.json.model_max_length),
        addedTokens: addedTokensOf(config.file, config.json.added_tokens_decoder),
      },
      vocabFile,
    );
  }

  /** Number of entries in vocab.json (49408 for SD 1.x). */
  get vocabSize(): number {
    return this.vocab.size;
  }

  /** BOS, the prompt's token ids, EOS: no truncation, no padding. */
  encode(text: string): number[] {
    if (text.length > MAX_PROMPT_CHARS) {
      throw inputError(`prompt: ${text.length} characters, over the limit of ${MAX_PROMPT_CHARS} (CLIP reads only the first 77 tokens)`);
    }
    const ids = [this.bosId];
    let start = 0;
    for (const m of text.matchAll(this.addedPattern)) {
      this.encodeSegment(text.slice(start, m.index), ids);
      ids.push(this.addedIds.get(m[0]) as number);
      start = (m.index as number) + m[0].length;
    }
    this.encodeSegment(text.slice(start), ids);
    ids.push(this.eosId);
    return ids;
  }

  /**
   * What diffusers feeds the text encoder: exactly maxLength ids, padded with the pad id; a longer
   * prompt keeps its first maxLength-1 ids (BOS included) and ends with EOS, as transformers'
   * truncation does.
   */
  tokenize(text: string, maxLength: number = this.modelMaxLength): TokenizedPrompt {
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new RangeError(`maxLength must be an integer >= 2 (room for BOS and EOS), got ${maxLength}`);
    }
    const full = this.encode(text);
    const ids = new Int32Array(maxLength).fill(this.padId);
    const truncated = full.length > maxLength;
    ids.set(truncated ? [...full.slice(0, maxLength - 1), this.eosId] : full);
    return { ids, truncated, untruncatedLength: full.length };
  }

  private encodeSegment(segment: string, out: number[]): void {
    if (!segment) return;
    const text = cleanText(segment).replace(YPOGEGRAMMENI, " ");
    for (const m of text.matchAll(WORD_PATTERN)) {
      let ids = this.cache.get(m[0]);
      if (ids === undefined) {
        ids = bytePairEncode(byteEncode(m[0]), this.ranks).map((piece) => this.pieceId(piece));
        this.cache.set(m[0], ids);
      }
      for (const id of ids) out.push(id);
    }
  }

  /** convert_tokens_to_ids: added tokens first, then the vocabulary, else the unknown token. */
  private pieceId(piece: string): number {
    return this.addedIds.get(piece) ?? this.vocab.get(piece) ?? this.unkId;
  }
}

function readText(file: string, what: string): string {
  const limit = what === "tokenizer configuration" ? INPUT_LIMITS.config : INPUT_LIMITS.tokenizer;
  return readInputText(file, what, limit);
}

function parseJson(file: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw inputError(`${file}: not valid JSON (${oneLine((err as Error).message)})`, err);
  }
}

function readOptionalJson(file: string): { file: string; json: Record<string, unknown> } {
  if (!fs.existsSync(file)) return { file, json: {} };
  const json = parseJson(file, readText(file, "tokenizer configuration"));
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw inputError(`${file}: expected a JSON object`);
  }
  return { file, json: json as Record<string, unknown> };
}

/** A special token is written either as a string or as a serialized AddedToken {content, ...}. */
function tokenContent(file: string, value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (typeof value === "object" && typeof (value as { content?: unknown }).content === "string") {
    return (value as { content: string }).content;
  }
  throw inputError(`${file}: a special token is neither a string nor {"content": ...}`);
}

function maxLengthOf(file: string, value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 2) {
    throw inputError(`${file}: model_max_length must be an integer >= 2, got ${JSON.stringify(value)}`);
  }
  return value > UNLIMITED_SENTINEL ? undefined : value;
}

/**
 * added_tokens_decoder: {"49406": {"content": "<|startoftext|>", "lstrip": false, ...}, ...}.
 * Tokens that strip neighbouring whitespace or must stand alone change how text around them is
 * split; SD 1.x has none, and they are rejected rather than silently tokenized differently.
 */
function addedTokensOf(file: string, value: unknown): Map<string, number> | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw inputError(`${file}: added_tokens_decoder is not an object of id -> token`);
  }
  const added = new Map<string, number>();
  for (const [key, entry] of Object.entries(value as Record<string, unknown>)) {
    const id = Number(key);
    const content = tokenContent(file, entry);
    if (!Number.isSafeInteger(id) || id < 0 || content === undefined) {
      throw inputError(`${file}: added_tokens_decoder entry ${JSON.stringify(key)} is not id -> token`);
    }
    const flags = entry as { lstrip?: unknown; rstrip?: unknown; single_word?: unknown };
    if (flags.lstrip === true || flags.rstrip === true || flags.single_word === true) {
      throw inputError(`${file}: added token ${JSON.stringify(content)} uses lstrip/rstrip/single_word, which is not supported`);
    }
    added.set(content, id);
  }
  return added;
}
