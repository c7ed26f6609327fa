/**
 * Writes that never leave a half-written file under the final name: data goes to a temporary file
 * in the same directory (so the rename is atomic on one filesystem), which is renamed into place.
 * Temporaries still open when the process is interrupted are removed by the CLI's signal handler.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { HarnessError, ExitCode } from "../errors";

const pending = new Set<string>();

/**
 * Folders a run is filling that must not outlive an interrupt: "tree" folders (staged assets) are
 * removed with their contents, "ifEmpty" folders (a report folder the run created) only when empty.
 */
const pendingDirs = new Map<string, "tree" | "ifEmpty">();

/** A temporary file made outside writeFileAtomic (a model copy beside its weights) that an interrupt must remove. */
export function trackPendingFile(file: string): void {
  pending.add(file);
}

export function untrackPendingFile(file: string): void {
  pending.delete(file);
}

export function trackPendingDirectory(dir: string, mode: "tree" | "ifEmpty"): void {
  pendingDirs.set(dir, mode);
}

export function untrackPendingDirectory(dir: string): void {
  pendingDirs.delete(dir);
}

export function removePendingTemporaries(): void {
  for (const f of pending) {
    try {
      fs.unlinkSync(f);
    } catch {
      /* already gone */
    }
  }
  pending.clear();
  // newest first: staged contents go before the folder that holds them
  for (const [dir, mode] of [...pendingDirs].reverse()) {
    try {
      if (mode === "tree") fs.rmSync(dir, { recursive: true, force: true });
      else fs.rmdirSync(dir);
    } catch {
      /* not empty, or already gone */
    }
  }
  pendingDirs.clear();
}

export interface WriteOptions {
  /** refuse to replace an existing file (users' files are never overwritten silently) */
  readonly noClobber?: boolean;
}

export function writeFileAtomic(file: string, data: string | Uint8Array, options: WriteOptions = {}): void {
  const dir = path.dirname(path.resolve(file));
  if (!fs.existsSync(dir)) throw new HarnessError(`${file}: directory ${dir} does not exist`, ExitCode.output);
  if (options.noClobber && fs.existsSync(file)) {
    throw new HarnessError(`${file}: already exists (pass --overwrite to replace it)`, ExitCode.output);
  }
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  pending.add(tmp);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* never created */
    }
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new HarnessError(`${file}: cannot write (${code})`, ExitCode.output, { cause: e });
  } finally {
    pending.delete(tmp);
  }
}
