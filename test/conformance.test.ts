/**
 * The whole conformance suite on the bundled tiny fixture, in-process through main(): every stage
 * passes, the four report files are written, --list / --only / --shard / report merge / --baseline
 * behave, and exit codes follow the contract (0 pass, 1 fail, 2 usage).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { main } from "../src/cli/main";
import { CliIO } from "../src/cli/io";
import { parseReportJson } from "../src/conformance/runner";
import { Report } from "../src/conformance/types";

function capture(): CliIO & { stdout: () => string; stderr: () => string } {
  let out = "";
  let err = "";
  return {
    out: (t) => {
      out += t;
    },
    err: (t) => {
      err += t;
    },
    isTTY: false,
    stdout: () => out,
    stderr: () => err,
  };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-conf-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

let full: Report;

test("every stage passes on the bundled fixture and all four reports are written", async () => {
  const io = capture();
  const out = path.join(tmp, "full");
  const code = await main(["conformance", "--out", out, "--quiet", "--threads", "2"], io);
  full = parseReportJson(fs.readFileSync(path.join(out, "report.json"), "utf8"));
  const bad = full.results.filter((r) => r.status !== "pass").map((r) => `${r.id}: ${r.status} ${r.message ?? ""}`);
  expect(bad).toEqual([]);
  expect(code).toBe(0);
  for (const f of ["report.json", "summary.md", "junit.xml", "report.html", "results.csv"])
    expect(fs.statSync(path.join(out, f)).size).toBeGreaterThan(100);
  const stages = new Set(full.results.map((r) => r.stage));
  for (const s of ["tokenizer", "text_encoder", "rng", "scheduler", "unet", "vae_decode", "vae_encode", "vae_roundtrip", "end_to_end"])
    expect(stages).toContain(s);
  expect(full.results.some((r) => r.id.endsWith("-free"))).toBe(true);
  console.log(`conformance on the tiny fixture: ${full.summary.total} cases in ${(full.run.durationMs / 1000).toFixed(1)} s`);
});

test("--list and --only select cases by glob", async () => {
  const io = capture();
  expect(await main(["conformance", "--list", "--only", "unet:*-free"], io)).toBe(0);
  const ids = io.stdout().trim().split("\n");
  expect(ids.length).toBeGreaterThan(5);
  expect(ids.every((id) => /^unet:.*-free$/.test(id))).toBe(true);
});

test("shards cover the run exactly once and merge back into one report", async () => {
  const parts = [1, 2].map((i) => path.join(tmp, `shard${i}`));
  for (const [k, dir] of parts.entries()) {
    expect(
      await main(
        ["conformance", "--only", "vae_*", "--only", "text_encoder:*", "--shard", `${k + 1}/2`, "--out", dir, "--quiet"],
        capture(),
      ),
    ).toBe(0);
  }
  const merged = path.join(tmp, "merged");
  expect(await main(["report", "merge", "--out", merged, ...parts], capture())).toBe(0);
  const m = parseReportJson(fs.readFileSync(path.join(merged, "report.json"), "utf8"));
  const ids = m.results.map((r) => r.id);
  expect(new Set(ids).size).toBe(ids.length);
  const single = capture();
  await main(["conformance", "--list", "--only", "vae_*", "--only", "text_encoder:*"], single);
  expect(ids.sort()).toEqual(single.stdout().trim().split("\n").sort());
});

test("--baseline flags a case whose drift grew past the factor", async () => {
  const base = path.join(tmp, "base");
  expect(await main(["conformance", "--only", "vae_decode:64x64", "--out", base, "--quiet"], capture())).toBe(0);
  // pretend the previous release drifted 1000x less: the same run now counts as a regression
  const file = path.join(base, "report.json");
  const r = parseReportJson(fs.readFileSync(file, "utf8")) as unknown as { results: { metrics: Record<string, { relL2: number }> }[] };
  for (const m of Object.values(r.results[0].metrics)) m.relL2 /= 1000;
  fs.writeFileSync(file, JSON.stringify(r));
  const io = capture();
  const code = await main(
    ["conformance", "--only", "vae_decode:64x64", "--baseline", file, "--out", path.join(tmp, "after"), "--quiet"],
    io,
  );
  expect(code).toBe(1);
  const after = parseReportJson(fs.readFileSync(path.join(tmp, "after", "report.json"), "utf8"));
  expect(after.results[0].regression?.flagged).toBe(true);
  expect(after.results[0].status).toBe("fail");
});

test("usage errors exit 2 with one line", async () => {
  const io = capture();
  expect(await main(["conformance", "--profile", "bf13"], io)).toBe(2);
  expect(io.stderr().trim().split("\n")).toHaveLength(1);
  expect(io.stderr()).toMatch(/--profile/);
  const io2 = capture();
  expect(await main(["conformance", "--references", path.join(tmp, "nope")], io2)).toBe(2);
  expect(io2.stderr()).toMatch(/reference set does not exist/);
});
