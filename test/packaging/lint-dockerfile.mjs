#!/usr/bin/env node
// Lints Dockerfiles with dockerfile-utils (the linter behind the Docker language server):
// syntax, instruction arguments, stage names and references, JSON-form ENTRYPOINT/CMD, etc.
//
//   node lint-dockerfile.mjs FILE...
//
// Prints one line per diagnostic (FILE:LINE:COL: severity: message). Any error or warning fails.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { validate } = require("dockerfile-utils");

const SEVERITY = { 1: "error", 2: "warning", 3: "information", 4: "hint" };

let failed = false;
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: lint-dockerfile.mjs FILE...");
  process.exit(2);
}
for (const file of files) {
  const diagnostics = validate(readFileSync(file, "utf8"));
  for (const d of diagnostics) {
    const severity = SEVERITY[d.severity] || String(d.severity);
    if (d.severity <= 2) failed = true;
    const { line, character } = d.range.start;
    console.log(`${file}:${line + 1}:${character + 1}: ${severity}: ${d.message}`);
  }
  if (diagnostics.length === 0) console.log(`${file}: no problems`);
}
process.exitCode = failed ? 1 : 0;
