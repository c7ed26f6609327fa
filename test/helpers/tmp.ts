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
