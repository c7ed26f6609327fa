import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { ClipTokenizer, bytePairEncode, MAX_PROMPT_CHARS } from "../src/pipeline/tokenizer";
import { ExitCode, HarnessError } from "../src/errors";

const ROOT = path.resolve(__dirname, "..");
const TOKENIZER_DIR = path.join(ROOT, "fixtures/models/tiny-sd-onnx/tokenizer");
const CORPUS_FILE = path.join(ROOT, "fixtures/references/tiny-sd/cpu/tokenizer/corpus.json");

interface CorpusCase {
  text: string;
  ids: number[];
  untruncated_ids: number[];
  truncated: boolean;
}

interface Corpus {
  vocab_size: number;
  model_max_length: number;
  bos_token_id: number;
  eos_token_id: number;
  pad_token_id: number;
  cases: CorpusCase[];
}

function loadCorpus(): Corpus {
  if (!fs.existsSync(CORPUS_FILE)) {
    throw new Error(
      `tokenizer reference ${CORPUS_FILE} is missing; generate it with ` +
        "`.venv/bin/python scripts/make_references.py --model fixtures/models/tiny-sd --out fixtures/references/tiny-sd/cpu`",
    );
  }
  return JSON.parse(fs.readFileSync(CORPUS_FILE, "utf8")) as Corpus;
}

