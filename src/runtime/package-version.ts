import * as fs from "node:fs";

/** The installed version of an npm package (its package.json), without loading the package. */
export function packageVersion(name: string): string {
  try {
    return String(JSON.parse(fs.readFileSync(require.resolve(`${name}/package.json`), "utf8")).version);
  } catch {
    return "unknown";
  }
}
