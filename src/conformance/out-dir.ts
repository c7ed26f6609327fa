/**
 * A report folder being written (by a conformance run or `report merge`). Nothing appears under
 * its final name until the run is done: the folder is created only when the first file is about
 * to be written, image assets go to a hidden staging folder inside it and are moved into assets/
 * when the run commits, and a run that fails or is interrupted removes what it staged and the
 * folders it created (when they are empty), so no empty reports/<time>/ is left behind.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { HarnessError, ExitCode } from "../errors";
import { trackPendingDirectory, untrackPendingDirectory } from "../util/atomic";

/** The files a report folder holds; `report merge` refuses to replace them without --overwrite. */
export const REPORT_FILES = ["report.json", "summary.md", "junit.xml", "report.html"] as const;

export interface OutDirPolicy {
  /** the flag named in messages */
  readonly flag: string;
  readonly overwrite: boolean;
  /** refuse an existing folder that holds anything (conformance) or only one that holds report files (merge) */
  readonly refuse: "non-empty" | "report-files";
}

export class ReportFolder {
  private created: string | undefined;
  private begun = false;
  private staging: string | null = null;
  /** the folders begin() created, outermost first */
  private made: string[] = [];

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
    if (st && !policy.overwrite) {
      let entries: string[];
      try {
        entries = fs.readdirSync(dir);
      } catch (e) {
        throw new HarnessError(`${policy.flag} ${dir}: cannot read (${(e as NodeJS.ErrnoException).code})`, ExitCode.output);
      }
      if (policy.refuse === "non-empty" && entries.length > 0) {
        throw new HarnessError(`${policy.flag} ${dir}: exists and is not empty (pass --overwrite to replace its reports)`, ExitCode.output);
      }
      const kept = [...REPORT_FILES, "assets"].filter((f) => entries.includes(f));
      if (policy.refuse === "report-files" && kept.length > 0) {
        throw new HarnessError(`${policy.flag} ${dir}: already holds ${kept.join(", ")} (pass --overwrite to replace them)`, ExitCode.output);
      }
    }
    return new ReportFolder(dir);
  }

  /** Creates the folder (and a staging folder for assets) when the first file is ready. */
  begin(): void {
    if (this.begun) return;
    try {
      this.created = fs.mkdirSync(this.dir, { recursive: true });
    } catch (e) {
      throw new HarnessError(`${this.dir}: cannot create the report folder (${(e as NodeJS.ErrnoException).code})`, ExitCode.output);
    }
    this.begun = true;
    if (this.created) {
      // every folder mkdir made, outermost first, so an interrupt removes them deepest first when empty
      for (let d = path.resolve(this.dir); ; d = path.dirname(d)) {
        this.made.unshift(d);
        if (d === path.resolve(this.created) || path.dirname(d) === d) break;
      }
      for (const d of this.made) trackPendingDirectory(d, "ifEmpty");
    }
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

  /** After a failure or an interrupt: remove what was staged and the folders this run created, if empty. */
  abandon(): void {
    if (!this.begun) return;
    if (this.staging) {
      fs.rmSync(this.staging, { recursive: true, force: true });
      untrackPendingDirectory(this.staging);
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
