/**
 * The Python in scripts/ and ports/ passes ruff (ruff.toml): its lint and its formatting. Python-gated
 * like the other Python checks: CI has no .venv, so this is skipped there with a notice.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { ROOT } from "./helpers/fixtures";
import { tempDir } from "./helpers/tmp";

const RUFF = path.join(ROOT, ".venv", "bin", "ruff");
const CONFIG = path.join(ROOT, "ruff.toml");

/** Runs ruff in `cwd` with the project's config and no cache (nothing written beside the sources). */
function ruff(args: string[], cwd = ROOT): { status: number | null; output: string } {
  const r = spawnSync(RUFF, [...args, "--no-cache", "--config", CONFIG], { cwd, encoding: "utf8" });
  return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

describe("Python lint and format (ruff)", () => {
  if (!fs.existsSync(RUFF)) {
    beforeAll(() => console.log(`python-lint: ${RUFF} not found (scripts/setup.sh installs it); the Python is not linted`));
    test.skip("python-lint: no .venv/bin/ruff; skipped", () => {});
    return;
  }
  const tmp = tempDir("sd-harness-ruff-");

  test("ruff check passes", () => {
    const r = ruff(["check", "--output-format", "concise", "."]);
    expect(r.output).toContain("All checks passed");
    expect(r.status).toBe(0);
  });

  test("ruff format --check passes", () => {
    const r = ruff(["format", "--check", "."]);
    expect(r.output).not.toContain("would be reformatted");
    expect(r.status).toBe(0);
  });

  test("both fail on a file with an unused import and unformatted code", () => {
    fs.writeFileSync(path.join(tmp(), "bad.py"), "import os\nx = {'a':1}\n");
    const lint = ruff(["check", "--output-format", "concise", "bad.py"], tmp());
    expect(lint.output).toContain("F401");
    expect(lint.status).toBe(1);
    const format = ruff(["format", "--check", "bad.py"], tmp());
    expect(format.output).toContain("bad.py");
    expect(format.status).toBe(1);
  });
});
