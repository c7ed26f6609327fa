/**
 * Table-driven CLI cases run as child processes: `node bin/sd-harness.js ARGS` in a fresh temporary
 * folder, under a wall-clock bound (the whole process group is killed past it) and a memory bound
 * (prlimit's RLIMIT_DATA), with its peak RSS measured (GNU time's %M, else VmHWM polled from /proc).
 * A case states the exit code, the stderr line it must print, and the files that must be left
 * unchanged or absent. In-process tests cannot see what only a real process shows: a segfault in
 * native code, a blocked event loop that ignores SIGTERM, EPIPE on a closed stdout, memory use.
 *
 * Usage (one test per case):
 *   import { CliCase, testCliCases } from "./helpers/cli-case";
 *   const cases: CliCase[] = [{ name: "...", args: ["generate", "--prompt", "x", "--out", "{dir}/o.png"], exit: 2, stderr: /.../ }];
 *   testCliCases(cases);
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { spawn, execFileSync } from "node:child_process";
import { ROOT } from "./fixtures";
// the program under prlimit and GNU time, its peak RSS, the signal numbers: child-run.ts
import { GNU_TIME, PRLIMIT, SIGNALS, hwmMb, programPid as nodePid } from "./child-run";

export const BIN = path.join(ROOT, "bin", "sd-harness.js");

export interface CliCase {
  /** the test's title; unique within a table */
  readonly name: string;
  /** argv after `sd-harness`; every "{dir}" is replaced by the case's temporary folder */
  readonly args: readonly string[] | ((dir: string) => string[]);
  /** the bin script to run instead of the checkout's (a copy of the package laid out in the case folder) */
  readonly bin?: (dir: string) => string;
  /**
   * a command the node process is started through, inside the memory bound and the RSS measurement
   * (e.g. `unshare -m sh -c 'mount … && exec "$@"' sh` for a small full TMPDIR); it must exec its arguments
   */
  readonly wrap?: (dir: string) => string[];
  /** added to (undefined: removed from) the test process's environment; "{dir}" is replaced */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** written to the child's stdin, which is then closed (default: no stdin) */
  readonly stdin?: string | Buffer;
  /** prepares the case's folder before the run (fixtures, FIFOs, broken files) */
  readonly setup?: (dir: string) => void | Promise<void>;
  /** the expected exit status (a death by signal counts as 128 + the signal's number) */
  readonly exit: number;
  /**
   * the expected stderr: with stderrLines "one" (the default for a non-zero exit) stderr must be
   * exactly one line and match; with "any" the last non-empty line must match. No stack frames, ever.
   */
  readonly stderr: RegExp;
  readonly stderrLines?: "one" | "any";
  /** the expected stdout (default: not checked) */
  readonly stdout?: RegExp;
  /** close the reading end of stdout / stderr at once, as `| true` or `2>&-` in a shell would */
  readonly closeStdout?: boolean;
  readonly closeStderr?: boolean;
  /** send a signal once stderr matches `when` (a RegExp) or `when` ms after the start */
  readonly signal?: { readonly name: NodeJS.Signals; readonly when: RegExp | number };
  /** files that must have the same bytes (folders: the same tree) after the run; relative to the case folder */
  readonly unchanged?: readonly string[];
  /** files that must not exist after the run; relative to the case folder */
  readonly absent?: readonly string[];
  /** wall-clock bound for the child (default 30 s) */
  readonly timeoutMs?: number;
  /** measured peak RSS bound in MB (default 300 for refusals: exit codes other than 0, 1, 130, 143) */
  readonly maxRssMb?: number;
  /** hard memory bound (RLIMIT_DATA) in MB, so a runaway fails fast instead of swapping (default 2048) */
  readonly memoryLimitMb?: number;
  /** further assertions */
  readonly check?: (dir: string, r: CliResult) => void | Promise<void>;
}

export interface CliResult {
  /** exit status; 128 + n for a death by signal n; -1 when killed for running past the bound */
  readonly code: number;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** peak resident set size in MB (NaN when it could not be measured) */
  readonly peakRssMb: number;
  readonly ms: number;
  /** ms from the signal to the exit (-1: no signal sent) */
  readonly msAfterSignal: number;
  readonly timedOut: boolean;
}

