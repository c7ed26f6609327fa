/**
 * scripts/quantize.py and scripts/optimize.py as child processes (bounded in time and memory, the
 * process group killed past the bound, peak RSS measured; issue "Reliability, third round"): DST is
 * written as a fresh sibling folder and renamed at the end, so SIGINT / SIGTERM mid-run and a
 * model.onnx that is not ONNX leave neither DST nor the partial folder, with one line and exit
 * 130 / 143 / 2 (no traceback); DST inside SRC, SRC inside DST, and an existing DST whose
 * model.onnx links into SRC are refused in one line and SRC is left as it was.
 *
 * They need the project's Python (.venv, scripts/setup.sh); CI has none, so they are skipped there
 * with a notice.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { ROOT, TINY } from "./helpers/fixtures";
import { runChild, waitFor, listTree, ChildResult } from "./helpers/child-run";

const PYTHON = path.join(ROOT, ".venv", "bin", "python");
const QUANTIZE = path.join(ROOT, "scripts", "quantize.py");
const OPTIMIZE = path.join(ROOT, "scripts", "optimize.py");
const available = fs.existsSync(PYTHON);

let tmp = "";
const rows: string[] = [];
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-scripts-output-"));
});
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (rows.length) console.log(`measured (case | exit | peak RSS | time):\n${rows.join("\n")}`);
});

function treeHash(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of listTree(dir)) {
    const p = path.join(dir, rel);
    const st = fs.lstatSync(p);
    if (st.isSymbolicLink()) out[rel] = `link:${fs.readlinkSync(p)}`;
    else if (st.isFile()) out[rel] = crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex");
  }
  return out;
}

/** A private copy of the tiny model in a fresh folder: { dir, src }. */
function setup(name: string): { dir: string; src: string } {
  const dir = fs.mkdtempSync(path.join(tmp, `${name}-`));
  const src = path.join(dir, "src");
  fs.cpSync(TINY, src, { recursive: true });
  return { dir, src };
}

async function script(
  name: string,
  file: string,
  args: string[],
  opts: { signal?: { name: NodeJS.Signals; when: () => boolean } } = {},
): Promise<ChildResult & { signalled: boolean }> {
  let signalled = false;
  const r = await runChild({
    cmd: PYTHON,
    args: [file, ...args],
    cwd: tmp,
    timeoutMs: 120_000,
    memoryLimitMb: 4096,
    env: { PYTHONDONTWRITEBYTECODE: "1" },
    during: opts.signal
      ? async (child) => {
          if (await waitFor(opts.signal!.when, child.exited, 110_000, 5)) {
            signalled = true;
            child.signal(opts.signal!.name);
          }
        }
      : undefined,
  });
  rows.push(`| ${name} | ${r.code} | ${r.peakRssMb.toFixed(0)} MB | ${r.ms} ms |`);
  return { ...r, signalled };
}

