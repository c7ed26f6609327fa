#!/usr/bin/env node
"use strict";
// Thin shim: all behaviour lives in main(argv) so it can be tested in-process.
const path = require("node:path");

/**
 * What a failed require() was missing, as one line: the compiled CLI itself (a checkout that was
 * never built), or a dependency (node_modules incomplete: named, with how to install it). Whatever
 * this cannot read is left to the caller.
 */
function missingModuleLine(e) {
  if (!e || e.code !== "MODULE_NOT_FOUND") return null;
  const m = /Cannot find module '([^']+)'/.exec(String(e.message));
  if (!m) return null;
  const spec = m[1];
  if (spec.startsWith(".") || path.isAbsolute(spec)) {
    if (/dist[\\/]cli[\\/]main/.test(spec)) return "not built yet; run `npm run build` in the sd-harness checkout first";
    // a module of the build itself missing: a build interrupted or from another version
    const from = (e.requireStack || [])[0];
    if (from && /[\\/]dist[\\/]/.test(from))
      return `the build is incomplete (${spec} is missing, required by ${path.basename(from)}); run \`npm run build\` in the sd-harness checkout`;
    return null;
  }
  const parts = spec.split("/");
  const pkg = spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
  return `the dependency ${pkg} is not installed (node_modules/${pkg} is missing); run \`npm ci\` in the sd-harness checkout, or reinstall sd-harness`;
}

let cli;
try {
  cli = require("../dist/cli/main.js");
} catch (e) {
  const line = missingModuleLine(e);
  if (line) {
    process.stderr.write(`sd-harness: error: ${line}\n`);
    process.exit(2);
  }
  throw e;
}
cli.main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
