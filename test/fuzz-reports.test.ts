/**
 * Fuzzing the readers of files that come from elsewhere: report.json (for --baseline and `report
 * merge`, with merge's shard checks) and a reference set's manifest.json. Arbitrary JSON, real
 * files with values replaced or removed at random places, and byte-mutated real files must each
 * give a one-line HarnessError or a usable object, never another exception; a report that is
 * accepted must also render (HTML, Markdown, JUnit) and merge without one.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { HarnessError } from "../src/errors";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { parseReportText } from "../src/conformance/report/report-file";
import { mergeReports } from "../src/conformance/report/merge";
import { ReferenceSet } from "../src/conformance/cases/reference-set";
import { listCases } from "../src/conformance/cases/cases";
import { renderHtml, renderJunit, renderMarkdown } from "../src/conformance/report";
import { REFS } from "./helpers/fixtures";

const BUDGET_MS = Number(process.env.FUZZ_BUDGET_MS ?? 2500);
const opts = (numRuns: number) => ({
  numRuns: numRuns * Number(process.env.FUZZ_RUNS_FACTOR ?? 1),
  plugins: [fc.interruptAfterTimeLimit(BUDGET_MS)],
});
jest.setTimeout(60_000);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-fuzzrep-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** success, or a one-line HarnessError; anything else is re-thrown and fails the property */
function harnessOnly<T>(f: () => T): T | HarnessError {
  try {
    return f();
  } catch (e) {
    if (e instanceof HarnessError) {
      expect(e.message.split("\n")).toHaveLength(1);
      return e;
    }
    throw e;
  }
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** every path (list of keys) in a JSON value, the root included */
function paths(v: Json, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => paths(x, [...at, i], out));
  else if (v && typeof v === "object") for (const k of Object.keys(v)) paths(v[k], [...at, k], out);
  return out;
}

/** Structural mutations of a real file: values replaced by arbitrary JSON (or by a wrong type), keys removed. */
function mutatedJson(base: Json): fc.Arbitrary<string> {
  const all = paths(base).filter((p) => p.length > 0);
  const replacement = fc.oneof(
    fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>,
    fc.constantFrom<Json>(
      null,
      "",
      "../../etc/passwd",
      "/etc/hostname",
      "<script>alert(1)</script>",
      "Infinity",
      "NaN",
      -1,
      1e308,
      [],
      {},
      "\u001b[31m",
    ),
  );
  const edit = fc.tuple(
    fc.nat(all.length - 1),
    fc.oneof(
      replacement.map((v) => ({ v })),
      fc.constant(null),
    ),
  );
  return fc.array(edit, { minLength: 1, maxLength: 6 }).map((edits) => {
    const copy = JSON.parse(JSON.stringify(base)) as Json;
    for (const [i, e] of edits) {
      const p = all[i];
      let parent = copy as Record<string | number, Json>;
      let ok = true;
      for (const k of p.slice(0, -1)) {
        const next = parent?.[k];
        if (next === null || typeof next !== "object") {
          ok = false;
          break;
        }
        parent = next as Record<string | number, Json>;
      }
      if (!ok) continue;
      const last = p[p.length - 1];
      if (e === null) {
        if (Array.isArray(parent)) parent.splice(Number(last), 1);
        else delete parent[last];
      } else parent[last] = e.v;
    }
    return JSON.stringify(copy);
  });
}

