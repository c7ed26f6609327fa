/**
 * A report folder being written (by a conformance run or `report merge`). Nothing appears under
 * its final name until the run is done: the folder is created only when the first file is about
 * to be written, image assets go to a hidden staging folder inside it and are moved into assets/
 * when the run commits, and a run that fails or is interrupted removes what it staged and the
 * folders it created (when they are empty), so no empty reports/<time>/ is left behind.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { HarnessError, ExitCode, oneLine } from "../../errors";
import { trackPendingDirectory, untrackPendingDirectory } from "../../util/atomic";
import { REPORTERS } from "./reporters";

/**
 * The files a report folder holds; `report merge` refuses to replace them without --overwrite.
 * Taken from the reporter registry (every format with a file inside the folder), so a new format
 * is protected the day it is added (results.csv was not).
 */
const REPORT_FILES: readonly string[] = REPORTERS.flatMap((r) => (typeof r.file === "string" ? [r.file] : []));

/**
 * The lock file a run holds in its report folder from the check to its last file, so that a second
 * run into the same folder is refused instead of mixing its files with the first one's. It is
 * created with O_EXCL and holds {pid, start, host, started, command}; a lock whose process is gone
 * (or whose pid now belongs to a process started at another time) is stale and taken over.
 */
const LOCK_FILE = ".sd-harness.lock";

interface LockInfo {
  readonly pid: number;
  readonly start: string | null;
  readonly host: string;
  readonly started: string;
  readonly command: string;
  /** unreadable but made in the last few seconds: a run between its O_EXCL create and its write */
  readonly fresh?: boolean;
}

/** How long an empty or unreadable lock file counts as a run still writing it. */
const LOCK_WRITE_GRACE_MS = 5_000;

