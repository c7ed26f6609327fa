/**
 * Commands that only read JSON load no runtime: `report merge` reads reports and writes reports,
 * and must work (and start quickly) where no native binding could even load. Checked on the built
 * CLI in a child process: after the merge, no onnxruntime or browser-driver package is in Node's
 * module cache.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { runConformance, writeReport } from "../src/conformance/runner";
import { ROOT, TINY, REFS } from "./helpers/fixtures";
import { tempDir } from "./helpers/tmp";

const tmp = tempDir("sd-json-only-");

test("report merge loads no runtime package", async () => {
  const report = await runConformance({
    models: [{ label: "fp32", dir: TINY }],
    references: REFS,
    profile: "fp32",
    only: ["rng:seed42-3", "tokenizer:corpus"],
    outDir: null,
    threads: 1,
  });
  const shard = path.join(tmp(), "shard");
  fs.mkdirSync(shard);
  writeReport(shard, report);
  const script = `
    const { main } = require(${JSON.stringify(path.join(ROOT, "dist", "cli", "main.js"))});
    main(["report", "merge", ${JSON.stringify(path.join(shard, "report.json"))}, "--out", ${JSON.stringify(path.join(tmp(), "merged"))}], { out: () => {}, err: (s) => process.stderr.write(s) })
      .then((code) => { process.stdout.write(JSON.stringify({ code, loaded: Object.keys(require.cache).filter((k) => /node_modules[\\\\/](onnxruntime|puppeteer)/.test(k)) })); });`;
  const out = JSON.parse(
    execFileSync(process.execPath, ["-e", script], { encoding: "utf8", timeout: 60_000, env: { ...process.env, GITHUB_STEP_SUMMARY: "" } }),
  );
  expect(out).toEqual({ code: 0, loaded: [] });
  expect(fs.existsSync(path.join(tmp(), "merged", "report.json"))).toBe(true);
}, 120_000);
