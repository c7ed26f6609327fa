/**
 * The package itself: where it is installed (bundled data such as conformance/tolerances.json
 * is found from here) and its version, for reports. Below every room, so the library and the CLI
 * both read it.
 */
import * as fs from "node:fs";
import * as path from "node:path";

/** The package root (dist/util/ or src/util/ -> ../..). */
export const PACKAGE_ROOT = path.resolve(__dirname, "..", "..");
export const VERSION: string = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, "package.json"), "utf8")).version;
