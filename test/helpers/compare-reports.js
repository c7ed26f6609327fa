#!/usr/bin/env node
/**
 * Compares two trees of conformance report folders byte for byte, after masking what a refactor
 * may change: a check that a change of structure changed no report.
 *
 *   node test/helpers/compare-reports.js BEFORE_DIR AFTER_DIR [ROOT_BEFORE=ROOT_AFTER ...]
 *
 * Every file under either tree is compared (a file on one side only is a difference). Text files
 * (.json .md .html .xml .csv .txt .stdout .stderr) are masked first; anything else (the PNG assets)
 * is compared unmasked. Masked, in this order:
 *   - absolute paths: each ROOT pair given (the package root each run came from), then BEFORE_DIR
 *     and AFTER_DIR themselves, become <ROOT0>, <ROOT1>, … and <OUT>;
 *   - dates: ISO-8601 timestamps (2026-12-07T07:39:06.511Z) and the report folder's
 *     YYYYMMDD-HHMMSS names;
 *   - timings: report.json's "durationMs" / "timeMs" / "createMs" / "runMs" values, JUnit's
 *     time="…" attributes, every number followed by a time unit (ms, s, min, h; "1 min 13 s" is
 *     one duration), and the share of wall time spent outside onnxruntime ("19.7 % outside it"),
 *     in every text format; a time_ms column of results.csv, if it has one.
 * Exit 0 when every file matches, 1 with the first differing line of each file otherwise.
 */
const fs = require("node:fs");
const path = require("node:path");

const [before, after, ...roots] = process.argv.slice(2);
if (!before || !after) {
  process.stderr.write("usage: compare-reports.js BEFORE_DIR AFTER_DIR [ROOT_BEFORE=ROOT_AFTER ...]\n");
  process.exit(2);
}
const TEXT = /\.(json|md|html|xml|csv|txt|stdout|stderr)$/;

function files(dir, rel = "", out = []) {
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = path.join(rel, e.name);
    if (e.isDirectory()) files(dir, r, out);
    else out.push(r);
  }
  return out;
}

function escape(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** side 0: before, 1: after */
function mask(text, side, file) {
  const swaps = roots.map((p, i) => [p.split("=")[side], `<ROOT${i}>`]);
  swaps.push([side === 0 ? path.resolve(before) : path.resolve(after), "<OUT>"]);
  // longest first, so a root inside another is not half-replaced
  swaps.sort((a, b) => b[0].length - a[0].length);
  for (const [from, to] of swaps) text = text.replace(new RegExp(escape(from), "g"), to);
  text = text
    .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, "<DATE>")
    .replace(/\b\d{8}-\d{6}\b/g, "<DATE>")
    .replace(/"(durationMs|timeMs|createMs|runMs)": *[-0-9.e+]+/g, '"$1": <T>')
    .replace(/\btime="[^"]*"/g, 'time="<T>"')
    .replace(/\d+(\.\d+)?(e[-+]?\d+)?(&nbsp;| )?(ms|s|min|h)\b/g, "<T>")
    .replace(/\d+(\.\d+)?(&nbsp;| )?% outside/g, "<T>% outside")
    // a duration past a minute is two numbers ("1 min 13 s")
    .replace(/<T>(?:(?:&nbsp;| )<T>)+/g, "<T>");
  if (file.endsWith(".csv")) {
    const lines = text.split("\n");
    const col = lines[0].split(",").indexOf("time_ms");
    if (col >= 0)
      text = lines
        .map((l, i) =>
          i === 0 || !l
            ? l
            : l
                .split(",")
                .map((c, j) => (j === col ? "<T>" : c))
                .join(","),
        )
        .join("\n");
  }
  return text;
}

const all = [...new Set([...files(before), ...files(after)])].sort();
let differ = 0;
for (const f of all) {
  const a = path.join(before, f);
  const b = path.join(after, f);
  if (!fs.existsSync(a) || !fs.existsSync(b)) {
    differ++;
    process.stdout.write(`${f}: only in ${fs.existsSync(a) ? "BEFORE" : "AFTER"}\n`);
    continue;
  }
  const x = fs.readFileSync(a);
  const y = fs.readFileSync(b);
  if (!TEXT.test(f)) {
    if (!x.equals(y)) {
      differ++;
      process.stdout.write(`${f}: bytes differ\n`);
    }
    continue;
  }
  const mx = mask(x.toString("utf8"), 0, f).split("\n");
  const my = mask(y.toString("utf8"), 1, f).split("\n");
  const n = Math.max(mx.length, my.length);
  for (let i = 0; i < n; i++) {
    if (mx[i] !== my[i]) {
      differ++;
      process.stdout.write(`${f}:${i + 1}:\n  - ${(mx[i] ?? "<end>").slice(0, 300)}\n  + ${(my[i] ?? "<end>").slice(0, 300)}\n`);
      break;
    }
  }
}
process.stdout.write(`${all.length} files compared, ${differ} differ\n`);
process.exit(differ ? 1 : 0);
