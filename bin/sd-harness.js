#!/usr/bin/env node
"use strict";
// Thin shim: all behaviour lives in main(argv) so it can be tested in-process.
let cli;
try {
  cli = require("../dist/cli/main.js");
} catch (e) {
  if (e && e.code === "MODULE_NOT_FOUND" && /dist[\\/]cli[\\/]main/.test(String(e.message))) {
    process.stderr.write("sd-harness: error: not built yet; run `npm run build` in the sd-harness checkout first\n");
    process.exit(2);
  }
  throw e;
}
cli.main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
