/**
 * The bad-input matrix, third round (issue "Reliability, third round"), run as the real binary in a
 * child process like test/bad-input-matrix.test.ts (test/helpers/cli-case.ts: a wall-clock bound past
 * which the whole process group is killed, a memory bound, peak RSS measured). The hang cases (a FIFO
 * as the job summary) are under that hard bound, so a regression fails the test instead of hanging CI.
 *
 * - the GitHub job summary ($GITHUB_STEP_SUMMARY) is a FIFO, a socket, /dev/full or a folder: one
 *   warning line, the reports in --out written, the run's own exit code;
 * - the user's environment is no internal error: --shard past any number, a full TMPDIR (a 256 KiB
 *   tmpfs), a dependency missing from node_modules; and at the CLI's boundary (in-process, below) any
 *   system error that escapes (a link loop, a folder for a file, a FIFO met by a copy) is one line;
 * - two runs into one --out: the second is refused (exit 75) while the first holds the folder's lock;
 *   a stale lock (its process gone) is taken over; SIGTERM releases it;
 * - report merge keeps a results.csv without --overwrite;
 * - --localize that could not run says so in the terminal, and exits 5 when asked for by name;
 * - a run on another onnxruntime-node than the limits were measured with warns (terminal, summary.md).
 *
 * RELIABILITY.md lists the rows with their measured exit code, time and peak RSS
 * (SDH_MATRIX_REPORT=FILE writes them).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawn, spawnSync, ChildProcess, execFileSync } from "node:child_process";
import { BIN, CliCase, ensureBuilt, measured, testCliCases } from "./helpers/cli-case";
import { ROOT } from "./helpers/fixtures";
import { systemErrorToHarness, missingPackageToHarness } from "../src/errors";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-round3-"));
/** one small conformance report (the tokenizer case), the input of the report merge rows */
const REPORT = path.join(work, "report");
const MODULES = path.join(ROOT, "fixtures", "references", "tiny-sd", "modules");
const TOLERANCES = path.join(ROOT, "conformance", "tolerances.json");
const LOCK = ".sd-harness.lock";

/** background runs a case started (the holder of a lock); every one is ended by its case or afterAll */
const background = new Set<ChildProcess>();
/** the exit code of the lock case's first run, once it ends */
let firstRun: Promise<number | null> = Promise.resolve(null);

beforeAll(() => {
  ensureBuilt();
  execFileSync(process.execPath, [BIN, "conformance", "--only", "tokenizer:*", "--out", REPORT, "--quiet", "--threads", "1"], {
    stdio: "pipe",
    env: { ...process.env, GITHUB_STEP_SUMMARY: "" },
  });
}, 180_000);

afterAll(() => {
  for (const c of background) {
    try {
      process.kill(-(c.pid as number), "SIGKILL");
    } catch {
      /* ended */
    }
  }
  fs.rmSync(work, { recursive: true, force: true });
  const rows = measured.map((m) => `${m.exit}\t${Number.isFinite(m.peakRssMb) ? m.peakRssMb.toFixed(0) : "?"} MB\t${m.ms} ms\t${m.name}`);
  if (process.env.SDH_MATRIX_REPORT) fs.writeFileSync(process.env.SDH_MATRIX_REPORT, rows.join("\n") + "\n");
});

/** A bound process of our own that is gone: a lock naming it is stale. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
  return Number(r.stdout);
}

/** The start time /proc gives a pid (field 22 of its stat), as the lock records it. */
function startOf(pid: number): string {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
}

function writeLock(dir: string, pid: number, start: string | null): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, LOCK),
    JSON.stringify({ pid, start, host: os.hostname(), started: "2026-01-01T00:00:00.000Z", command: "conformance --out r" }) + "\n",
  );
}

/** A Unix socket file left in place (bound by a process that then exits). */
function socketAt(file: string): void {
  execFileSync("python3", ["-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])", file]);
}