describe("ClipTokenizer", () => {
  const tokenizer = ClipTokenizer.fromDir(TOKENIZER_DIR);

  it("has SD 1.x's vocabulary and special ids", () => {
    expect(tokenizer.vocabSize).toBe(49408);
    expect(tokenizer.bosId).toBe(49406);
    expect(tokenizer.eosId).toBe(49407);
    expect(tokenizer.padId).toBe(49407);
    expect(tokenizer.modelMaxLength).toBe(77);
  });

  it("encodes a known prompt", () => {
    expect(tokenizer.encode("a photograph of an astronaut riding a horse")).toEqual([
      49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407,
    ]);
  });

  it("pads to 77 with the pad id and reports no truncation", () => {
    const out = tokenizer.tokenize("a photograph of an astronaut riding a horse");
    expect(out.ids).toBeInstanceOf(Int32Array);
    expect(out.ids.length).toBe(77);
    expect(out.truncated).toBe(false);
    expect(out.untruncatedLength).toBe(10);
    expect(Array.from(out.ids.subarray(10))).toEqual(new Array(67).fill(49407));
  });

  it("truncates to the first 76 ids plus EOS", () => {
    const text = Array.from({ length: 100 }, () => "cat").join(" ");
    const out = tokenizer.tokenize(text);
    expect(out.truncated).toBe(true);
    expect(out.untruncatedLength).toBe(102);
    expect(out.ids[0]).toBe(49406);
    expect(out.ids[76]).toBe(49407);
    expect(Array.from(out.ids.subarray(1, 76)).every((id) => id === 2368)).toBe(true);
  });

  it("maps literal special tokens in the text to their ids", () => {
    expect(tokenizer.encode("a cat<|endoftext|>a dog")).toEqual([49406, 320, 2368, 49407, 320, 1929, 49407]);
    expect(tokenizer.encode("<|startoftext|>")).toEqual([49406, 49406, 49407]);
  });

  describe("matches transformers' CLIPTokenizer on the reference corpus", () => {
    const corpus = loadCorpus();

    it("was generated with the same vocabulary and special ids", () => {
      expect(corpus.cases.length).toBeGreaterThanOrEqual(120);
      expect(tokenizer.vocabSize).toBe(corpus.vocab_size);
      expect(tokenizer.modelMaxLength).toBe(corpus.model_max_length);
      expect([tokenizer.bosId, tokenizer.eosId, tokenizer.padId]).toEqual([corpus.bos_token_id, corpus.eos_token_id, corpus.pad_token_id]);
    });

    it.each(corpus.cases.map((c, i) => [i, JSON.stringify(c.text).slice(0, 60), c] as const))("case %i: %s", (_i, _label, c) => {
      expect(tokenizer.encode(c.text)).toEqual(c.untruncated_ids);
      const out = tokenizer.tokenize(c.text, corpus.model_max_length);
      expect(Array.from(out.ids)).toEqual(c.ids);
      expect(out.truncated).toBe(c.truncated);
      expect(out.untruncatedLength).toBe(c.untruncated_ids.length);
    });
  });

  describe("tokenizer files", () => {
    let dir: string;
    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "sd-harness-tok-"));
    });
    afterEach(() => {
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it("a missing vocab.json is a HarnessError naming the file", () => {
      fs.copyFileSync(path.join(TOKENIZER_DIR, "merges.txt"), path.join(dir, "merges.txt"));
      const vocabFile = path.join(dir, "vocab.json");
      let error: unknown;
      try {
        ClipTokenizer.fromDir(dir);
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(HarnessError);
      expect((error as HarnessError).exitCode).toBe(ExitCode.usage);
      expect((error as HarnessError).message).toContain(vocabFile);
      expect((error as HarnessError).message).not.toContain("\n");
    });

    it("an unparsable vocab.json is a HarnessError naming the file", () => {
      fs.writeFileSync(path.join(dir, "vocab.json"), "{not json");
      fs.copyFileSync(path.join(TOKENIZER_DIR, "merges.txt"), path.join(dir, "merges.txt"));
      expect(() => ClipTokenizer.fromDir(dir)).toThrow(HarnessError);
      expect(() => ClipTokenizer.fromDir(dir)).toThrow(path.join(dir, "vocab.json"));
    });

    it("a missing merges.txt is a HarnessError naming the file", () => {
      fs.copyFileSync(path.join(TOKENIZER_DIR, "vocab.json"), path.join(dir, "vocab.json"));
      expect(() => ClipTokenizer.fromDir(dir)).toThrow(HarnessError);
      expect(() => ClipTokenizer.fromDir(dir)).toThrow(path.join(dir, "merges.txt"));
    });

    it("works without the optional config files, with SD 1.x's defaults", () => {
      fs.copyFileSync(path.join(TOKENIZER_DIR, "vocab.json"), path.join(dir, "vocab.json"));
      fs.copyFileSync(path.join(TOKENIZER_DIR, "merges.txt"), path.join(dir, "merges.txt"));
      const bare = ClipTokenizer.fromDir(dir);
      expect(bare.modelMaxLength).toBe(77);
      expect(bare.encode("a photograph of an astronaut riding a horse")).toEqual(
        tokenizer.encode("a photograph of an astronaut riding a horse"),
      );
    });
  });

  it("tokenizes the corpus in milliseconds", () => {
    const texts = loadCorpus().cases.map((c) => c.text);
    const fresh = ClipTokenizer.fromDir(TOKENIZER_DIR);
    const start = process.hrtime.bigint();
    for (const text of texts) fresh.tokenize(text);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    expect(ms).toBeLessThan(500);
  });

  describe("long input is bounded", () => {
    /** transformers' CLIPTokenizer.bpe as written: rescan the word for the lowest-ranked pair, merge all its occurrences */
    function referenceBpe(piece: string, ranks: ReadonlyMap<string, number>): string[] {
      let word = piece.split("");
      word[word.length - 1] += "</w>";
      while (word.length > 1) {
        let best = -1;
        let bestRank = Infinity;
        for (let i = 0; i < word.length - 1; i++) {
          const rank = ranks.get(word[i] + " " + word[i + 1]);
          if (rank !== undefined && rank < bestRank) {
            bestRank = rank;
            best = i;
          }
        }
        if (best < 0) break;
        const [first, second] = [word[best], word[best + 1]];
        const merged: string[] = [];
        for (let i = 0; i < word.length;) {
          if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
            merged.push(first + second);
            i += 2;
          } else merged.push(word[i++]);
        }
        word = merged;
      }
      return word;
    }
    const ranks = (tokenizer as unknown as { ranks: Map<string, number> }).ranks;
    const letters = (n: number, seed: number) => {
      let x = seed;
      return Array.from({ length: n }, () => String.fromCharCode(97 + ((x = (x * 1103515245 + 12345) % 2147483648) % 26))).join("");
    };

    it("the heap-based merge equals transformers' algorithm on random words (CLIP's merges)", () => {
      fc.assert(
        fc.property(fc.string({ unit: fc.constantFrom(..."abcdeilnorst"), minLength: 1, maxLength: 200 }), (w) => {
          expect(bytePairEncode(w, ranks)).toEqual(referenceBpe(w, ranks));
        }),
        { numRuns: 300 },
      );
      const w = letters(5000, 7);
      expect(bytePairEncode(w, ranks)).toEqual(referenceBpe(w, ranks));
    });

    it("... and on arbitrary merge tables, including ones that rank a merged symbol before its parts", () => {
      const sym = fc.constantFrom("a", "b", "c", "ab", "bc", "ca", "abc", "c</w>", "a</w>", "b</w>", "bc</w>");
      fc.assert(
        fc.property(
          fc.array(fc.tuple(sym, sym), { maxLength: 30 }),
          fc.string({ unit: fc.constantFrom("a", "b", "c"), minLength: 1, maxLength: 40 }),
          (pairs, w) => {
            const table = new Map<string, number>();
            pairs.forEach(([x, y], rank) => table.set(`${x} ${y}`, rank));
            expect(bytePairEncode(w, table)).toEqual(referenceBpe(w, table));
          },
        ),
        { numRuns: 1000 },
      );
    });

    it("one 131,000-letter word is merged in well under a second (the rescanning algorithm took 70 s)", () => {
      const w = letters(131_000, 1);
      const t0 = performance.now();
      const pieces = bytePairEncode(w, ranks);
      const ms = performance.now() - t0;
      console.log(`bpe of a 131,000-letter word: ${ms.toFixed(0)} ms, ${pieces.length} pieces`);
      expect(pieces.join("")).toBe(`${w}</w>`);
      expect(ms).toBeLessThan(2000);
    });

    it("a 1 MB prompt is refused in milliseconds, before any tokenizing", () => {
      const t0 = performance.now();
      let err: unknown;
      try {
        tokenizer.tokenize("a".repeat(1 << 20));
      } catch (e) {
        err = e;
      }
      const ms = performance.now() - t0;
      expect(err).toBeInstanceOf(HarnessError);
      expect((err as HarnessError).exitCode).toBe(ExitCode.usage);
      expect((err as Error).message).toBe(
        `prompt: 1048576 characters, over the limit of ${MAX_PROMPT_CHARS} (CLIP reads only the first 77 tokens)`,
      );
      expect(ms).toBeLessThan(50);
    });

    it("a prompt at the limit (one word, or 21,000 words) is tokenized and truncated in well under a second", () => {
      for (const text of [letters(MAX_PROMPT_CHARS, 3), "a photo of a cat, ".repeat(3640).slice(0, MAX_PROMPT_CHARS)]) {
        const t0 = performance.now();
        const r = tokenizer.tokenize(text);
        const ms = performance.now() - t0;
        expect(r.truncated).toBe(true);
        expect(r.ids[76]).toBe(tokenizer.eosId);
        expect(ms).toBeLessThan(1000);
      }
    });
  });
});
