import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

/** A temporary folder for one test file: made before its tests run, removed with everything in it after. */
export function tempDir(prefix: string): () => string {
  let dir = "";
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  });
  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });
  return () => dir;
}

/**
 * A temporary folder for one test file (made at once) with a `tmpdir` folder inside it that is
 * TMPDIR while the file's tests run (os.tmpdir() reads it): what the code under test leaves in its
 * temporary folders can be seen, and is this file's own. Restored and removed after the tests.
 */
export function withOwnTmpdir(prefix: string): { readonly tmp: string; readonly portTmp: string } {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const portTmp = path.join(tmp, "tmpdir");
  const saved = process.env.TMPDIR;
  beforeAll(() => {
    fs.mkdirSync(portTmp);
    process.env.TMPDIR = portTmp;
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  return { tmp, portTmp };
}
