/**
 * Numbers are typed as numbers in every command's help (they showed as [string]), and a bad number
 * is still quoted as it was typed.
 */
import { execFileSync } from "node:child_process";
import { ExitCode } from "../src/errors";
import { cli } from "./helpers/cli";
import { BIN } from "./helpers/cli-case";

const NUMERIC: Record<string, string[]> = {
  generate: ["steps", "guidance", "width", "height", "batch", "strength", "clip-skip", "eta", "threads"],
  conformance: ["threads", "baseline-factor"],
  sensitivity: ["budget", "seed", "samples", "threads"],
};

/** yargs' help: the flag's entry runs from its line to the next flag's, the type tag at its end. */
function entry(help: string, flag: string): string {
  const lines = help.split("\n");
  const start = lines.findIndex((l) => new RegExp(`^\\s+--${flag}\\s`).test(l));
  if (start < 0) throw new Error(`--${flag} is not in the help`);
  let end = start + 1;
  while (end < lines.length && !/^\s+--?\w/.test(lines[end]) && lines[end].trim() !== "") end++;
  return lines.slice(start, end).join(" ");
}

describe.each(Object.entries(NUMERIC))("%s --help", (command, flags) => {
  let help = "";
  beforeAll(() => {
    // the built CLI as a user runs it (yargs prints help to the process's stdout); wide, unwrapped
    help = execFileSync(process.execPath, [BIN, command, "--help"], { encoding: "utf8", env: { ...process.env, COLUMNS: "200" } });
  });
  test.each(flags)("--%s is a [number]", (flag) => {
    expect(entry(help, flag)).toMatch(/\[number\]/);
  });
});

test.each([
  [["generate", "--prompt", "x", "--steps", "-2"], /--steps: "-2" is not an integer/],
  [["generate", "--prompt", "x", "--guidance=abc"], /--guidance: "abc" is not a number/],
  [["sensitivity", "--budget", "1e99"], /--budget: "1e99" is not a number/],
])("%j is refused quoting the value as typed", async (argv, message) => {
  const r = await cli(argv);
  expect(r.code).toBe(ExitCode.usage);
  expect(r.err).toMatch(message);
});
