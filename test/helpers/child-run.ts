/**
 * Any program (the CLI, a Python script) as a bounded child process, for tests that must act while
 * it runs (send signals when a file appears): its own process group, killed whole past a wall-clock
 * bound; RLIMIT_DATA via prlimit; peak RSS from GNU time's %M (else VmHWM polled from /proc).
 * test/helpers/cli-case.ts is the table-driven form for the CLI; this is the hand-driven one.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { spawn } from "node:child_process";

export const GNU_TIME = fs.existsSync("/usr/bin/time") ? "/usr/bin/time" : null;
export const PRLIMIT = ["/usr/bin/prlimit", "/bin/prlimit"].find((p) => fs.existsSync(p)) ?? null;
export const SIGNALS = os.constants.signals as Record<string, number>;

export interface ChildRun {
  readonly cmd: string;
  readonly args: readonly string[];
  readonly cwd?: string;
  /** added to (undefined: removed from) this process's environment */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** the process group is killed (SIGKILL) past this (default 60 s) */
  readonly timeoutMs?: number;
  /** RLIMIT_DATA in MB (default 4096) */
  readonly memoryLimitMb?: number;
  /** runs once the child started; `signal` goes to the program itself (not to time / prlimit) */
  readonly during?: (child: { signal: (s: NodeJS.Signals) => void; stderr: () => string; exited: () => boolean }) => Promise<void> | void;
}

export interface ChildResult {
  /** exit status; 128 + n for a death by signal n; -1 when killed past the bound */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
  readonly peakRssMb: number;
  readonly timedOut: boolean;
}

/** The program under prlimit (which execs) and time (which forks): time's only child. */
export function programPid(outer: number): number {
  if (!GNU_TIME) return outer;
  try {
    const kids = fs.readFileSync(`/proc/${outer}/task/${outer}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
    return kids[0] ?? outer;
  } catch {
    return outer;
  }
}

export function hwmMb(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

export function runChild(r: ChildRun): Promise<ChildResult> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  for (const [k, v] of Object.entries(r.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const timeFile = path.join(os.tmpdir(), `sd-harness-time-${process.pid}-${crypto.randomBytes(4).toString("hex")}`);
  let cmd = r.cmd;
  let argv = [...r.args];
  if (GNU_TIME) {
    argv = ["-f", "%M", "-o", timeFile, cmd, ...argv];
    cmd = GNU_TIME;
  }
  if (PRLIMIT) {
    argv = [`--data=${(r.memoryLimitMb ?? 4096) * 1024 * 1024}`, "--", cmd, ...argv];
    cmd = PRLIMIT;
  }
  const timeoutMs = r.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(cmd, argv, { cwd: r.cwd, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let stdout = "";
    let stderr = "";
    let exited = false;
    let timedOut = false;
    let polled = NaN;
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (d: string) => {
      stderr += d;
    });
    const kill = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-(child.pid as number), "SIGKILL");
      } catch {
        /* gone */
      }
    }, timeoutMs);
    const poll = GNU_TIME
      ? null
      : setInterval(() => {
          const v = hwmMb(child.pid as number);
          if (Number.isFinite(v)) polled = Number.isFinite(polled) ? Math.max(polled, v) : v;
        }, 20);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      exited = true;
      clearTimeout(kill);
      if (poll) clearInterval(poll);
      // nothing of the group may outlive the test
      try {
        process.kill(-(child.pid as number), "SIGKILL");
      } catch {
        /* gone */
      }
      let peakRssMb = polled;
      let status = code ?? 128 + (SIGNALS[signal as string] ?? 0);
      if (GNU_TIME) {
        try {
          const lines = fs.readFileSync(timeFile, "utf8").trim().split("\n");
          const sig = /terminated by signal (\d+)/.exec(lines[0]);
          peakRssMb = Number(lines[lines.length - 1]) / 1024;
          if (sig && status < 128) status = 128 + Number(sig[1]);
        } catch {
          /* killed before time wrote it */
        }
        fs.rmSync(timeFile, { force: true });
      }
      resolve({ code: timedOut ? -1 : status, stdout, stderr, ms: Date.now() - t0, peakRssMb, timedOut });
    });
    if (r.during) {
      const handle = {
        signal: (s: NodeJS.Signals) => {
          if (exited) return;
          try {
            process.kill(programPid(child.pid as number), s);
          } catch {
            /* gone */
          }
        },
        stderr: () => stderr,
        exited: () => exited,
      };
      Promise.resolve(r.during(handle)).catch((e) => {
        try {
          process.kill(-(child.pid as number), "SIGKILL");
        } catch {
          /* gone */
        }
        reject(e);
      });
    }
  });
}

/** Resolves once `test` holds (polled every `everyMs`), or false when the child exited / `limitMs` passed. */
export async function waitFor(test: () => boolean, exited: () => boolean, limitMs: number, everyMs = 2): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < limitMs) {
    if (test()) return true;
    if (exited()) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return false;
}

/** Every path under `dir` (folders included), relative; [] when absent. A folder removed while it is read counts as empty. */
export function listTree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const out: string[] = [];
  const entries = (d: string): fs.Dirent[] => {
    try {
      return fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return [];
    }
  };
  const walk = (d: string) => {
    for (const e of entries(d)) {
      const p = path.join(d, e.name);
      out.push(path.relative(dir, p));
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.sort();
}