/** Results of every case run in this process, for RELIABILITY.md-style summaries. */
export const measured: { name: string; exit: number; peakRssMb: number; ms: number }[] = [];

function walk(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

let built = false;
/** dist/ must hold the current src/: rebuild when any output is missing or older than its source. */
export function ensureBuilt(): void {
  if (built) return;
  const stale = walk(path.join(ROOT, "src"))
    .filter((f) => f.endsWith(".ts"))
    .some((src) => {
      const out = path.join(ROOT, "dist", path.relative(path.join(ROOT, "src"), src)).replace(/\.ts$/, ".js");
      return !fs.existsSync(out) || fs.statSync(out).mtimeMs < fs.statSync(src).mtimeMs;
    });
  if (stale) {
    try {
      execFileSync(
        process.execPath,
        [path.join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", path.join(ROOT, "tsconfig.json")],
        { stdio: "pipe" },
      );
    } catch (e) {
      // type errors still emit JavaScript; only a missing entry point is fatal
      if (!fs.existsSync(path.join(ROOT, "dist", "cli", "main.js"))) throw e;
    }
  }
  built = true;
}

const subst = (s: string, dir: string) => s.split("{dir}").join(dir);

export function runCli(c: CliCase, dir: string): Promise<CliResult> {
  const args = typeof c.args === "function" ? c.args(dir) : c.args.map((a) => subst(a, dir));
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  for (const [k, v] of Object.entries(c.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = subst(v, dir);
  }
  const timeFile = path.join(os.tmpdir(), `sd-harness-time-${process.pid}-${crypto.randomBytes(4).toString("hex")}`);
  let cmd = process.execPath;
  let argv = [c.bin?.(dir) ?? BIN, ...args];
  if (c.wrap) {
    const [w, ...wargs] = c.wrap(dir);
    argv = [...wargs, cmd, ...argv];
    cmd = w;
  }
  if (GNU_TIME) {
    argv = ["-f", "%M", "-o", timeFile, cmd, ...argv];
    cmd = GNU_TIME;
  }
  if (PRLIMIT) {
    argv = [`--data=${(c.memoryLimitMb ?? 2048) * 1024 * 1024}`, "--", cmd, ...argv];
    cmd = PRLIMIT;
  }
  const timeoutMs = c.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(cmd, argv, { cwd: dir, env, stdio: [c.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"], detached: true });
    let stdout = "";
    let stderr = "";
    let sentAt = 0;
    let timedOut = false;
    let polledHwm = NaN;
    const send = () => {
      if (sentAt || !c.signal) return;
      sentAt = Date.now();
      try {
        process.kill(nodePid(child.pid as number), c.signal.name);
      } catch {
        /* already gone */
      }
    };
    if (c.stdin !== undefined) child.stdin?.end(c.stdin);
    // spawned with pipes for both, so the streams exist
    const out = child.stdout!;
    const err = child.stderr!;
    if (c.closeStdout) out.destroy();
    else {
      out.setEncoding("utf8");
      out.on("data", (d: string) => {
        stdout += d;
      });
    }
    if (c.closeStderr) err.destroy();
    else {
      err.setEncoding("utf8");
      err.on("data", (d: string) => {
        stderr += d;
        if (c.signal && c.signal.when instanceof RegExp && c.signal.when.test(stderr)) send();
      });
    }
    const timers: NodeJS.Timeout[] = [];
    if (c.signal && typeof c.signal.when === "number") timers.push(setTimeout(send, c.signal.when));
    if (!GNU_TIME) {
      const poll = setInterval(() => {
        const v = hwmMb(child.pid as number);
        if (Number.isFinite(v)) polledHwm = Number.isFinite(polledHwm) ? Math.max(polledHwm, v) : v;
      }, 20);
      timers.push(poll);
    }
    timers.push(
      setTimeout(() => {
        timedOut = true;
        try {
          process.kill(-(child.pid as number), "SIGKILL");
        } catch {
          /* gone */
        }
      }, timeoutMs),
    );
    child.on("error", reject);
    child.on("close", (code, signal) => {
      for (const t of timers) clearTimeout(t);
      const ms = Date.now() - t0;
      let peakRssMb = polledHwm;
      if (GNU_TIME) {
        try {
          // GNU time writes "Command exited with non-zero status N" / "Command terminated by signal N" first
          const lines = fs.readFileSync(timeFile, "utf8").trim().split("\n");
          const sig = /terminated by signal (\d+)/.exec(lines[0]);
          peakRssMb = Number(lines[lines.length - 1]) / 1024;
          if (sig && code !== null && code < 128) code = 128 + Number(sig[1]);
        } catch {
          /* killed before time wrote it */
        }
        fs.rmSync(timeFile, { force: true });
      }
      const status = timedOut ? -1 : (code ?? 128 + (SIGNALS[signal as string] ?? 0));
      resolve({ code: status, signal, stdout, stderr, peakRssMb, ms, msAfterSignal: sentAt ? Date.now() - sentAt : -1, timedOut });
    });
  });
}

/** Snapshot of a file's bytes, or of a folder's tree (names and bytes). */
function snapshot(p: string): string {
  if (!fs.existsSync(p)) return "<absent>";
  const st = fs.lstatSync(p);
  if (st.isSymbolicLink()) return `link:${fs.readlinkSync(p)}`;
  if (st.isDirectory()) {
    return walk(p)
      .sort()
      .map((f) => `${path.relative(p, f)}=${crypto.createHash("sha256").update(fs.readFileSync(f)).digest("hex")}`)
      .join("\n");
  }
  if (!st.isFile()) return `special:${st.mode}`;
  return crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex");
}

const isRefusal = (code: number) => ![0, 1, 130, 143].includes(code);

/** Sets up, runs and checks one case; returns the result for further assertions. */
export async function expectCliCase(c: CliCase, parent: string = os.tmpdir()): Promise<CliResult> {
  ensureBuilt();
  const dir = fs.mkdtempSync(path.join(parent, "case-"));
  try {
    await c.setup?.(dir);
    const watched = (c.unchanged ?? []).map((f) => path.resolve(dir, f));
    const before = watched.map(snapshot);
    const r = await runCli(c, dir);
    measured.push({ name: c.name, exit: r.code, peakRssMb: r.peakRssMb, ms: r.ms });
    const context = `${c.name}: exit ${r.code}${r.signal ? ` (${r.signal})` : ""} in ${r.ms} ms, peak RSS ${r.peakRssMb.toFixed(0)} MB\nstderr:\n${r.stderr.slice(0, 2000)}`;
    if (r.timedOut) throw new Error(`${context}\nran past ${c.timeoutMs ?? 30_000} ms and was killed`);
    expect({ context, exit: r.code }).toEqual({ context, exit: c.exit });
    if (!c.closeStderr) {
      expect(r.stderr).not.toMatch(/^\s+at /m);
      const lines = r.stderr.split("\n").filter((l) => l.trim().length > 0);
      const mode = c.stderrLines ?? (c.exit !== 0 ? "one" : "any");
      if (mode === "one") expect({ context, lines: lines.length }).toEqual({ context, lines: 1 });
      expect(lines[lines.length - 1] ?? "").toMatch(c.stderr);
    }
    if (c.stdout) expect(r.stdout).toMatch(c.stdout);
    const maxRss = c.maxRssMb ?? (isRefusal(c.exit) ? 300 : Infinity);
    if (Number.isFinite(maxRss) && Number.isFinite(r.peakRssMb)) {
      expect({ context, underRssBound: r.peakRssMb < maxRss }).toEqual({ context, underRssBound: true });
    }
    watched.forEach((f, i) => expect({ file: f, bytes: snapshot(f) }).toEqual({ file: f, bytes: before[i] }));
    for (const f of c.absent ?? []) expect({ file: f, exists: fs.existsSync(path.resolve(dir, f)) }).toEqual({ file: f, exists: false });
    await c.check?.(dir, r);
    return r;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** One jest test per case (names must be unique); each case's timeout is its bound plus setup time. */
export function testCliCases(cases: readonly CliCase[], parent?: () => string): void {
  beforeAll(() => ensureBuilt(), 180_000);
  const names = new Set<string>();
  for (const c of cases) {
    if (names.has(c.name)) throw new Error(`duplicate CLI case name ${JSON.stringify(c.name)}`);
    names.add(c.name);
    test(
      c.name,
      async () => {
        await expectCliCase(c, parent?.());
      },
      (c.timeoutMs ?? 30_000) + 60_000,
    );
  }
}
