/**
 * No manifest or report content can make the suite read or write outside the reference and
 * report folders, or put markup of its own into report.html / summary.md / junit.xml.
 *
 * A reference manifest whose free-text fields (model, device, command, versions) and a --model
 * label carry markup, terminal escapes and path tricks is run for real; then a report.json with a
 * payload in every string it holds (ids, labels, messages, metric and tensor names, keys) is merged.
 * Every file under the test's folder is listed before and after: only the report folders may gain
 * files. report.html is tokenized: every tag and attribute must be one the writer emits, no event
 * handler, no script, no link or picture leaving the page, and the payload appears only escaped.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { renderHtml, renderJunit, renderMarkdown } from "../src/conformance/report";
import { Report } from "../src/conformance/types";
import { REFS, TINY } from "./helpers/fixtures";

const PAYLOAD = `"'><script>alert(1)</script><img src=x onerror=alert(2)><a href="javascript:alert(3)">x</a>]]>&amp;\u001b[31m\u0007../../etc/passwd`;
/** the payload's markup, as it must appear once escaped by the HTML writer */
const ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;";
/** a --model label cannot hold "=" (DIR=LABEL splits at the last one) */
const LABEL = `tiny"'><script>alert(1)</script>\u001b[31m../..`;

const root = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-inject-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function capture(): CliIO & { text: () => string } {
  let s = "";
  return {
    out: (t) => {
      s += t;
    },
    err: (t) => {
      s += t;
    },
    isTTY: false,
    text: () => s,
  };
}

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : [p];
  });
}

const HTML_TAGS = new Set([
  "html",
  "head",
  "meta",
  "title",
  "style",
  "body",
  "header",
  "main",
  "footer",
  "section",
  "div",
  "span",
  "p",
  "a",
  "b",
  "small",
  "code",
  "h1",
  "h2",
  "h3",
  "ul",
  "li",
  "dl",
  "dt",
  "dd",
  "table",
  "thead",
  "tbody",
  "tr",
  "th",
  "td",
  "details",
  "summary",
  "figure",
  "figcaption",
  "img",
  "svg",
  "g",
  "rect",
  "line",
  "path",
  "circle",
  "text",
]);
const HTML_ATTRS = new Set([
  "lang",
  "charset",
  "name",
  "content",
  "id",
  "class",
  "style",
  "href",
  "src",
  "alt",
  "width",
  "height",
  "colspan",
  "rowspan",
  "scope",
  "open",
  "role",
  "aria-label",
  "xmlns",
  "viewBox",
  "x",
  "y",
  "x1",
  "x2",
  "y1",
  "y2",
  "cx",
  "cy",
  "r",
  "d",
  "fill",
  "stroke",
  "stroke-width",
  "stroke-dasharray",
  "text-anchor",
  "transform",
  "title",
]);

/**
 * A strict tokenizer for what the HTML writer produces: every "<" must open a known tag whose
 * attributes are known names with double-quoted values free of < > ", and text between tags holds
 * no ">" (the writer escapes both). Returns a list of problems (empty when the page is clean).
 */
