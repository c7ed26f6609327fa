/**
 * Bad inputs around reports, run as the real CLI in a child process (test/helpers/cli-case.ts):
 * hostile shard reports and reference manifests, report folders in the way, baselines that are not
 * reports, tolerance profiles without limits, empty shards and interrupted runs. Each case states
 * the exit code, the one line it must print, and the files that must be left unchanged or absent.
 *
 * The shard reports the merge cases start from are made once, by real conformance runs.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { BIN, CliCase, ensureBuilt, runCli, testCliCases } from "./helpers/cli-case";
import { REFS, ROOT, TINY } from "./helpers/fixtures";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-badrep-"));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** two shards of the vae_decode cases (they carry image assets) and the tolerance file */
const SHARD1 = path.join(work, "shard1");
const SHARD2 = path.join(work, "shard2");
const TOLERANCES = path.join(ROOT, "conformance", "tolerances.json");

beforeAll(() => {
  ensureBuilt();
  for (const [i, dir] of [SHARD1, SHARD2].entries()) {
    execFileSync(
      process.execPath,
      [BIN, "conformance", "--only", "vae_decode:*", "--shard", `${i + 1}/2`, "--out", dir, "--quiet", "--threads", "1"],
      { stdio: "pipe" },
    );
  }
}, 180_000);

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function copyShard(from: string, to: string): void {
  fs.cpSync(from, to, { recursive: true });
}

/** Copies a shard into `to` and edits its report.json. */
function editedShard(from: string, to: string, edit: (r: Json) => void): void {
  copyShard(from, to);
  const file = path.join(to, "report.json");
  const r = JSON.parse(fs.readFileSync(file, "utf8"));
  edit(r);
  fs.writeFileSync(file, JSON.stringify(r));
}

/** The first result with pictures. */
function imaged(r: Json): Json {
  return r.results.find((x: Json) => (x.images ?? []).length > 0);
}

/** A copy of the bundled reference set (tensor files linked, manifest copied) with its manifest edited. */
function editedRefs(to: string, edit: (m: Json) => void): void {
  fs.mkdirSync(to, { recursive: true });
  for (const e of fs.readdirSync(REFS)) {
    if (e !== "manifest.json") fs.symlinkSync(path.join(REFS, e), path.join(to, e));
  }
  const m = JSON.parse(fs.readFileSync(path.join(REFS, "manifest.json"), "utf8"));
  edit(m);
  fs.writeFileSync(path.join(to, "manifest.json"), JSON.stringify(m));
}

function firstCase(m: Json, id: string): Json {
  const c = m.cases.find((x: Json) => x.id === id);
  if (!c) throw new Error(`no case ${id} in the bundled manifest`);
  return c;
}

function tolerancesWith(edit: (t: Json) => void): (dir: string) => void {
  return (dir) => {
    const t = JSON.parse(fs.readFileSync(TOLERANCES, "utf8"));
    edit(t);
    fs.writeFileSync(path.join(dir, "tol.json"), JSON.stringify(t));
  };
}

const SECRET = "SECRET-beside-the-shard";
/** how many vae_decode cases the bundled set holds (the shards split them) */
const VAE_DECODE_CASES = (JSON.parse(fs.readFileSync(path.join(REFS, "manifest.json"), "utf8")).cases as Json[]).filter(
  (c) => c.stage === "vae_decode",
).length;
const merge = (...inputs: string[]) => ["report", "merge", "--out", "{dir}/merged", ...inputs];
const conformance = (...extra: string[]) => ["conformance", "--only", "vae_decode:64x64", "--quiet", "--threads", "1", ...extra];