/** A process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid, it names one process. */
function processStart(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // the command name (field 2) may hold spaces and parentheses: count fields after its closing one
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether the process that wrote `info` still runs; a lock from another host counts as live. */
function lockHolderAlive(info: LockInfo): boolean {
  if (info.fresh) return true;
  if (info.host !== os.hostname()) return true;
  if (!Number.isInteger(info.pid) || info.pid <= 0) return false;
  try {
    process.kill(info.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  const now = processStart(info.pid);
  return info.start === null || now === null || now === info.start;
}

function readLock(file: string): LockInfo | null {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch {
    return null;
  }
  // not a lock file we could have written (or half-written): nobody holds it, unless it is brand new
  const unreadable: LockInfo = {
    pid: 0,
    start: null,
    host: os.hostname(),
    started: "?",
    command: "?",
    fresh: st.isFile() && Date.now() - st.mtimeMs < LOCK_WRITE_GRACE_MS,
  };
  if (!st.isFile() || st.size > 4096) return unreadable;
  try {
    const v = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<LockInfo>;
    if (!Number.isInteger(v.pid)) return unreadable;
    return {
      pid: Number(v.pid),
      start: typeof v.start === "string" ? v.start : null,
      host: String(v.host ?? os.hostname()),
      started: String(v.started ?? "?"),
      command: String(v.command ?? "?"),
    };
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ENOENT" ? null : unreadable;
  }
}

/** Locks still held by this process, removed when it exits however it exits (a second signal calls process.exit). */
const heldLocks = new Set<string>();
let exitHookInstalled = false;
function releaseAllAtExit(): void {
  for (const f of heldLocks) {
    try {
      fs.unlinkSync(f);
    } catch {
      /* gone */
    }
  }
  heldLocks.clear();
}

export interface OutDirPolicy {
  /** the flag named in messages */
  readonly flag: string;
  readonly overwrite: boolean;
  /** refuse an existing folder that holds anything (conformance) or only one that holds report files (merge) */
  readonly refuse: "non-empty" | "report-files";
  /**
   * take the folder's lock now (creating the folder): another run into it is refused with exit 75
   * until unlock(), commit or abandon; what the command line was, for the refusal's message
   */
  readonly lock?: { readonly command: string };
}

export class ReportFolder {
  private created: string | undefined;
  private begun = false;
  private staging: string | null = null;
  /** the folders begin() created, outermost first */
  private made: string[] = [];
  /** the lock file this run holds (null: none) */
  private lockFile: string | null = null;

  private constructor(readonly dir: string) {}

  /** Checks the destination without creating anything: a file in the way or reports to keep are one-line errors (exit 3). */
  static check(dir: string, policy: OutDirPolicy): ReportFolder {
    let st: fs.Stats | null = null;
    try {
      st = fs.statSync(dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOTDIR") throw new HarnessError(`${policy.flag} ${dir}: a parent of it is a file, not a folder`, ExitCode.output);
      if (code !== "ENOENT") throw new HarnessError(`${policy.flag} ${dir}: cannot use (${code})`, ExitCode.output);
    }
    if (st && !st.isDirectory()) throw new HarnessError(`${policy.flag} ${dir}: exists and is not a folder`, ExitCode.output);
    // another run writing here is the first thing to say: its files would look like "not empty"
    if (st) ReportFolder.refuseIfLocked(dir, policy.flag);
    if (st && !policy.overwrite) {
      let entries: string[];
      try {
        // the lock file of a run that is gone is no content
        entries = fs.readdirSync(dir).filter((f) => f !== LOCK_FILE);
      } catch (e) {
        throw new HarnessError(`${policy.flag} ${dir}: cannot read (${(e as NodeJS.ErrnoException).code})`, ExitCode.output);
      }
      if (policy.refuse === "non-empty" && entries.length > 0) {
        throw new HarnessError(`${policy.flag} ${dir}: exists and is not empty (pass --overwrite to replace its reports)`, ExitCode.output);
      }
      const kept = [...REPORT_FILES, "assets"].filter((f) => entries.includes(f));
      if (policy.refuse === "report-files" && kept.length > 0) {
        throw new HarnessError(
          `${policy.flag} ${dir}: already holds ${kept.join(", ")} (pass --overwrite to replace them)`,
          ExitCode.output,
        );
      }
    }
    const folder = new ReportFolder(dir);
    if (policy.lock) folder.takeLock(policy.flag, policy.lock.command);
    return folder;
  }

  private static refuseIfLocked(dir: string, flag: string): void {
    const info = readLock(path.join(dir, LOCK_FILE));
    if (info && lockHolderAlive(info)) {
      if (info.pid === 0)
        throw new HarnessError(
          `${flag} ${dir}: in use by another sd-harness run (its ${LOCK_FILE} was created just now); wait for it to end or choose another folder`,
          ExitCode.busy,
        );
      throw new HarnessError(
        `${flag} ${dir}: in use by another sd-harness run (pid ${info.pid}${info.host !== os.hostname() ? ` on ${oneLine(info.host, 60)}` : ""}, started ${oneLine(info.started, 40)}: ${oneLine(info.command, 120)}); wait for it to end or choose another folder`,
        ExitCode.busy,
      );
    }
  }

  /** Creates the folder (removed again if the run leaves it empty) and the lock file in it, with O_EXCL; a stale lock is taken over. */
  private takeLock(flag: string, command: string): void {
    this.makeFolder();
    const file = path.join(this.dir, LOCK_FILE);
    const info: LockInfo = {
      pid: process.pid,
      start: processStart(process.pid),
      host: os.hostname(),
      started: new Date().toISOString(),
      command,
    };
    for (let attempt = 0; ; attempt++) {
      try {
        const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o644);
        try {
          fs.writeSync(fd, `${JSON.stringify(info)}\n`);
        } finally {
          fs.closeSync(fd);
        }
        break;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (e instanceof HarnessError) throw e;
        if (code !== "EEXIST" || attempt >= 3) {
          this.abandon();
          throw new HarnessError(`${flag} ${this.dir}: cannot create the lock file ${LOCK_FILE} (${code})`, ExitCode.output);
        }
        const held = readLock(file);
        if (held && lockHolderAlive(held)) {
          this.abandon();
          ReportFolder.refuseIfLocked(this.dir, flag);
        }
        // stale: moved aside under a name of our own, then checked to be the stale one we read (two
        // runs taking over at once: the later one must not remove the lock the earlier just made)
        const aside = `${file}.stale-${process.pid}`;
        try {
          fs.renameSync(file, aside);
        } catch {
          continue; // already moved by someone else: try again
        }
        const moved = readLock(aside);
        if (moved && held && moved.pid === held.pid && moved.start === held.start && moved.started === held.started) {
          fs.rmSync(aside, { force: true });
        } else {
          // a live lock made in between: put it back (link fails if yet another one exists) and look again
          try {
            fs.linkSync(aside, file);
          } catch {
            /* another lock is in place */
          }
          fs.rmSync(aside, { force: true });
        }
      }
    }
    this.lockFile = file;
    heldLocks.add(file);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on("exit", releaseAllAtExit);
    }
  }

  /** Gives up the lock (when the run's files are written, or it failed); the folder stays, as commit leaves it. */
  unlock(): void {
    if (!this.lockFile) return;
    try {
      fs.unlinkSync(this.lockFile);
    } catch {
      /* gone */
    }
    heldLocks.delete(this.lockFile);
    this.lockFile = null;
  }

  /** Creates the folder if it is not there, remembering the folders it made so a failed run can remove them when empty. */
  private makeFolder(): void {
    let created: string | undefined;
    try {
      created = fs.mkdirSync(this.dir, { recursive: true });
    } catch (e) {
      throw new HarnessError(`${this.dir}: cannot create the report folder (${(e as NodeJS.ErrnoException).code})`, ExitCode.output);
    }
    if (created) {
      this.created = created;
      // every folder mkdir made, outermost first, so an interrupt removes them deepest first when empty
      for (let d = path.resolve(this.dir); ; d = path.dirname(d)) {
        this.made.unshift(d);
        if (d === path.resolve(created) || path.dirname(d) === d) break;
      }
      for (const d of this.made) trackPendingDirectory(d, "ifEmpty");
    }
  }

  /** Creates the folder (and a staging folder for assets) when the first file is ready. */
  begin(): void {
    if (this.begun) return;
    this.makeFolder();
    this.begun = true;
    this.staging = path.join(this.dir, `.assets-partial-${process.pid}`);
    try {
      fs.mkdirSync(this.staging);
    } catch (e) {
      this.abandon();
      throw new HarnessError(`${this.dir}: cannot write (${(e as NodeJS.ErrnoException).code})`, ExitCode.output);
    }
    trackPendingDirectory(this.staging, "tree");
  }

  /** Where an asset folder `rel` (assets/<label>) is staged; created on demand. */
  stage(rel: string): string {
    this.begin();
    const parts = rel.split("/");
    if (parts[0] !== "assets" || parts.length !== 2) throw new Error(`stage: ${rel} is not assets/<name>`);
    const d = path.join(this.staging!, parts[1]);
    fs.mkdirSync(d, { recursive: true });
    return d;
  }

  /** Moves staged assets to their final names (replacing an older run's folder of the same name). */
  commit(): void {
    this.begin();
    const staging = this.staging!;
    const assets = path.join(this.dir, "assets");
    const names = fs.readdirSync(staging);
    if (names.length > 0) fs.mkdirSync(assets, { recursive: true });
    for (const name of names) {
      const dest = path.join(assets, name);
      fs.rmSync(dest, { recursive: true, force: true });
      fs.renameSync(path.join(staging, name), dest);
    }
    fs.rmSync(staging, { recursive: true, force: true });
    untrackPendingDirectory(staging);
    this.forget();
  }

  /** The reports are under their final names: the folder is the user's now. */
  forget(): void {
    for (const d of this.made) untrackPendingDirectory(d);
    this.made = [];
  }

  /** After a failure or an interrupt: remove what was staged, the lock, and the folders this run created, if empty. */
  abandon(): void {
    this.unlock();
    if (this.staging) {
      fs.rmSync(this.staging, { recursive: true, force: true });
      untrackPendingDirectory(this.staging);
      this.staging = null;
    }
    const made = this.made;
    this.forget();
    for (const d of [...made].reverse()) {
      try {
        fs.rmdirSync(d);
      } catch {
        break; // not empty (or gone): leave it and its parents
      }
    }
    this.begun = false;
  }
}
