#!/usr/bin/env node
"use strict";
// Thin shim: all behaviour lives in main(argv) so it can be tested in-process.
const { main } = require("../dist/cli/main.js");
main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