/** byte-level mutations of a file's text: flips, truncation, insertion */
function mutatedText(base: string): fc.Arbitrary<string> {
  const buf = Buffer.from(base);
  return fc.oneof(
    fc.array(fc.tuple(fc.nat(buf.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }).map((edits) => {
      const b = Buffer.from(buf);
      for (const [i, v] of edits) b[i] = v;
      return b.toString("utf8");
    }),
    fc.nat(buf.length).map((n) => buf.subarray(0, n).toString("utf8")),
    fc.tuple(fc.nat(buf.length), fc.string({ minLength: 1, maxLength: 16 })).map(([i, s]) => base.slice(0, i) + s + base.slice(i)),
  );
}

// ---- report.json ------------------------------------------------------------------------------

describe("report.json reader and merge validation", () => {
  let realText = "";
  let real: Json = null;

  beforeAll(async () => {
    // a real report with images, series, checks and non-finite numbers (PSNR of identical pictures)
    const out = path.join(tmp, "real");
    const io: CliIO = { out: () => {}, err: () => {}, isTTY: false };
    const code = await main(
      [
        "conformance",
        "--only",
        "vae_decode:64x64",
        "--only",
        "text_encoder:empty",
        "--only",
        "scheduler:euler-leading-eps-4",
        "--out",
        out,
        "--quiet",
        "--threads",
        "1",
      ],
      io,
    );
    expect(code).toBe(0);
    realText = fs.readFileSync(path.join(out, "report.json"), "utf8");
    real = JSON.parse(realText);
  }, 120_000);

  /** an accepted report must render and merge without any exception but a HarnessError */
  function exercise(text: string): void {
    const r = harnessOnly(() => parseReportText(text, "fuzz.json"));
    if (r instanceof HarnessError) {
      expect(r.message).toMatch(/^fuzz\.json: /);
      return;
    }
    renderHtml(r, () => null);
    renderMarkdown(r);
    renderJunit(r);
    const other = parseReportText(realText, "real.json");
    const merged = harnessOnly(() =>
      mergeReports([
        { report: other, file: "real.json" },
        { report: r, file: "fuzz.json" },
      ]),
    );
    if (!(merged instanceof HarnessError)) {
      expect(merged.results.length).toBe(other.results.length + r.results.length);
      renderHtml(merged, () => null);
    }
  }

  test("the real report is accepted and its shards' identity recorded", () => {
    const r = parseReportText(realText, "real.json");
    expect(r.results.length).toBe(3);
    expect(r.references.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(r.tolerances?.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(() =>
      mergeReports([
        { report: r, file: "a" },
        { report: r, file: "b" },
      ]),
    ).toThrow(/appears in both a and b/);
  });

  test("arbitrary JSON", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (v) => exercise(JSON.stringify(v))),
      opts(1500),
    );
  });

  test("arbitrary objects in the report's shape", () => {
    const anyField = fc.jsonValue({ maxDepth: 3 });
    const shaped = fc.record(
      {
        format: fc.oneof(fc.constant("sd-harness-report/1"), anyField),
        run: fc.oneof(fc.constant((real as Record<string, Json>).run), anyField),
        profile: fc.oneof(fc.constant("fp32"), anyField),
        models: fc.oneof(fc.constant((real as Record<string, Json>).models), anyField),
        references: fc.oneof(fc.constant((real as Record<string, Json>).references), anyField),
        results: fc.oneof(fc.constant((real as Record<string, Json>).results), fc.array(anyField, { maxLength: 3 }), anyField),
        summary: fc.oneof(fc.constant({}), anyField),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(shaped, (v) => exercise(JSON.stringify(v))),
      opts(1500),
    );
  });

  test("the real report with values replaced or removed", () => {
    fc.assert(fc.property(mutatedJson(real), exercise), opts(2000));
  });

  test("the real report with bytes flipped, cut or inserted", () => {
    fc.assert(fc.property(mutatedText(realText), exercise), opts(1500));
  });
});

// ---- manifest.json ------------------------------------------------------------------------------

describe("reference manifest reader (ReferenceSet.open)", () => {
  const realText = fs.readFileSync(path.join(REFS, "manifest.json"), "utf8");
  const real = JSON.parse(realText) as Json;
  const dir = path.join(tmp, "refs");
  fs.mkdirSync(dir, { recursive: true });

  function exercise(text: string): void {
    fs.writeFileSync(path.join(dir, "manifest.json"), text);
    const r = harnessOnly(() => ReferenceSet.open(dir));
    if (r instanceof HarnessError) {
      expect(r.message).toMatch(/manifest\.json: /);
      return;
    }
    expect(r.sha256).toMatch(/^[0-9a-f]{64}$/);
    for (const c of listCases(r)) {
      // ids that reach file names, the terminal and the reports are plain
      expect(c.id).toMatch(/^[a-z][a-z0-9_]*:[A-Za-z0-9][A-Za-z0-9._+-]*$/);
      expect(c.id).not.toContain("..");
      const ref = r.get(c.refId);
      expect(path.isAbsolute(ref.file)).toBe(false);
      expect(ref.file.split("/")).not.toContain("..");
    }
  }

  test("the real manifest opens", () => {
    fs.writeFileSync(path.join(dir, "manifest.json"), realText);
    expect(ReferenceSet.open(dir).cases.length).toBe((real as { cases: unknown[] }).cases.length);
  });

  test("arbitrary JSON", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (v) => exercise(JSON.stringify(v))),
      opts(1000),
    );
  });

  test("arbitrary case entries", () => {
    const text = fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.constantFrom(
        "unet:a",
        "unet:../x",
        "vae_decode:<b>",
        "a:b\u0000c",
        "x/../y.safetensors",
        "/abs",
        "a\\b",
        ".hidden",
        "rng/ok.safetensors",
      ),
    );
    const entry = fc.record(
      {
        id: fc.oneof(text, fc.jsonValue({ maxDepth: 1 })),
        stage: fc.oneof(fc.constantFrom("unet", "rng", "vae_decode", "end_to_end", "tokenizer"), fc.jsonValue({ maxDepth: 1 })),
        file: fc.oneof(text, fc.jsonValue({ maxDepth: 1 })),
        sha256: fc.oneof(fc.constant("0".repeat(64)), fc.jsonValue({ maxDepth: 1 })),
        tensors: fc.oneof(fc.constant({ x: ["float32", [1, 2]] }), fc.jsonValue({ maxDepth: 3 })),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.array(fc.oneof(entry, fc.jsonValue({ maxDepth: 2 })), { maxLength: 6 }), (cases) =>
        exercise(JSON.stringify({ ...(real as object), cases })),
      ),
      opts(1500),
    );
  });

  test("the real manifest with values replaced or removed", () => {
    fc.assert(fc.property(mutatedJson(real), exercise), opts(400));
  });

  test("the real manifest with bytes flipped, cut or inserted", () => {
    fc.assert(fc.property(mutatedText(realText), exercise), opts(400));
  });
});