function htmlProblems(html: string): string[] {
  const problems: string[] = [];
  const styles = html.match(/<style>[^<]*<\/style>/g) ?? [];
  expect(styles).toHaveLength(1); // the writer's own CSS, a constant
  const body = html.replace(styles[0] ?? "", "<style></style>");
  const tag = /<(\/?)([a-zA-Z][a-zA-Z0-9]*)((?:\s+[a-zA-Z][a-zA-Z0-9-]*(?:="[^"<>]*")?)*)\s*\/?>/y;
  const attr = /\s+([a-zA-Z][a-zA-Z0-9-]*)(?:="([^"<>]*)")?/g;
  let i = 0;
  let last = 0;
  const text = (to: number) => {
    const t = body.slice(last, to);
    if (t.includes(">")) problems.push(`raw ">" in text: ${JSON.stringify(t.slice(0, 80))}`);
  };
  while ((i = body.indexOf("<", i)) >= 0) {
    text(i);
    if (body.startsWith("<!DOCTYPE html>", i)) {
      i += "<!DOCTYPE html>".length;
      last = i;
      continue;
    }
    tag.lastIndex = i;
    const m = tag.exec(body);
    if (!m) {
      problems.push(`raw "<" not opening a tag: ${JSON.stringify(body.slice(i, i + 80))}`);
      i += 1;
      last = i;
      continue;
    }
    const name = m[2];
    if (!HTML_TAGS.has(name)) problems.push(`unexpected tag <${name}>`);
    for (const a of m[3].matchAll(attr)) {
      const [, an, value = ""] = a;
      if (/^on/i.test(an)) problems.push(`event handler attribute ${an} on <${name}>`);
      else if (!HTML_ATTRS.has(an) && !/^data-[a-z]+$/.test(an)) problems.push(`unexpected attribute ${an} on <${name}>`);
      if (an === "href" && !value.startsWith("#")) problems.push(`link leaving the page: ${value.slice(0, 60)}`);
      if (an === "src" && !value.startsWith("data:image/")) problems.push(`picture not inlined: ${value.slice(0, 60)}`);
      // (text such as "javascript:" inside a data- attribute or a title is inert: only URL attributes matter)
    }
    i = tag.lastIndex;
    last = i;
  }
  text(body.length);
  return problems;
}

/** Markdown: outside code spans, "<" only escaped; no raw control characters anywhere. */
function markdownProblems(md: string): string[] {
  const problems: string[] = [];
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/.test(md)) problems.push("control character");
  const outside = md.replace(/(`+)[\s\S]*?\1/g, "");
  for (const m of outside.matchAll(/(^|[^\\])</g))
    problems.push(`raw "<" near ${JSON.stringify(outside.slice(Math.max(0, m.index! - 20), m.index! + 40))}`);
  return problems;
}

/** JUnit XML: every "<" opens a tag, attribute values and text hold no raw "<", no control characters. */
function xmlProblems(xml: string): string[] {
  const problems: string[] = [];
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/.test(xml)) problems.push("control character");
  const rest = xml.replace(/^<\?xml[^>]*\?>/, "").replace(/<\/?[a-zA-Z]+(?:\s+[a-zA-Z]+="[^"<]*")*\s*\/?>/g, "");
  if (rest.includes("<"))
    problems.push(`raw "<" in XML near ${JSON.stringify(rest.slice(rest.indexOf("<") - 20, rest.indexOf("<") + 40))}`);
  return problems;
}

/**
 * results.csv: RFC 4180 records (quoted fields may hold anything, quotes doubled) and no field a
 * spreadsheet would run as a formula: none starting with = + - @ tab or CR, except numbers.
 */
function csvProblems(csv: string): string[] {
  const problems: string[] = [];
  const field = /"((?:[^"]|"")*)"|([^",\r\n]*)/y;
  let i = 0;
  while (i < csv.length) {
    field.lastIndex = i;
    const m = field.exec(csv)!;
    const value = m[1] !== undefined ? m[1].replace(/""/g, '"') : m[2];
    if (/^[=+\-@\t\r]/.test(value) && !/^-?(\d|Infinity)/.test(value))
      problems.push(`formula-like field ${JSON.stringify(value.slice(0, 40))}`);
    i = field.lastIndex;
    if (csv[i] === ",") i++;
    else if (csv.startsWith("\r\n", i)) i += 2;
    else {
      problems.push(`malformed record near ${JSON.stringify(csv.slice(i, i + 40))}`);
      break;
    }
  }
  return problems;
}

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** the payload added to every string (except the few fields with a fixed vocabulary) and every key of free-form maps */
function poison(v: unknown, key = ""): unknown {
  const fixed = new Set(["format", "status", "kind", "verdict", "refPng", "oursPng", "diffPng"]);
  // non-finite numbers are stored as "Infinity" / "NaN" strings; they stay numbers
  if (typeof v === "string") return fixed.has(key) || /^-?Infinity$|^NaN$/.test(v) ? v : `${v}${PAYLOAD}`;
  if (Array.isArray(v)) return v.map((x) => poison(x, key));
  if (v && typeof v === "object") {
    const freeKeys = new Set(["metrics", "hashes", "versions"]);
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [freeKeys.has(key) ? `${k}${PAYLOAD}` : k, poison(x, k)]));
  }
  return v;
}

test("a crafted manifest and a crafted report.json stay inside their folders and come out escaped", async () => {
  // --- a reference set whose free text carries the payload (its case ids are refused elsewhere) ---
  const refs = path.join(root, "refs");
  fs.mkdirSync(refs);
  // the one stage this run reads, copied (files must resolve inside the set)
  fs.cpSync(path.join(REFS, "vae_decode"), path.join(refs, "vae_decode"), { recursive: true });
  const manifest = JSON.parse(fs.readFileSync(path.join(REFS, "manifest.json"), "utf8"));
  for (const k of ["model", "device", "device_name", "command"]) manifest[k] = `${manifest[k]}${PAYLOAD}`;
  manifest.versions = { ...manifest.versions, [`torch${PAYLOAD}`]: `2${PAYLOAD}` };
  fs.writeFileSync(path.join(refs, "manifest.json"), JSON.stringify(manifest));
  const before = new Set(walk(root));

  const run = path.join(root, "run");
  const io = capture();
  const code = await main(
    ["conformance", "--references", refs, "--model", `${TINY}=${LABEL}`, "--only", "vae_decode:64x64", "--out", run, "--threads", "1"],
    io,
  );
  expect(io.text()).not.toMatch(/[\u0007\u001b]/); // terminal escapes never reach the terminal raw
  expect({ code, log: io.text() }).toEqual({ code: 0, log: io.text() });
  const written = walk(root).filter((f) => !before.has(f));
  expect(written.filter((f) => !f.startsWith(run + path.sep))).toEqual([]);
  // asset file names come from sanitised labels and ids only
  for (const f of written)
    expect(path.relative(run, f)).toMatch(
      /^(report\.json|summary\.md|junit\.xml|report\.html|results\.csv|assets\/[A-Za-z0-9_-][A-Za-z0-9._-]*\/[A-Za-z0-9_-][A-Za-z0-9._-]*\.png)$/,
    );

  const html = fs.readFileSync(path.join(run, "report.html"), "utf8");
  expect(htmlProblems(html)).toEqual([]);
  expect(html).toContain(ESCAPED); // the payload was shown, escaped
  expect(html.match(/src="data:image\/png;base64,/g)?.length).toBeGreaterThan(0);
  expect(markdownProblems(fs.readFileSync(path.join(run, "summary.md"), "utf8"))).toEqual([]);
  expect(xmlProblems(fs.readFileSync(path.join(run, "junit.xml"), "utf8"))).toEqual([]);

  // --- a report.json with the payload in every string it holds, merged ---
  const shard = path.join(root, "shard");
  fs.cpSync(run, shard, { recursive: true });
  const report = poison(JSON.parse(fs.readFileSync(path.join(shard, "report.json"), "utf8"))) as Json;
  fs.writeFileSync(path.join(shard, "report.json"), JSON.stringify(report));
  const beforeMerge = new Set(walk(root));
  const merged = path.join(root, "merged");
  const io2 = capture();
  const mergeCode = await main(["report", "merge", "--out", merged, shard], io2);
  expect({ mergeCode, log: io2.text() }).toEqual({ mergeCode: 0, log: io2.text() });
  expect(io2.text()).not.toMatch(/[\u0007\u001b]/);
  const mergedFiles = walk(root).filter((f) => !beforeMerge.has(f));
  expect(mergedFiles.filter((f) => !f.startsWith(merged + path.sep))).toEqual([]);
  expect(fs.readdirSync(merged).sort()).toEqual(["assets", "junit.xml", "report.html", "report.json", "results.csv", "summary.md"]);
  expect(csvProblems(fs.readFileSync(path.join(merged, "results.csv"), "utf8"))).toEqual([]);

  const mhtml = fs.readFileSync(path.join(merged, "report.html"), "utf8");
  expect(htmlProblems(mhtml)).toEqual([]);
  // ids, labels, messages, tensor names and provenance all reached the page, escaped
  const shown = mhtml.split(ESCAPED).length - 1;
  expect(shown).toBeGreaterThan(20);
  expect(mhtml.match(/src="data:image\/png;base64,/g)?.length).toBeGreaterThan(0);
  expect(markdownProblems(fs.readFileSync(path.join(merged, "summary.md"), "utf8"))).toEqual([]);
  expect(xmlProblems(fs.readFileSync(path.join(merged, "junit.xml"), "utf8"))).toEqual([]);
}, 180_000);

test("the checkers themselves catch unescaped markup", () => {
  const page = (inner: string) => `<!DOCTYPE html><html><head><style>a>b{}</style></head><body>${inner}</body></html>`;
  expect(htmlProblems(page("<p>fine &lt;b&gt;</p>"))).toEqual([]);
  expect(htmlProblems(page("<p><script>alert(1)</script></p>"))).toContain("unexpected tag <script>");
  expect(htmlProblems(page('<img src="x" onerror="alert(1)">')).join(" ")).toMatch(/picture not inlined.*event handler attribute onerror/);
  expect(htmlProblems(page('<a href="https://example.com">x</a>'))).toContain("link leaving the page: https://example.com");
  expect(htmlProblems(page("<p>1 < 2</p>")).join(" ")).toMatch(/raw "<"/);
  expect(htmlProblems(page('<p class="a">x"><b>y</b></p>')).join(" ")).toMatch(/raw ">"/);
  expect(markdownProblems("- ok \\<b\\> `<code>`")).toEqual([]);
  expect(markdownProblems("- <img src=x>")).toHaveLength(1);
  expect(xmlProblems('<?xml version="1.0"?><a b="&lt;"/>')).toEqual([]);
  expect(xmlProblems('<?xml version="1.0"?><a b="<"/>')).toHaveLength(1);
});

test("the writers escape even fields the reader types as numbers or statuses (defence in depth)", () => {
  // a Report built in code is not checked by the reader: the writers must still escape what they print
  const bad = `"><script>alert(9)</script>`;
  const report = {
    format: "sd-harness-report/1",
    run: {
      started: "s",
      finished: "f",
      durationMs: 1,
      argv: [],
      host: { platform: "p", arch: "a", cpus: "c", cores: bad },
      threads: bad,
      versions: {},
      shard: { index: bad, count: bad },
    },
    profile: "fp32",
    models: [{ label: "m", dir: "d", hashes: {} }],
    references: { dir: "r", model: "m", device: "cpu", deviceName: "cpu", versions: {}, command: "" },
    results: [
      {
        id: "vae_decode:x",
        stage: "vae_decode",
        model: "m",
        status: bad,
        metrics: {},
        checks: [],
        timeMs: 1,
        images: [{ width: bad, height: bad, psnrU8: 1, maxAbsU8: 1, mismatchedPixels: 1, refPng: "assets/m/a.png" }],
        tolerance: { profile: "fp32", source: "s" },
      },
    ],
    summary: { pass: bad, fail: 0, xfail: 0, xpass: 0, error: 0, skip: 0, total: bad, verdict: bad },
    baseline: { file: "b", factor: 2, regressions: bad },
  } as unknown as Report;
  const png = Buffer.from("89504e470d0a1a0a", "hex");
  const html = renderHtml(report, () => png);
  expect(htmlProblems(html)).toEqual([]);
  expect(html).toContain("&lt;script&gt;alert(9)");
  expect(markdownProblems(renderMarkdown(report))).toEqual([]);
  expect(xmlProblems(renderJunit(report))).toEqual([]);
});