/** stderr's last line matches, no traceback anywhere, and (refusals) it is the only line. */
function expectLine(r: ChildResult, line: RegExp, only = true): void {
  expect(r.timedOut).toBe(false);
  expect(r.stderr).not.toMatch(/Traceback|^\s+File "/m);
  const lines = r.stderr.split("\n").filter((l) => l.trim());
  if (only) expect(lines).toHaveLength(1);
  expect(lines[lines.length - 1]).toMatch(line);
}

/** Nothing in `dir` but the names given: no DST, no `.DST.partial-*`. */
function onlyEntries(dir: string, names: string[]): void {
  expect(fs.readdirSync(dir).sort()).toEqual([...names].sort());
}

const partialHas = (dir: string, dst: string, file: string) => () =>
  fs.readdirSync(dir).some((n) => n.startsWith(`.${dst}.partial-`) && fs.existsSync(path.join(dir, n, file)));

(available ? describe : describe.skip)("quantize.py / optimize.py: their output folder", () => {
  test("quantize.py: SIGTERM mid-run exits 143 in one line; neither DST nor a partial folder is left", async () => {
    const { dir, src } = setup("q-term");
    const before = treeHash(src);
    const r = await script("quantize.py: SIGTERM mid-run", QUANTIZE, [src, path.join(dir, "q"), "--mode", "fp16"], {
      signal: { name: "SIGTERM", when: partialHas(dir, "q", "unet/model.onnx") },
    });
    expect(r.signalled).toBe(true);
    expect(r.code).toBe(143);
    expectLine(r, /^quantize\.py: terminated \(SIGTERM\); the partial output folder was removed$/, false);
    onlyEntries(dir, ["src"]);
    expect(treeHash(src)).toEqual(before);
  }, 180_000);

  test("optimize.py: SIGTERM mid-run exits 143 in one line; no .DST.partial left", async () => {
    const { dir, src } = setup("o-term");
    const r = await script("optimize.py: SIGTERM mid-run", OPTIMIZE, [src, path.join(dir, "o")], {
      signal: { name: "SIGTERM", when: partialHas(dir, "o", "unet/model.onnx") },
    });
    expect(r.signalled).toBe(true);
    expect(r.code).toBe(143);
    expectLine(r, /^optimize\.py: terminated \(SIGTERM\); the partial output folder was removed$/, false);
    onlyEntries(dir, ["src"]);
  }, 180_000);

  test("optimize.py: SIGINT mid-run exits 130 in one line, no KeyboardInterrupt traceback", async () => {
    const { dir, src } = setup("o-int");
    const r = await script("optimize.py: SIGINT mid-run", OPTIMIZE, [src, path.join(dir, "o")], {
      signal: { name: "SIGINT", when: partialHas(dir, "o", "unet/model.onnx") },
    });
    expect(r.signalled).toBe(true);
    expect(r.code).toBe(130);
    expect(r.stderr).not.toMatch(/KeyboardInterrupt/);
    expectLine(r, /^optimize\.py: interrupted \(SIGINT\); the partial output folder was removed$/, false);
    onlyEntries(dir, ["src"]);
  }, 180_000);

  for (const [tool, file, extra] of [
    ["quantize.py", QUANTIZE, ["--mode", "fp16"]],
    ["optimize.py", OPTIMIZE, []],
  ] as const) {
    test(`${tool}: a model.onnx that is not ONNX is refused in one line naming it, exit 2, nothing written`, async () => {
      const { dir, src } = setup(`${tool}-notonnx`);
      fs.writeFileSync(path.join(src, "unet", "model.onnx"), "this is a text file, not a model\n");
      const r = await script(`${tool}: unet/model.onnx is a text file`, file, [src, path.join(dir, "out"), ...extra]);
      expect(r.code).toBe(2);
      expectLine(r, new RegExp(`^${tool.replace(".", "\\.")}: .*src/unet/model\\.onnx: not an ONNX model \\(`));
      onlyEntries(dir, ["src"]);
    }, 60_000);

    test(`${tool}: DST inside SRC, and SRC inside DST, are refused in one line, exit 2, SRC unchanged`, async () => {
      const { dir, src } = setup(`${tool}-nested`);
      const before = treeHash(src);
      const inside = await script(`${tool}: DST inside SRC`, file, [src, path.join(src, "out"), ...extra]);
      expect(inside.code).toBe(2);
      expectLine(inside, /: lies inside SRC \(.*\); write the output folder outside it$/);
      const around = await script(`${tool}: SRC inside DST`, file, [src, dir, ...extra]);
      expect(around.code).toBe(2);
      expectLine(around, /: (contains SRC \(.*\); write the output folder outside it|exists; .*)$/);
      expect(treeHash(src)).toEqual(before);
      onlyEntries(dir, ["src"]);
    }, 60_000);
  }

  test("an existing DST whose unet/model.onnx links into SRC: refused without --overwrite; replaced with it, never written through", async () => {
    const { dir, src } = setup("q-link");
    const dst = path.join(dir, "q");
    fs.mkdirSync(path.join(dst, "unet"), { recursive: true });
    fs.symlinkSync(path.join(src, "unet", "model.onnx"), path.join(dst, "unet", "model.onnx"));
    const before = treeHash(src);
    const refused = await script("quantize.py: existing DST without --overwrite", QUANTIZE, [
      src,
      dst,
      "--mode",
      "fp16",
      "--components",
      "unet",
    ]);
    expect(refused.code).toBe(2);
    expectLine(refused, /q: exists; pass --overwrite to replace it$/);
    const opt = await script("optimize.py: existing DST", OPTIMIZE, [src, dst]);
    expect(opt.code).toBe(2);
    expectLine(opt, /q: exists; this script writes a new folder and does not replace one$/);
    const replaced = await script("quantize.py: --overwrite replaces a DST whose model.onnx links into SRC", QUANTIZE, [
      src,
      dst,
      "--mode",
      "fp16",
      "--components",
      "unet",
      "--overwrite",
    ]);
    expect(replaced.code).toBe(0);
    expect(replaced.stderr).not.toMatch(/Traceback/);
    expect(treeHash(src)).toEqual(before);
    expect(fs.lstatSync(path.join(dst, "unet", "model.onnx")).isFile()).toBe(true);
    onlyEntries(dir, ["q", "src"]);
  }, 180_000);
});

if (!available) {
  test("quantize.py / optimize.py output tests: skipped", () => {
    console.log(`scripts-output: ${PYTHON} not found (scripts/setup.sh makes it); quantize.py / optimize.py are not judged`);
  });
}