const hasPython = spawnSync("python3", ["-c", "pass"]).status === 0;
/** a private mount namespace (root on Linux): a small tmpfs can be mounted for one process */
const canMount =
  spawnSync("unshare", ["-m", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$0"', os.tmpdir()], { stdio: "ignore" }).status === 0;

/** A copy of the package (bin, dist, package.json, conformance, fixtures) whose node_modules lacks `missing`; returns its bin. */
function packageWithout(dir: string, missing: string | null, withDist = true): string {
  const pkg = path.join(dir, "pkg");
  fs.mkdirSync(path.join(pkg, "node_modules"), { recursive: true });
  fs.cpSync(path.join(ROOT, "bin"), path.join(pkg, "bin"), { recursive: true });
  if (withDist) fs.cpSync(path.join(ROOT, "dist"), path.join(pkg, "dist"), { recursive: true });
  fs.copyFileSync(path.join(ROOT, "package.json"), path.join(pkg, "package.json"));
  for (const d of ["conformance", "fixtures"]) fs.symlinkSync(path.join(ROOT, d), path.join(pkg, d));
  for (const name of fs.readdirSync(path.join(ROOT, "node_modules"))) {
    if (name !== missing) fs.symlinkSync(path.join(ROOT, "node_modules", name), path.join(pkg, "node_modules", name));
  }
  return path.join(pkg, "bin", "sd-harness.js");
}

const tokenizerRun = (out = "{dir}/r", ...rest: string[]) => [
  "conformance",
  "--only",
  "tokenizer:*",
  "--out",
  out,
  "--quiet",
  "--threads",
  "1",
  ...rest,
];
const merge = (out = "{dir}/merged") => ["report", "merge", "--out", out, REPORT];
const summaryWarning = (kind: string) => new RegExp(`^warning: .*sum: the github-summary report was not written: ${kind}$`, "m");

/** Checks the summary warning is one line, and that the reports in the folder were written anyway. */
const summaryChecked = (kind: string, folder: string) => (dir: string, r: { stderr: string }) => {
  expect(r.stderr).toMatch(summaryWarning(kind));
  expect(r.stderr.split("\n").filter((l) => l.startsWith("warning:"))).toHaveLength(1);
  for (const f of ["report.json", "summary.md", "results.csv"]) expect(fs.existsSync(path.join(dir, folder, f))).toBe(true);
};

const cases: CliCase[] = [
  // --- 1: the job summary is not a regular file ---------------------------------------------------
  {
    name: "summary: $GITHUB_STEP_SUMMARY a FIFO (conformance hung, SIGTERM could not end it): a warning, exit 0",
    setup: (d) => {
      execFileSync("mkfifo", [path.join(d, "sum")]);
    },
    env: { GITHUB_STEP_SUMMARY: "{dir}/sum" },
    args: tokenizerRun(),
    exit: 0,
    stderr: /^PASS: /,
    timeoutMs: 60_000,
    check: summaryChecked("it is a FIFO, not a regular file", "r"),
  },
  {
    name: "summary: $GITHUB_STEP_SUMMARY a FIFO for report merge (it hung): a warning, exit 0",
    setup: (d) => {
      execFileSync("mkfifo", [path.join(d, "sum")]);
    },
    env: { GITHUB_STEP_SUMMARY: "{dir}/sum" },
    args: merge(),
    exit: 0,
    stderr: /^merged 1 reports/,
    timeoutMs: 30_000,
    check: summaryChecked("it is a FIFO, not a regular file", "merged"),
  },
  ...(hasPython
    ? [
        {
          name: "summary: $GITHUB_STEP_SUMMARY a Unix socket: a warning, exit 0",
          setup: (d: string) => socketAt(path.join(d, "sum")),
          env: { GITHUB_STEP_SUMMARY: "{dir}/sum" },
          args: merge(),
          exit: 0,
          stderr: /^merged 1 reports/,
          check: summaryChecked("it is a socket, not a regular file", "merged"),
        },
      ]
    : []),
  {
    name: "summary: $GITHUB_STEP_SUMMARY a link to /dev/full: a warning, exit 0",
    setup: (d) => fs.symlinkSync("/dev/full", path.join(d, "sum")),
    env: { GITHUB_STEP_SUMMARY: "{dir}/sum" },
    args: merge(),
    exit: 0,
    stderr: /^merged 1 reports/,
    check: summaryChecked("it is a character device, not a regular file", "merged"),
  },
  {
    name: "summary: $GITHUB_STEP_SUMMARY a folder: a warning, exit 0",
    setup: (d) => fs.mkdirSync(path.join(d, "sum")),
    env: { GITHUB_STEP_SUMMARY: "{dir}/sum" },
    args: merge(),
    exit: 0,
    stderr: /^merged 1 reports/,
    unchanged: ["sum"],
    check: summaryChecked("it is a folder, not a regular file", "merged"),
  },
  {
    name: "summary: $GITHUB_STEP_SUMMARY a regular file is appended to, no warning",
    setup: (d) => fs.writeFileSync(path.join(d, "sum"), "# earlier step\n"),
    env: { GITHUB_STEP_SUMMARY: "{dir}/sum" },
    args: merge(),
    exit: 0,
    stderr: /^merged 1 reports/,
    check: (d, r) => {
      expect(r.stderr).not.toMatch(/warning/);
      expect(fs.readFileSync(path.join(d, "sum"), "utf8")).toMatch(/^# earlier step\n[\s\S]*# sd-harness conformance: PASS/);
    },
  },
  // --- 2: the user's environment, not an internal error ----------------------------------------------
  {
    name: "shard: --shard 1/100000000000000000000 (was exit 70, Invalid array length)",
    args: ["conformance", "--shard", "1/100000000000000000000", "--out", "{dir}/r"],
    exit: 2,
    stderr:
      /^sd-harness: error: --shard: "1\/100000000000000000000": n is larger than any number of shards can be \(at most 9007199254740991/,
    absent: ["r"],
  },
  {
    name: "shard: --shard 1/9007199254740993 (past 2^53; was exit 70)",
    args: ["conformance", "--shard", "1/9007199254740993", "--list"],
    exit: 2,
    stderr: /^sd-harness: error: --shard: "1\/9007199254740993": n is larger than any number of shards/,
  },
  {
    name: "shard: --shard 1/9007199254740991 --list takes no room per shard (one case in shard 1)",
    args: ["conformance", "--shard", "1/9007199254740991", "--list"],
    exit: 0,
    stderr: /^$/,
    stdout: /^[a-z_]+:[^\n]+\n$/,
    maxRssMb: 300,
  },
  ...(canMount
    ? [
        {
          name: "sensitivity: a full TMPDIR (a 256 KiB tmpfs; was exit 70) names the file, exit 3",
          setup: (d: string) => fs.mkdirSync(path.join(d, "tmp")),
          // the mount exists only in the child's own mount namespace, and goes with it
          wrap: (d: string) => ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=256k tmpfs "$0" && exec "$@"', path.join(d, "tmp")],
          env: { TMPDIR: "{dir}/tmp" },
          args: ["sensitivity", "--out", "{dir}/s", "--budget", "5", "--quiet", "--threads", "1"],
          exit: 3,
          stderr: /^sd-harness: error: \S+ -> \S*\/tmp\/sd-harness-sensitivity-\S+: no space left on the device \(ENOSPC\)$/,
          absent: ["s"],
          timeoutMs: 60_000,
        },
      ]
    : []),
  // --- 13: an incomplete install ---------------------------------------------------------------------
  {
    name: "install: yargs missing from node_modules names it and how to install it (was an internal error)",
    setup: (d) => {
      packageWithout(d, "yargs");
    },
    bin: (d) => path.join(d, "pkg", "bin", "sd-harness.js"),
    args: ["conformance", "--list"],
    exit: 2,
    stderr:
      /^sd-harness: error: the dependency yargs is not installed \(node_modules\/yargs is missing\); run `npm ci` in the sd-harness checkout, or reinstall sd-harness$/,
  },
  {
    name: "install: onnxruntime-node missing from node_modules names it (was 'not built yet')",
    setup: (d) => {
      packageWithout(d, "onnxruntime-node");
    },
    bin: (d) => path.join(d, "pkg", "bin", "sd-harness.js"),
    args: ["generate", "--prompt", "a cat", "--steps", "1", "--out", "{dir}/o.png"],
    exit: 2,
    stderr:
      /^sd-harness: error: the dependency onnxruntime-node is not installed \(node_modules\/onnxruntime-node is missing\); run `npm ci`/,
    absent: ["o.png"],
  },
  {
    name: "install: a checkout never built still says so",
    setup: (d) => {
      packageWithout(d, null, false);
    },
    bin: (d) => path.join(d, "pkg", "bin", "sd-harness.js"),
    args: ["conformance", "--list"],
    exit: 2,
    stderr: /^sd-harness: error: not built yet; run `npm run build` in the sd-harness checkout first$/,
  },
  {
    name: "install: a build with a module missing says the build is incomplete (it was a stack trace)",
    setup: (d) => {
      fs.rmSync(path.join(path.dirname(path.dirname(packageWithout(d, null))), "dist", "errors.js"));
    },
    bin: (d) => path.join(d, "pkg", "bin", "sd-harness.js"),
    args: ["--version"],
    exit: 2,
    stderr:
      /^sd-harness: error: the build is incomplete \(\.\.\/errors is missing, required by main\.js\); run `npm run build` in the sd-harness checkout$/,
  },
  // --- 7: one run per --out folder ---------------------------------------------------------------------
  {
    name: "lock: a second conformance into a folder a running one holds is refused, exit 75; the first finishes alone",
    setup: async (d) => {
      // the first run: the scheduler cases (a few seconds), in its own process group
      const first = spawn(
        process.execPath,
        [BIN, "conformance", "--only", "scheduler:ddim*", "--out", path.join(d, "r"), "--quiet", "--threads", "1"],
        { cwd: d, stdio: "ignore", detached: true, env: { ...process.env, GITHUB_STEP_SUMMARY: "" } },
      );
      background.add(first);
      firstRun = new Promise<number | null>((res) =>
        first.on("exit", (code) => {
          background.delete(first);
          res(code);
        }),
      );
      const t0 = Date.now();
      while (!fs.existsSync(path.join(d, "r", LOCK))) {
        if (Date.now() - t0 > 30_000) throw new Error("the first run took no lock in 30 s");
        await new Promise((res) => setTimeout(res, 50));
      }
    },
    args: tokenizerRun(),
    exit: 75,
    stderr:
      /^sd-harness: error: --out \S+\/r: in use by another sd-harness run \(pid \d+, started [^)]*: conformance --only scheduler:ddim\* [^)]*\); wait for it to end or choose another folder$/,
    timeoutMs: 60_000,
    check: async (d) => {
      expect(await firstRun).toBe(0);
      const report = JSON.parse(fs.readFileSync(path.join(d, "r", "report.json"), "utf8"));
      // only the first run's cases: nothing of the refused one mixed in
      expect(report.results.every((c: { stage: string }) => c.stage === "scheduler")).toBe(true);
      expect(fs.existsSync(path.join(d, "r", LOCK))).toBe(false);
    },
  },
  {
    name: "lock: sensitivity into a folder another live run holds is refused, exit 75, before any work",
    setup: (d) => writeLock(path.join(d, "s"), process.pid, startOf(process.pid)),
    args: ["sensitivity", "--out", "{dir}/s", "--budget", "5", "--quiet"],
    exit: 75,
    stderr: /^sd-harness: error: --out \S+\/s: in use by another sd-harness run \(pid \d+/,
    unchanged: ["s"],
  },
  {
    name: "lock: report merge into a folder another live run holds is refused, exit 75",
    setup: (d) => writeLock(path.join(d, "merged"), process.pid, startOf(process.pid)),
    args: merge(),
    exit: 75,
    stderr: /in use by another sd-harness run/,
    unchanged: ["merged"],
  },
  {
    name: "lock: a stale lock (its process gone) is taken over, exit 0, no lock left",
    setup: (d) => writeLock(path.join(d, "r"), deadPid(), null),
    args: tokenizerRun(),
    env: { GITHUB_STEP_SUMMARY: "" },
    exit: 0,
    stderr: /^PASS: /,
    timeoutMs: 60_000,
    check: (d) => {
      expect(fs.existsSync(path.join(d, "r", "report.json"))).toBe(true);
      expect(fs.existsSync(path.join(d, "r", LOCK))).toBe(false);
    },
  },
  {
    name: "lock: a lock whose pid now belongs to another process (another start time) is stale",
    setup: (d) => writeLock(path.join(d, "merged"), process.pid, "1"),
    args: merge(),
    exit: 0,
    stderr: /^merged 1 reports/,
    check: (d) => expect(fs.existsSync(path.join(d, "merged", LOCK))).toBe(false),
  },
  {
    name: "lock: an empty lock file made just now is a run between its create and its write: refused, exit 75",
    setup: (d) => {
      fs.mkdirSync(path.join(d, "merged"));
      fs.writeFileSync(path.join(d, "merged", LOCK), "");
    },
    args: merge(),
    exit: 75,
    stderr: /^sd-harness: error: --out \S+merged: in use by another sd-harness run \(its \.sd-harness\.lock was created just now\)/,
    unchanged: ["merged"],
  },
  {
    name: "lock: an empty lock file a minute old (a run killed before writing it) is stale, exit 0",
    setup: (d) => {
      fs.mkdirSync(path.join(d, "merged"));
      fs.writeFileSync(path.join(d, "merged", LOCK), "");
      const old = new Date(Date.now() - 60_000);
      fs.utimesSync(path.join(d, "merged", LOCK), old, old);
    },
    args: merge(),
    exit: 0,
    stderr: /^merged 1 reports/,
    check: (d) => expect(fs.existsSync(path.join(d, "merged", LOCK))).toBe(false),
  },
  {
    name: "lock: SIGTERM mid-run releases the lock and removes the folder it made, exit 143",
    args: ["conformance", "--only", "scheduler:*", "--out", "{dir}/r", "--threads", "1"],
    signal: { name: "SIGTERM", when: /^PASS /m },
    exit: 143,
    stderrLines: "any",
    stderr: /^sd-harness: terminated \(SIGTERM\); no partial output was written$/,
    absent: ["r"],
    timeoutMs: 120_000,
  },
  // --- 8: report merge and results.csv -----------------------------------------------------------------
  {
    name: "merge: --out holding only a results.csv is kept without --overwrite (it was replaced), exit 3",
    setup: (d) => {
      fs.mkdirSync(path.join(d, "merged"));
      fs.writeFileSync(path.join(d, "merged", "results.csv"), "mine\r\n");
    },
    args: merge(),
    exit: 3,
    stderr: /^sd-harness: error: --out \S+merged: already holds results\.csv \(pass --overwrite to replace them\)$/,
    unchanged: ["merged"],
  },
  // --- 9: localization that could not run ------------------------------------------------------------
  {
    name: "localize: --localize that could not run at all warns in the terminal and exits 5 (it said PASS, exit 0)",
    setup: (d) => {
      fs.cpSync(MODULES, path.join(d, "mods"), { recursive: true });
      // every module tensor file cut short: its sha256 no longer matches, so no call can run
      for (const f of fs.readdirSync(path.join(d, "mods")).filter((n) => n.endsWith(".safetensors")))
        fs.truncateSync(path.join(d, "mods", f), 100);
    },
    args: tokenizerRun("{dir}/r", "--localize", "--module-references", "{dir}/mods"),
    env: { GITHUB_STEP_SUMMARY: "" },
    exit: 5,
    stderrLines: "any",
    stderr: /^sd-harness: --localize could not run for any module call \(see the warnings above\); exit 5$/,
    timeoutMs: 90_000,
    check: (d, r) => {
      const warnings = r.stderr.split("\n").filter((l) => l.startsWith("warning: --localize:"));
      expect(warnings).toHaveLength(4);
      expect(warnings[0]).toMatch(
        /^warning: --localize: tiny-sd-onnx text_encoder: 1 module call not run: \S+text_encoder-astronaut\.safetensors: sha256 \w+… differs from the manifest's$/,
      );
      expect(r.stderr).toMatch(/^PASS: 1 pass/m);
      // the report is written all the same, with the reasons
      expect(fs.readFileSync(path.join(d, "r", "summary.md"), "utf8")).toMatch(/not run/);
    },
  },
  // --- 14: the runtime version ------------------------------------------------------------------------
  {
    name: "version: limits measured with another onnxruntime-node warn in the terminal and in summary.md",
    setup: (d) => {
      const t = JSON.parse(fs.readFileSync(TOLERANCES, "utf8"));
      fs.writeFileSync(path.join(d, "tol.json"), JSON.stringify({ ...t, measured_with: { "onnxruntime-node": "1.29.0" } }));
    },
    args: tokenizerRun("{dir}/r", "--tolerances", "{dir}/tol.json"),
    env: { GITHUB_STEP_SUMMARY: "" },
    exit: 0,
    stderr: /^PASS: /,
    timeoutMs: 60_000,
    check: (d, r) => {
      const ort = JSON.parse(fs.readFileSync(path.join(ROOT, "node_modules", "onnxruntime-node", "package.json"), "utf8")).version;
      const line = `the limits in ${path.join(d, "tol.json")} were measured with onnxruntime-node 1.29.0; this run uses onnxruntime-node ${ort}, so drift near a limit may come from the runtime rather than the port`;
      expect(r.stderr.split("\n")).toContain(`warning: ${line}`);
      const md = fs.readFileSync(path.join(d, "r", "summary.md"), "utf8");
      expect(md).toMatch(
        /> \*\*Warning:\*\* the limits in .* were measured with onnxruntime-node 1\.29\.0; this run uses onnxruntime-node /,
      );
      // and which version ran, as before
      expect(md).toContain(`onnxruntime-node ${ort}`);
    },
  },
  {
    name: "version: the shipped limits name the installed onnxruntime-node: no warning",
    args: tokenizerRun(),
    env: { GITHUB_STEP_SUMMARY: "" },
    exit: 0,
    stderr: /^PASS: /,
    timeoutMs: 60_000,
    check: (d, r) => {
      expect(r.stderr).not.toMatch(/warning/);
      expect(fs.readFileSync(path.join(d, "r", "summary.md"), "utf8")).not.toMatch(/Warning/);
    },
  },
];

testCliCases(cases);

/**
 * The CLI's error boundary (src/cli/main.ts) turns a system error that escaped where it happened into
 * one line naming the path: real errors from real files, so the codes and fields are Node's own.
 */
describe("system errors at the CLI's boundary", () => {
  const caught = (f: () => unknown): unknown => {
    try {
      f();
    } catch (e) {
      return e;
    }
    throw new Error("did not throw");
  };
  const dir = path.join(work, "errno");
  beforeAll(() => fs.mkdirSync(dir, { recursive: true }));

  test("a link loop (ELOOP), a folder read as a file (EISDIR): exit 2, naming the path", () => {
    fs.symlinkSync("loop", path.join(dir, "loop"));
    const loop = systemErrorToHarness(caught(() => fs.readFileSync(path.join(dir, "loop", "x"))));
    expect([loop?.exitCode, loop?.message]).toEqual([
      2,
      `${path.join(dir, "loop", "x")}: too many levels of symbolic links (a link loop) (ELOOP)`,
    ]);
    const isDir = systemErrorToHarness(caught(() => fs.openSync(dir, "w")));
    expect([isDir?.exitCode, isDir?.message]).toEqual([2, `${dir}: is a folder where a file was expected (EISDIR)`]);
  });

  test("a full device (ENOSPC) with no path: exit 3, naming TMPDIR", () => {
    const fd = fs.openSync("/dev/full", "w");
    try {
      const full = systemErrorToHarness(
        caught(() => fs.writeSync(fd, "x")),
        { TMPDIR: "/some/tmp" },
      );
      expect([full?.exitCode, full?.message]).toEqual([
        3,
        "write (the output folder or TMPDIR /some/tmp): no space left on the device (ENOSPC)",
      ]);
    } finally {
      fs.closeSync(fd);
    }
  });

  test("fs.cp meeting a FIFO: exit 2, naming it", () => {
    fs.mkdirSync(path.join(dir, "src"));
    execFileSync("mkfifo", [path.join(dir, "src", "p")]);
    const e = systemErrorToHarness(caught(() => fs.cpSync(path.join(dir, "src"), path.join(dir, "dst"), { recursive: true })));
    expect([e?.exitCode, e?.message]).toEqual([2, `${path.join(dir, "dst", "p")}: a FIFO, which cannot be copied (ERR_FS_CP_FIFO_PIPE)`]);
  });

  test("a missing package names it; anything else is left alone (a bug stays exit 70)", () => {
    const missing = missingPackageToHarness(caught(() => require("left-pad-not-installed")));
    expect(missing?.message).toBe(
      "the dependency left-pad-not-installed is not installed (node_modules/left-pad-not-installed is missing); run `npm ci` in the sd-harness checkout, or reinstall sd-harness",
    );
    expect(systemErrorToHarness(new TypeError("x is undefined"))).toBeNull();
    expect(systemErrorToHarness(new RangeError("Invalid array length"))).toBeNull();
    expect(missingPackageToHarness(new Error("Cannot find module './x'"))).toBeNull();
  });
});
