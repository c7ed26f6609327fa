/**
 * The registries and what came with them: the reporter registry (results.csv, the GitHub job
 * summary, every format written by one loop), the one headline metric, the stage registry's
 * answers for results read back, and `report merge` keeping the --localize and --against
 * sections of its shards (union per model and call; shards that localized or compared
 * differently refused; both sections checked when read like the rest of report.json).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CaseResult, Report, TensorMetrics } from "../src/conformance/types";
import { parseReportJson } from "../src/conformance/runner";
import { REPORTERS, writeReports } from "../src/conformance/report/reporters";
import { csvText, csvRow, CSV_COLUMNS } from "../src/conformance/report/csv";
import { fitSummary } from "../src/conformance/report/github-summary";
import { renderMarkdown } from "../src/conformance/report";
import { headline, worstHeadlines } from "../src/conformance/judge/headline";
import { STAGE_DEFS, defOfResult, stageDef, CaseKind } from "../src/conformance/stages/index";
import { listCases } from "../src/conformance/cases/cases";
import { ReferenceSet } from "../src/conformance/cases/reference-set";
import { parseReportText } from "../src/conformance/report/report-file";
import { mergeReports } from "../src/conformance/report/merge";
import { HarnessError } from "../src/errors";
import { cli } from "./helpers/cli";
import { REFS } from "./helpers/fixtures";

jest.setTimeout(180_000);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-formats-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function tm(over: Partial<TensorMetrics> = {}): TensorMetrics {
  return {
    count: 16,
    maxAbs: 1e-5,
    meanAbs: 1e-6,
    rmse: 2e-6,
    relL2: 3e-6,
    cosine: 1,
    psnr: 120,
    p99Abs: 9e-6,
    nanCount: 0,
    infCount: 0,
    worstIndex: [0],
    worstOurs: 1,
    worstRef: 1,
    ...over,
  };
}

function result(over: Partial<CaseResult> & Pick<CaseResult, "id" | "stage">): CaseResult {
  return { model: "m", status: "pass", metrics: {}, checks: [], tolerance: { profile: "fp32", source: "fp32.x" }, timeMs: 1, ...over };
}

/** RFC 4180 fields, quoted or not, CRLF records (the reader the CSV must satisfy). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let i = 0;
  while (i < text.length) {
    let field = "";
    if (text[i] === '"') {
      i++;
      for (;;) {
        if (text[i] === '"' && text[i + 1] === '"') {
          field += '"';
          i += 2;
        } else if (text[i] === '"') {
          i++;
          break;
        } else field += text[i++];
      }
    } else {
      while (i < text.length && text[i] !== "," && text[i] !== "\r") field += text[i++];
    }
    row.push(field);
    if (text[i] === ",") i++;
    else {
      expect(text.slice(i, i + 2)).toBe("\r\n");
      i += 2;
      rows.push(row);
      row = [];
    }
  }
  return rows;
}

describe("headline metric", () => {
  it("is the worst relL2, a NaN winning over any finite value", () => {
    const r = result({ id: "unet:a", stage: "unet", metrics: { a: tm({ relL2: 2e-3 }), b: tm({ relL2: NaN }), c: tm({ relL2: 5e-3 }) } });
    const h = headline(r);
    expect(h.metric).toBe("relL2");
    expect(h.value).toBeNaN();
    expect(h.tensor).toBe("b");
    expect(headline(result({ id: "unet:b", stage: "unet", metrics: { a: tm({ relL2: 2e-3 }), c: tm({ relL2: 5e-3 }) } }))).toEqual({
      metric: "relL2",
      value: 5e-3,
      tensor: "c",
    });
  });

  it("is the stage's own metric where the registry names one, and a case-level measure when no tensor was compared", () => {
    expect(stageDef("rng").headlineMetric).toBe("maxUlp");
    expect(headline(result({ id: "rng:s", stage: "rng", metrics: { draw0: tm({ maxUlp: 3 }), draw1: tm({ maxUlp: 7 }) } }))).toEqual({
      metric: "maxUlp",
      value: 7,
      tensor: "draw1",
    });
    const tok = result({
      id: "tokenizer:corpus",
      stage: "tokenizer",
      checks: [{ tensor: "case", metric: "mismatches", value: 2, limit: 0, kind: "max", ok: false }],
    });
    expect(headline(tok)).toEqual({ metric: "mismatches", value: 2, tensor: "case" });
    const none = headline(result({ id: "unet:c", stage: "unet", status: "error" }));
    expect(none.value).toBeNaN();
    expect(none.tensor).toBeUndefined();
  });

  it("over a group leaves out cases that measured nothing", () => {
    const cases = [
      result({ id: "unet:a", stage: "unet", metrics: { x: tm({ relL2: 1e-4 }) } }),
      result({ id: "unet:b", stage: "unet", status: "skip" }),
      result({ id: "unet:c", stage: "unet", metrics: { x: tm({ relL2: 4e-4 }) } }),
    ];
    expect(worstHeadlines(cases)).toEqual([{ metric: "relL2", value: 4e-4, tensor: "unet:c" }]);
  });
});

describe("stage registry", () => {
  it("has one definition per case kind, each listing cases under its own stage", () => {
    const kinds = STAGE_DEFS.map((d) => d.kind);
    expect(new Set(kinds).size).toBe(kinds.length);
    const refs = ReferenceSet.open(REFS);
    const cases = listCases(refs);
    for (const c of cases) {
      expect(c.id.split(":")[0]).toBe(c.stage);
      expect(stageDef(c.kind as CaseKind).stage).toBe(c.stage);
      // a result read back maps to the definition that listed it
      expect(defOfResult({ stage: c.stage, id: c.id })?.kind).toBe(c.kind);
    }
    // every end-to-end run gives a free-running U-Net case
    const runs = refs.cases.filter((c) => c.stage === "end_to_end").map((c) => c.id.slice("end_to_end:".length));
    expect(
      cases
        .filter((c) => c.kind === "unet_free")
        .map((c) => c.id)
        .sort(),
    ).toEqual(runs.map((r) => `unet:${r}-free`).sort());
  });
});

describe("results.csv", () => {
  it("quotes per RFC 4180 and defuses formulas in text cells", () => {
    expect(csvText("plain")).toBe("plain");
    expect(csvText('a,b"c')).toBe('"a,b""c"');
    expect(csvText("line\nbreak")).toBe('"line\nbreak"');
    for (const lead of ["=", "+", "-", "@", "\t", "\r"]) expect(csvText(`${lead}1+1`).startsWith(lead === "\r" ? "\"'" : "'")).toBe(true);
    expect(csvText('=HYPERLINK("x")')).toBe('"\'=HYPERLINK(""x"")"');
  });

  it("has one row per case and model with the headline metric, its limit and the worst excess", () => {
    const results = [
      result({
        id: "unet:a",
        stage: "unet",
        model: "=cmd|' /C calc'!A0",
        status: "fail",
        metrics: { out: tm({ relL2: 2e-3, excess: 12.5 }), other: tm({ relL2: 1e-4, excess: 40 }) },
        checks: [{ tensor: "out", metric: "relL2", value: 2e-3, limit: 1e-3, kind: "max", ok: false }],
      }),
      result({
        id: "rng:s",
        stage: "rng",
        metrics: { draw0: tm({ maxUlp: 0 }) },
        checks: [{ tensor: "draw0", metric: "maxUlp", value: 0, limit: 0, kind: "max", ok: true }],
      }),
      result({ id: 'tokenizer:c,"q"', stage: "tokenizer", status: "error" }),
    ];
    const report = { results } as unknown as Report;
    const csv = REPORTERS.find((r) => r.name === "csv")!;
    const rows = parseCsv(String(csv.render(report, { readAsset: () => null })));
    expect(rows[0]).toEqual([...CSV_COLUMNS]);
    expect(rows).toHaveLength(1 + results.length);
    expect(rows[1]).toEqual(["unet:a", "unet", "'=cmd|' /C calc'!A0", "fail", "relL2", String(2e-3), String(1e-3), String(40), ""]);
    expect(rows[2]).toEqual(["rng:s", "rng", "m", "pass", "maxUlp", "0", "0", "", ""]);
    expect(rows[3]).toEqual(['tokenizer:c,"q"', "tokenizer", "m", "error", "relL2", "NaN", "", "", ""]);
    expect(csvRow(results[2])).toBe('"tokenizer:c,""q""",tokenizer,m,error,relL2,NaN,,,');
    expect(csvRow(results[2], "ort-wasm (onnxruntime-web 1.30.0, wasm)")).toBe(
      '"tokenizer:c,""q""",tokenizer,m,error,relL2,NaN,,,"ort-wasm (onnxruntime-web 1.30.0, wasm)"',
    );
  });
});

describe("reporter registry", () => {
  const report = {
    format: "sd-harness-report/1",
    run: {
      started: "2026-01-01T00:00:00Z",
      finished: "2026-01-01T00:00:01Z",
      durationMs: 1000,
      argv: [],
      host: { platform: "linux", arch: "x64", cpus: "cpu", cores: 2 },
      threads: 1,
      versions: {},
    },
    profile: "fp32",
    models: [{ label: "m", dir: "d", hashes: {} }],
    references: { dir: "r", model: "tiny", device: "cpu", deviceName: "cpu", versions: {}, command: "" },
    results: [result({ id: "unet:a", stage: "unet", metrics: { out: tm() } })],
    summary: { pass: 1, fail: 0, xfail: 0, xpass: 0, error: 0, skip: 0, total: 1, verdict: "pass" },
  } as unknown as Report;

  it("names each format once and writes every folder format in one loop", () => {
    const names = REPORTERS.map((r) => r.name);
    expect(new Set(names).size).toBe(names.length);
    const dir = fs.mkdtempSync(path.join(tmp, "all-"));
    writeReports(dir, report);
    const files = REPORTERS.filter((r) => typeof r.file === "string").map((r) => r.file as string);
    expect(fs.readdirSync(dir).sort()).toEqual([...files].sort());
    for (const f of ["report.json", "summary.md", "junit.xml", "report.html", "results.csv"]) expect(files).toContain(f);
    expect(parseReportJson(fs.readFileSync(path.join(dir, "report.json"), "utf8")).results[0].id).toBe("unet:a");
  });

  it("appends summary.md to $GITHUB_STEP_SUMMARY, and not when turned off or unset", () => {
    const dir = fs.mkdtempSync(path.join(tmp, "gh-"));
    const summary = path.join(dir, "step-summary.md");
    fs.writeFileSync(summary, "earlier step\n");
    writeReports(dir, report, { env: { GITHUB_STEP_SUMMARY: summary } });
    const once = fs.readFileSync(summary, "utf8");
    expect(once.startsWith("earlier step\n")).toBe(true);
    expect(once).toContain(renderMarkdown(report));
    writeReports(dir, report, { env: { GITHUB_STEP_SUMMARY: summary } });
    expect(fs.readFileSync(summary, "utf8").split("# sd-harness conformance: PASS")).toHaveLength(3);
    const before = fs.readFileSync(summary, "utf8");
    writeReports(dir, report, { env: { GITHUB_STEP_SUMMARY: summary }, disabled: ["github-summary"] });
    writeReports(dir, report, { env: {} });
    expect(fs.readFileSync(summary, "utf8")).toBe(before);
  });

  it("cuts a summary over GitHub's limit at a line, under the limit", () => {
    const long = Array.from({ length: 5000 }, (_, i) => `| row ${i} | ${"é".repeat(40)} |`).join("\n");
    const cut = fitSummary(long, 64 * 1024);
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(64 * 1024);
    expect(cut).toMatch(/cut here/);
    expect(cut).not.toContain("\uFFFD");
    const lines = cut.split("\n").filter((l) => l.startsWith("| row"));
    expect(lines.every((l) => l.endsWith(" |"))).toBe(true);
    expect(fitSummary("short")).toBe("\nshort\n");
  });

  it("conformance --no-github-summary leaves the job summary alone; without it the run appends", async () => {
    const summary = path.join(tmp, "cli-summary.md");
    const saved = process.env.GITHUB_STEP_SUMMARY;
    process.env.GITHUB_STEP_SUMMARY = summary;
    try {
      const off = await cli([
        "conformance",
        "--only",
        "rng:*",
        "--out",
        path.join(tmp, "cli-off"),
        "--quiet",
        "--threads",
        "1",
        "--no-github-summary",
      ]);
      expect(off.code).toBe(0);
      expect(fs.existsSync(summary)).toBe(false);
      const on = await cli(["conformance", "--only", "rng:*", "--out", path.join(tmp, "cli-on"), "--quiet", "--threads", "1"]);
      expect(on.code).toBe(0);
      expect(fs.readFileSync(summary, "utf8")).toBe(`\n${fs.readFileSync(path.join(tmp, "cli-on", "summary.md"), "utf8")}\n`);
      expect(fs.existsSync(path.join(tmp, "cli-on", "results.csv"))).toBe(true);
    } finally {
      if (saved === undefined) delete process.env.GITHUB_STEP_SUMMARY;
      else process.env.GITHUB_STEP_SUMMARY = saved;
    }
  });
});

describe("report merge keeps --localize and --against", () => {
  let text = "";
  beforeAll(async () => {
    const out = path.join(tmp, "loc");
    const r = await cli([
      "conformance",
      "--only",
      "text_encoder:*",
      "--only",
      "vae_decode:*",
      "--localize",
      "--out",
      out,
      "--quiet",
      "--threads",
      "1",
    ]);
    expect(r.code).toBe(0);
    text = fs.readFileSync(path.join(out, "report.json"), "utf8");
  });

  /** Two shards made from the real report: results split, each shard localizing only some components. */
  function shards(edit: (a: Record<string, unknown>, b: Record<string, unknown>) => void = () => {}) {
    const a = JSON.parse(text);
    const b = JSON.parse(text);
    const n = a.results.length;
    a.results = a.results.slice(0, 1);
    b.results = b.results.slice(1, n);
    a.run.shard = { index: 1, count: 2 };
    b.run.shard = { index: 2, count: 2 };
    // as --localize-failed would: shard 1 localized the text encoder, shard 2 the rest
    a.localize.calls = a.localize.calls.filter((c: { component: string }) => c.component === "text_encoder");
    b.localize.calls = b.localize.calls.filter((c: { component: string }) => c.component !== "text_encoder");
    edit(a, b);
    return [a, b].map((x, i) => ({ report: parseReportText(JSON.stringify(x), `shard${i + 1}.json`), file: `shard${i + 1}.json` }));
  }

  it("joins the localize calls of every shard, in model and component order", () => {
    const whole = parseReportJson(text);
    expect(whole.localize!.calls.length).toBeGreaterThan(1);
    const [a, b] = shards();
    expect(a.report.localize!.calls.length).toBeGreaterThan(0);
    expect(b.report.localize!.calls.length).toBeGreaterThan(0);
    for (const order of [
      [a, b],
      [b, a],
    ]) {
      const merged = mergeReports(order);
      expect(merged.localize!.calls.map((c) => `${c.model}/${c.call}`)).toEqual(whole.localize!.calls.map((c) => `${c.model}/${c.call}`));
      expect(merged.localize!.timeMs).toBe(a.report.localize!.timeMs + b.report.localize!.timeMs);
      expect(merged.localize!.references).toEqual(whole.localize!.references);
    }
    // a call both shards ran is kept once
    const both = shards((x, y) => {
      y.localize = JSON.parse(text).localize;
    });
    expect(mergeReports(both).localize!.calls).toHaveLength(whole.localize!.calls.length);
    // the merged page shows the localize section
    expect(renderMarkdown(mergeReports(shards()))).toContain("## Where drift starts (--localize)");
  });

  it("keeps a shard's localize section when the other has none", () => {
    const [a, b] = shards((_x, y) => {
      delete y.localize;
    });
    expect(mergeReports([b, a]).localize!.calls).toEqual(a.report.localize!.calls);
  });

  it("refuses shards that localized against other module sets or limits", () => {
    const bad = shards((_x, y) => {
      (y.localize as { references: { sha256: string } }).references.sha256 = "0".repeat(64);
    });
    expect(() => mergeReports(bad)).toThrow(/shard1\.json and shard2\.json differ in localize\.references\.sha256/);
    const limits = shards((_x, y) => {
      (y.localize as { limits: { overrides: unknown[] } }).limits.overrides = [
        { module: "unet/*", profile: "fp32", relL2: 1, reason: "r" },
      ];
    });
    expect(() => mergeReports(limits)).toThrow(/differ in localize\.limits/);
  });

  it("keeps --against when every shard judged against the same model, and refuses a mix", () => {
    const against = { label: "B", dir: "/some/where", hashes: { "unet/model.onnx": "a".repeat(64) } };
    const same = shards((x, y) => {
      x.against = against;
      y.against = { ...against, dir: "/elsewhere" };
    });
    expect(mergeReports(same).against).toEqual(against);
    const mixed = shards((x) => {
      x.against = against;
    });
    expect(() => mergeReports(mixed)).toThrow(/differ in against/);
    const other = shards((x, y) => {
      x.against = against;
      y.against = { ...against, hashes: { "unet/model.onnx": "b".repeat(64) } };
    });
    expect(() => mergeReports(other)).toThrow(/differ in against/);
  });

  it("checks both sections when reading a report, naming the field", () => {
    const bad = (edit: (r: Record<string, unknown>) => void) => {
      const r = JSON.parse(text);
      edit(r);
      try {
        parseReportText(JSON.stringify(r), "r.json");
      } catch (e) {
        expect(e).toBeInstanceOf(HarnessError);
        return (e as Error).message;
      }
      return "accepted";
    };
    expect(
      bad((r) => {
        r.against = { label: 1 };
      }),
    ).toMatch(/against\.label is missing or not a string/);
    expect(
      bad((r) => {
        (r.localize as { calls: { modules: unknown[] }[] }).calls[0].modules[0] = { module: "x" };
      }),
    ).toMatch(/localize\.calls\[0\]\.modules\[0\]\.class/);
    expect(
      bad((r) => {
        (r.localize as { calls: { component: string }[] }).calls[0].component = "<b>";
      }),
    ).toMatch(/localize\.calls\[0\]\.component is not one of/);
    expect(
      bad((r) => {
        (r.localize as { calls: unknown }).calls = "x";
      }),
    ).toMatch(/localize\.calls is missing or not a list/);
    expect(
      bad((r) => {
        (r.localize as { limits: { profiles: Record<string, unknown> } }).limits.profiles.fp32 = { relL2: "1" };
      }),
    ).toMatch(/localize\.limits\.profiles\["fp32"\]\.relL2/);
    expect(bad(() => {})).toBe("accepted");
  });

  it("report merge on the command line writes the joined localize section and results.csv", async () => {
    const [a, b] = shards();
    const dirs = [a, b].map((s, i) => {
      const d = path.join(tmp, `shard-dir-${i}`);
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(
        path.join(d, "report.json"),
        JSON.stringify(s.report, (_k, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v)),
      );
      return d;
    });
    const out = path.join(tmp, "merged-cli");
    const r = await cli(["report", "merge", "--out", out, "--no-github-summary", ...dirs]);
    expect(r.err).toMatch(/^merged 2 reports/);
    expect(r.code).toBe(0);
    const merged = parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8"));
    expect(merged.localize!.calls).toHaveLength(parseReportJson(text).localize!.calls.length);
    expect(fs.readFileSync(path.join(out, "results.csv"), "utf8").split("\r\n").filter(Boolean)).toHaveLength(1 + merged.results.length);
    expect((await cli(["report", "merge", "--out", path.join(tmp, "m2"), "--bogus", ...dirs])).err).toMatch(
      /report merge: Unknown argument: bogus/,
    );
  });
});
