import * as fs from "node:fs";
import * as path from "node:path";

/** The installed version of an npm package (its package.json), without loading the package. */
export function packageVersion(name: string): string {
  let dir: string;
  try {
    // a package whose `exports` leaves out ./package.json (onnxruntime-web) is found from its entry point
    dir = path.dirname(require.resolve(name));
  } catch {
    return "unknown";
  }
  for (;;) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
      if (pkg.name === name) return String(pkg.version);
    } catch {
      // no package.json here: look further up
    }
    const up = path.dirname(dir);
    if (up === dir) return "unknown";
    dir = up;
  }
}