const cases: CliCase[] = [
  // --- report merge: asset paths in a shard report are untrusted ---------------------------------
  {
    name: "merge: an asset path with ../ is refused, naming the file and field",
    setup: (dir) => {
      editedShard(SHARD1, path.join(dir, "s"), (r) => {
        imaged(r).images[0].refPng = "../secret.txt";
      });
      fs.writeFileSync(path.join(dir, "secret.txt"), SECRET);
    },
    args: merge("{dir}/s"),
    exit: 2,
    stderr: /s\/report\.json: .*results\[\d+\]\.images\[0\]\.refPng "\.\.\/secret\.txt" contains a '\.\.'/,
    unchanged: ["secret.txt"],
    absent: ["merged"],
  },
  {
    name: "merge: an absolute asset path is refused",
    setup: (dir) =>
      editedShard(SHARD1, path.join(dir, "s"), (r) => {
        imaged(r).images[0].oursPng = "/etc/hostname";
      }),
    args: merge("{dir}/s"),
    exit: 2,
    stderr: /report\.json: .*results\[\d+\]\.images\[0\]\.oursPng "\/etc\/hostname" is an absolute path/,
    absent: ["merged"],
  },
  {
    name: "merge: an asset path outside assets/ is refused",
    setup: (dir) =>
      editedShard(SHARD1, path.join(dir, "s"), (r) => {
        imaged(r).images[0].diffPng = "report.json";
      }),
    args: merge("{dir}/s"),
    exit: 2,
    stderr: /results\[\d+\]\.images\[0\]\.diffPng "report\.json" is not under assets\//,
    absent: ["merged"],
  },
  {
    name: "merge: an asset that is a symlink leading out of the shard is refused",
    setup: (dir) => {
      copyShard(SHARD1, path.join(dir, "s"));
      fs.writeFileSync(path.join(dir, "secret.png"), SECRET);
      const r = JSON.parse(fs.readFileSync(path.join(dir, "s", "report.json"), "utf8"));
      const asset = path.join(dir, "s", imaged(r).images[0].refPng);
      fs.rmSync(asset);
      fs.symlinkSync(path.join(dir, "secret.png"), asset);
    },
    args: merge("{dir}/s"),
    exit: 2,
    stderr: /report\.json: results\[\d+\]\.images\[0\]\.refPng: asset assets\/.* resolves outside .* \(symlink\)/,
    unchanged: ["secret.png"],
    absent: ["merged"],
  },
  {
    name: "merge: a symlinked assets folder leading out of the shard is refused",
    setup: (dir) => {
      copyShard(SHARD1, path.join(dir, "s"));
      fs.renameSync(path.join(dir, "s", "assets"), path.join(dir, "elsewhere"));
      fs.symlinkSync(path.join(dir, "elsewhere"), path.join(dir, "s", "assets"));
    },
    args: merge("{dir}/s"),
    exit: 2,
    stderr: /resolves outside .* \(symlink\)/,
    absent: ["merged"],
  },
  // --- report merge: the output folder -----------------------------------------------------------
  {
    name: "merge: --out holding a report.html is refused without --overwrite",
    setup: (dir) => {
      fs.mkdirSync(path.join(dir, "merged"));
      fs.writeFileSync(path.join(dir, "merged", "report.html"), "mine");
    },
    args: merge(SHARD1, SHARD2),
    exit: 3,
    stderr: /--out .*merged: already holds report\.html \(pass --overwrite to replace them\)/,
    unchanged: ["merged"],
  },
  {
    name: "merge: --out holding a summary.md is refused without --overwrite",
    setup: (dir) => {
      fs.mkdirSync(path.join(dir, "merged"));
      fs.writeFileSync(path.join(dir, "merged", "summary.md"), "mine");
    },
    args: merge(SHARD1, SHARD2),
    exit: 3,
    stderr: /already holds summary\.md/,
    unchanged: ["merged"],
  },
  {
    name: "merge: --overwrite replaces the reports in an existing --out",
    setup: (dir) => {
      fs.mkdirSync(path.join(dir, "merged"));
      fs.writeFileSync(path.join(dir, "merged", "report.html"), "mine");
      fs.writeFileSync(path.join(dir, "merged", "notes.txt"), "kept");
    },
    args: [...merge(SHARD1, SHARD2), "--overwrite"],
    exit: 0,
    stderr: /^merged 2 reports: \d+ results, verdict pass$/,
    unchanged: ["merged/notes.txt"],
    check: (dir) => {
      const html = fs.readFileSync(path.join(dir, "merged", "report.html"), "utf8");
      expect(html).toMatch(/^<!DOCTYPE html>/);
      const merged = JSON.parse(fs.readFileSync(path.join(dir, "merged", "report.json"), "utf8"));
      expect(merged.results).toHaveLength(VAE_DECODE_CASES);
      // the pictures came along: one data: URI per panel (reference, ours, diff) of every image
      const images = merged.results.reduce((n: number, x: Json) => n + (x.images ?? []).length, 0);
      expect(images).toBeGreaterThan(0);
      expect(html.match(/src="data:image\/png;base64,/g)?.length).toBe(3 * images);
      expect(fs.readdirSync(path.join(dir, "merged")).filter((f) => f.startsWith("."))).toEqual([]);
    },
  },
  {
    name: "merge: --out naming a file is one line, exit 3",
    setup: (dir) => fs.writeFileSync(path.join(dir, "merged"), "a file"),
    args: merge(SHARD1),
    exit: 3,
    stderr: /--out .*merged: exists and is not a folder/,
    unchanged: ["merged"],
  },
  {
    name: "merge: --out below a file is one line, exit 3",
    setup: (dir) => fs.writeFileSync(path.join(dir, "f"), "a file"),
    args: ["report", "merge", "--out", "{dir}/f/merged", SHARD1],
    exit: 3,
    stderr: /--out .*f\/merged: a parent of it is a file/,
    unchanged: ["f"],
  },
  // --- report merge: reports that are not reports ------------------------------------------------
  {
    name: "merge: a report without results is one line, exit 2",
    setup: (dir) => fs.writeFileSync(path.join(dir, "r.json"), JSON.stringify({ format: "sd-harness-report/1" })),
    args: merge("{dir}/r.json"),
    exit: 2,
    stderr: /r\.json: not a usable sd-harness report: results is missing or not a list/,
    absent: ["merged"],
  },
  {
    name: "merge: a result whose status is markup is refused",
    setup: (dir) =>
      editedShard(SHARD1, path.join(dir, "s"), (r) => {
        r.results[0].status = '"><script>alert(1)</script>';
      }),
    args: merge("{dir}/s"),
    exit: 2,
    stderr: /results\[0\]\.status is not one of pass, fail/,
    absent: ["merged"],
  },
  {
    name: "merge: a metric that is a string of markup is refused",
    setup: (dir) =>
      editedShard(SHARD1, path.join(dir, "s"), (r) => {
        imaged(r).images[0].width = "<img src=x onerror=alert(1)>";
      }),
    args: merge("{dir}/s"),
    exit: 2,
    stderr: /results\[\d+\]\.images\[0\]\.width is missing or not a number/,
    absent: ["merged"],
  },
  {
    name: "merge: a report.json that is not JSON is one line, exit 2",
    setup: (dir) => fs.writeFileSync(path.join(dir, "r.json"), "{ not json"),
    args: merge("{dir}/r.json"),
    exit: 2,
    stderr: /r\.json: not valid JSON/,
    absent: ["merged"],
  },
  {
    name: "merge: a FIFO named as a report is refused without reading it",
    setup: (dir) => {
      execFileSync("mkfifo", [path.join(dir, "fifo.json")]);
    },
    args: merge("{dir}/fifo.json"),
    exit: 2,
    stderr: /fifo\.json: not a regular file/,
    timeoutMs: 10_000,
    absent: ["merged"],
  },
  {
    name: "merge: a missing report is one line, exit 2",
    args: merge("{dir}/nope"),
    exit: 2,
    stderr: /nope: cannot read a report \(ENOENT\)/,
    absent: ["merged"],
  },
  // --- report merge: shards that do not belong together --------------------------------------------
  {
    name: "merge: shards of different models (same label) are refused",
    setup: (dir) =>
      editedShard(SHARD2, path.join(dir, "s2"), (r) => {
        r.models[0].hashes["unet/model.onnx"] = "0".repeat(64);
      }),
    args: merge(SHARD1, "{dir}/s2"),
    exit: 2,
    stderr:
      /shard1\/report\.json and .*s2\/report\.json differ in models\["tiny-sd-onnx"\]\.hashes\["unet\/model\.onnx"\] \(.* vs 000000000000…\): not the same model/,
    absent: ["merged"],
  },
  {
    name: "merge: shards of different reference sets are refused",
    setup: (dir) =>
      editedShard(SHARD2, path.join(dir, "s2"), (r) => {
        r.references.sha256 = "f".repeat(64);
      }),
    args: merge(SHARD1, "{dir}/s2"),
    exit: 2,
    stderr: /shard1\/report\.json and .*s2\/report\.json differ in references\.sha256/,
    absent: ["merged"],
  },
  {
    name: "merge: shards whose reference fingerprints differ are refused",
    setup: (dir) => {
      editedShard(SHARD1, path.join(dir, "s1"), (r) => {
        r.references.fingerprint = { tensors: "a" };
      });
      editedShard(SHARD2, path.join(dir, "s2"), (r) => {
        r.references.fingerprint = { tensors: "b" };
      });
    },
    args: merge("{dir}/s1", "{dir}/s2"),
    exit: 2,
    stderr: /s1\/report\.json and .*s2\/report\.json differ in references\.fingerprint/,
    absent: ["merged"],
  },
  {
    name: "merge: shards run with different profiles are refused",
    setup: (dir) =>
      editedShard(SHARD2, path.join(dir, "s2"), (r) => {
        r.profile = "fp16";
        for (const x of r.results) x.tolerance.profile = "fp16";
      }),
    args: merge(SHARD1, "{dir}/s2"),
    exit: 2,
    stderr: /differ in profile \(fp32 vs fp16\)/,
    absent: ["merged"],
  },
  {
    name: "merge: shards run with different tolerance files are refused",
    setup: (dir) =>
      editedShard(SHARD2, path.join(dir, "s2"), (r) => {
        r.tolerances.sha256 = "1".repeat(64);
      }),
    args: merge(SHARD1, "{dir}/s2"),
    exit: 2,
    stderr: /differ in tolerances\.sha256/,
    absent: ["merged"],
  },
  {
    name: "merge: a shard that does not record its reference set is refused",
    setup: (dir) =>
      editedShard(SHARD2, path.join(dir, "s2"), (r) => {
        delete r.references.sha256;
      }),
    args: merge(SHARD1, "{dir}/s2"),
    exit: 2,
    stderr: /s2\/report\.json has no references\.sha256/,
    absent: ["merged"],
  },
  {
    name: "merge: the same case in two shards is refused",
    args: merge(SHARD1, SHARD1),
    exit: 2,
    stderr: /case "vae_decode:[^"]+" \(tiny-sd-onnx\) appears in both .*shard1\/report\.json and .*shard1\/report\.json/,
    absent: ["merged"],
  },
  // --- conformance: the report folder --------------------------------------------------------------
  {
    name: "conformance: --out naming an existing file is one line, exit 3",
    setup: (dir) => fs.writeFileSync(path.join(dir, "out"), "a file"),
    args: conformance("--out", "{dir}/out"),
    exit: 3,
    stderr: /--out .*out: exists and is not a folder/,
    unchanged: ["out"],
  },
  {
    name: "conformance: --out holding files is refused without --overwrite",
    setup: (dir) => {
      fs.mkdirSync(path.join(dir, "out"));
      fs.writeFileSync(path.join(dir, "out", "summary.md"), "mine");
    },
    args: conformance("--out", "{dir}/out"),
    exit: 3,
    stderr: /--out .*out: exists and is not empty \(pass --overwrite/,
    unchanged: ["out"],
  },
  {
    name: "conformance: a broken model leaves no empty reports/<time>/ folder",
    setup: (dir) => {
      fs.cpSync(TINY, path.join(dir, "model"), { recursive: true, dereference: true });
      fs.writeFileSync(path.join(dir, "model", "vae_decoder", "model.onnx"), "not a model");
    },
    args: conformance("--model", "{dir}/model"),
    exit: 2,
    stderr: /model\/vae_decoder\/model\.onnx: /,
    absent: ["reports"],
  },
  // --- conformance: baselines -----------------------------------------------------------------------
  {
    name: "conformance: --baseline without results is one line, exit 2",
    setup: (dir) => fs.writeFileSync(path.join(dir, "base.json"), JSON.stringify({ format: "sd-harness-report/1" })),
    args: conformance("--baseline", "{dir}/base.json", "--out", "{dir}/out"),
    exit: 2,
    stderr: /--baseline .*base\.json: not a usable sd-harness report: results is missing/,
    absent: ["out"],
  },
  {
    name: "conformance: --baseline whose results have no metrics is one line, exit 2",
    setup: (dir) =>
      editedShard(SHARD1, path.join(dir, "b"), (r) => {
        for (const x of r.results) delete x.metrics;
      }),
    args: conformance("--baseline", "{dir}/b/report.json", "--out", "{dir}/out"),
    exit: 2,
    stderr: /--baseline .*b\/report\.json: not a usable sd-harness report: results\[0\]\.metrics is missing or not an object/,
    absent: ["out"],
  },
  {
    name: "conformance: --baseline that is not a report.json (a tolerance file) is one line, exit 2",
    args: conformance("--baseline", TOLERANCES, "--out", "{dir}/out"),
    exit: 2,
    stderr: /--baseline .*tolerances\.json: not a usable sd-harness report: format is not "sd-harness-report\/1"/,
    absent: ["out"],
  },
  // --- conformance: selection -----------------------------------------------------------------------
  {
    name: "conformance: an empty shard says so and how many cases there are",
    args: ["conformance", "--shard", "999/1000", "--only", "vae_decode:*", "--out", "{dir}/out"],
    exit: 2,
    stderr: new RegExp(`^sd-harness: error: shard 999/1000 has no cases \\(${VAE_DECODE_CASES} cases in all`),
    absent: ["out"],
  },
  {
    name: "conformance: an empty shard of the whole set names the total",
    args: ["conformance", "--shard", "999/1000", "--out", "{dir}/out"],
    exit: 2,
    stderr: /shard 999\/1000 has no cases \(\d{3} cases in all\)/,
    absent: ["out"],
  },
  {
    name: "conformance: --only matching nothing hints at glob syntax",
    args: ["conformance", "--only", "vae_decode", "--out", "{dir}/out"],
    exit: 2,
    stderr: /no cases match --only "vae_decode" \(\d+ cases in the set; globs match whole ids such as 'unet:\*'/,
    absent: ["out"],
  },
  // --- conformance: no limit means no pass ----------------------------------------------------------
  {
    name: "conformance: a profile with no limits for a stage is refused, naming profile and stage",
    setup: tolerancesWith((t) => {
      t.profiles.empty = {};
    }),
    args: conformance("--tolerances", "{dir}/tol.json", "--profile", "empty", "--out", "{dir}/out"),
    exit: 2,
    stderr: /tol\.json: profile "empty" has no limits for stage vae_decode \(case vae_decode:64x64\)/,
    absent: ["out"],
  },
  {
    name: "conformance: a stage whose limits are an empty object is refused",
    setup: tolerancesWith((t) => {
      t.profiles.fp32.vae_decode = {};
    }),
    args: conformance("--tolerances", "{dir}/tol.json", "--out", "{dir}/out"),
    exit: 2,
    stderr: /profile "fp32" has no limits for stage vae_decode/,
    absent: ["out"],
  },
  {
    name: "conformance: a limit that is not a number is refused",
    setup: tolerancesWith((t) => {
      t.profiles.fp32.vae_decode = { maxAbs: "0.001" };
    }),
    args: conformance("--tolerances", "{dir}/tol.json", "--out", "{dir}/out"),
    exit: 2,
    stderr: /limit maxAbs for fp32\.vae_decode \(profile "fp32"\) is "0\.001", not a number/,
    absent: ["out"],
  },
  {
    name: "conformance: limits that name no metric of the case are an error, not a pass",
    setup: tolerancesWith((t) => {
      t.profiles.fp32.vae_decode = { noSuchMetric: 1 };
    }),
    args: conformance("--tolerances", "{dir}/tol.json", "--out", "{dir}/out"),
    exit: 1,
    stderr: /^ERROR: 0 pass, 0 fail, 0 xfail, 0 xpass, 1 error/,
    stderrLines: "any",
    maxRssMb: Infinity,
    check: (dir) => {
      const r = JSON.parse(fs.readFileSync(path.join(dir, "out", "report.json"), "utf8"));
      expect(r.results.map((x: Json) => x.status)).toEqual(["error"]);
      expect(r.results[0].message).toMatch(/no check applied: .*noSuchMetric.* profile fp32/);
    },
  },
  // --- conformance: manifests are untrusted -----------------------------------------------------------
  {
    name: "manifest: a case id with ../ is refused, naming the manifest",
    setup: (dir) =>
      editedRefs(path.join(dir, "refs"), (m) => {
        firstCase(m, "vae_decode:64x64").id = "vae_decode:../../../escape";
      }),
    args: ["conformance", "--references", "{dir}/refs", "--only", "vae_decode:*", "--out", "{dir}/out"],
    exit: 2,
    stderr: /refs\/manifest\.json: cases\[\d+\]\.id "vae_decode:\.\.\/\.\.\/\.\.\/escape" is not a case id/,
    absent: ["out", "escape", "../escape"],
  },
  {
    name: "manifest: a case id with markup is refused",
    setup: (dir) =>
      editedRefs(path.join(dir, "refs"), (m) => {
        firstCase(m, "vae_decode:64x64").id = "vae_decode:<img src=x onerror=alert(1)>";
      }),
    args: ["conformance", "--references", "{dir}/refs", "--list"],
    exit: 2,
    stderr: /manifest\.json: cases\[\d+\]\.id "vae_decode:<img src=x onerror=alert\(1\)>" is not a case id/,
  },
  {
    name: "manifest: a case id with terminal escapes never reaches the terminal raw",
    setup: (dir) =>
      editedRefs(path.join(dir, "refs"), (m) => {
        firstCase(m, "vae_decode:64x64").id = "vae_decode:x\u001b]0;pwned\u0007\u001b[2J\nFAKE";
      }),
    args: ["conformance", "--references", "{dir}/refs", "--list"],
    exit: 2,
    stderr: /cases\[\d+\]\.id "vae_decode:x\\\\x1b\]0;pwned\\\\x07\\\\x1b\[2J\\\\x0aFAKE" is not a case id/,
    check: (_dir, r) => expect(r.stderr).not.toMatch(/[\u0000-\u0009\u000b-\u001f]/),
  },
  {
    name: "manifest: a stage that does not match the id is refused",
    setup: (dir) =>
      editedRefs(path.join(dir, "refs"), (m) => {
        firstCase(m, "vae_decode:64x64").stage = "unet";
      }),
    args: ["conformance", "--references", "{dir}/refs", "--list"],
    exit: 2,
    stderr: /cases\[\d+\]\.stage "unet" does not match its id vae_decode:64x64/,
  },
  {
    name: "manifest: a case file with ../ is refused",
    setup: (dir) =>
      editedRefs(path.join(dir, "refs"), (m) => {
        firstCase(m, "vae_decode:64x64").file = "../../etc/passwd";
      }),
    args: ["conformance", "--references", "{dir}/refs", "--list"],
    exit: 2,
    stderr: /case vae_decode:64x64 points outside the set or at an odd name \("\.\.\/\.\.\/etc\/passwd"\)/,
  },
  {
    name: "manifest: an absolute case file is refused",
    setup: (dir) =>
      editedRefs(path.join(dir, "refs"), (m) => {
        firstCase(m, "vae_decode:64x64").file = "/etc/hostname";
      }),
    args: ["conformance", "--references", "{dir}/refs", "--list"],
    exit: 2,
    stderr: /case vae_decode:64x64 points outside the set/,
  },
  {
    name: "manifest: a case listed twice is refused",
    setup: (dir) =>
      editedRefs(path.join(dir, "refs"), (m) => {
        m.cases.push({ ...firstCase(m, "vae_decode:64x64") });
      }),
    args: ["conformance", "--references", "{dir}/refs", "--list"],
    exit: 2,
    stderr: /case vae_decode:64x64 appears twice/,
  },
  {
    name: "manifest: a case file that is a symlink out of the set is an error for that case, never read",
    setup: (dir) => {
      const refs = path.join(dir, "refs");
      editedRefs(refs, (m) => {
        firstCase(m, "vae_decode:64x64").file = "outside.safetensors";
      });
      fs.copyFileSync(path.join(REFS, "vae_decode", "64x64.safetensors"), path.join(dir, "real.safetensors"));
      fs.symlinkSync(path.join(dir, "real.safetensors"), path.join(refs, "outside.safetensors"));
    },
    args: ["conformance", "--references", "{dir}/refs", "--only", "vae_decode:64x64", "--out", "{dir}/out", "--quiet", "--threads", "1"],
    exit: 1,
    stderr: /^ERROR: 0 pass, 0 fail, 0 xfail, 0 xpass, 1 error/,
    stderrLines: "any",
    maxRssMb: Infinity,
    check: (dir) => {
      const r = JSON.parse(fs.readFileSync(path.join(dir, "out", "report.json"), "utf8"));
      expect(r.results[0].message).toMatch(/outside\.safetensors: resolves outside the reference set/);
    },
  },
  {
    name: "manifest: a manifest.json that is a FIFO is refused without reading it",
    setup: (dir) => {
      fs.mkdirSync(path.join(dir, "refs"));
      execFileSync("mkfifo", [path.join(dir, "refs", "manifest.json")]);
    },
    args: ["conformance", "--references", "{dir}/refs", "--list"],
    exit: 2,
    stderr: /refs\/manifest\.json: not a regular file/,
    timeoutMs: 10_000,
  },
];

testCliCases(cases, () => work);

test("SIGTERM mid-run: no asset PNG and no report under a final name, no folder left behind", async () => {
  const dir = fs.mkdtempSync(path.join(work, "sigterm-"));
  const out = path.join(dir, "out");
  // cases run in id order and end_to_end (with pictures) come first: the cue is the first finished case
  const r = await runCli(
    {
      name: "sigterm",
      args: ["conformance", "--only", "end_to_end:*", "--out", out, "--threads", "1"],
      exit: 130,
      stderr: /./,
      signal: { name: "SIGTERM", when: /^(PASS|FAIL|ERROR)\s/m },
      timeoutMs: 120_000,
    },
    dir,
  );
  expect(r.timedOut).toBe(false);
  expect(r.msAfterSignal).toBeGreaterThan(0);
  // 130 today; 143 (128 + SIGTERM) where SIGTERM gets its own status
  expect([130, 143]).toContain(r.code);
  // the run created out/, so it removes it; nothing staged survives under any name
  expect(fs.existsSync(out)).toBe(false);
  expect(fs.readdirSync(dir)).toEqual([]);
}, 180_000);
