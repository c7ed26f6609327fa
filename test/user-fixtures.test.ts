/**
 * Models as users have them, each judged against references diffusers made for it: the detection
 * fixture tiny-sd-wide written by optimum's own exporter (a text encoder without hidden_states
 * outputs, int64 ids, a rank-0 timestep, opset 18; PNDM with its Runge-Kutta warm-up), a 3-block geometry (per-block heads, linear
 * projections, a 3-block VAE, scaling factor 0.13025), a 2-block geometry with 8 latent channels and
 * Euler by default, and a scheduler config diffusers' pipeline must correct (steps_offset 0,
 * clip_sample true). Each must PASS the fp32 profile, and its pictures match diffusers' within 1/255.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ExitCode } from "../src/errors";
import { Report } from "../src/conformance/types";
import { USER_FIXTURES } from "./helpers/fixtures";
import { cli, Run } from "./helpers/cli";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sd-user-fixtures-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe.each(USER_FIXTURES.map((f) => [f.name, f] as const))("%s", (name, f) => {
  let report: Report;
  let run: Run;

  beforeAll(async () => {
    const out = path.join(tmp, name);
    run = await cli([
      "conformance",
      "--model",
      f.model,
      "--references",
      f.refs,
      "--profile",
      "fp32",
      "--threads",
      "1",
      "--quiet",
      "--out",
      out,
    ]);
    report = JSON.parse(fs.readFileSync(path.join(out, "report.json"), "utf8"));
  }, 240_000);

  test("passes the fp32 profile", () => {
    expect(
      `${run.code} ${run.err
        .split("\n")
        .filter((l) => /^(FAIL|ERROR)/.test(l))
        .join("; ")}`,
    ).toBe(`${ExitCode.ok} `);
    expect(report.summary.fail + report.summary.error + report.summary.xpass).toBe(0);
    // the set's model stages all ran: nothing silently skipped but what coverage names
    for (const stage of ["text_encoder", "unet", "vae_decode", "vae_encode", "vae_roundtrip", "end_to_end"]) {
      expect(report.results.some((r) => r.stage === stage && r.status === "pass")).toBe(true);
    }
  });

  test("its pictures match diffusers' within 1/255", () => {
    const images = report.results.filter((r) => r.stage === "end_to_end" && r.status !== "skip").flatMap((r) => r.images ?? []);
    expect(images.length).toBeGreaterThanOrEqual(3);
    for (const im of images) expect(im.maxAbsU8).toBeLessThanOrEqual(1);
  });

  test("every skip is named in the report's coverage", () => {
    const skips = report.results.filter((r) => r.status === "skip");
    for (const s of skips) expect(report.coverage!.gaps.some((g) => g.why === s.message)).toBe(true);
  });
});

describe("the optimum export", () => {
  const optimum = USER_FIXTURES.find((f) => f.name === "tiny-sd-wide-optimum-onnx")!;
  const clipSkipRun = "end_to_end:txt2img-ddim-80x64-negative-clipskip1";

  test("judges the last hidden state and skips clip skip with the reason, never an error", async () => {
    const out = path.join(tmp, "optimum-te");
    const r = await cli([
      "conformance",
      "--model",
      optimum.model,
      "--references",
      optimum.refs,
      "--only",
      "text_encoder:*",
      "--only",
      clipSkipRun,
      "--quiet",
      "--out",
      out,
    ]);
    expect(r.code).toBe(ExitCode.ok);
    const report: Report = JSON.parse(fs.readFileSync(path.join(out, "report.json"), "utf8"));
    const te = report.results.filter((x) => x.stage === "text_encoder");
    expect(te.length).toBe(5);
    for (const x of te) {
      expect(x.status).toBe("pass");
      expect(Object.keys(x.metrics)).toContain("last_hidden_state");
    }
    const e2e = report.results.find((x) => x.id === clipSkipRun)!;
    expect(e2e.status).toBe("skip");
    expect(e2e.message).toMatch(/no hidden_states outputs.*re-export it with output_hidden_states/);
    expect(r.err).toMatch(/not covered: .*penultimate_normed \(clip skip\) not compared/);
  }, 120_000);

  test("generate --clip-skip says in one line what the export lacks", async () => {
    const r = await cli([
      "generate",
      "--model",
      optimum.model,
      "--prompt",
      "a fox",
      "--clip-skip",
      "1",
      "--steps",
      "1",
      "--out",
      path.join(tmp, "cs.png"),
    ]);
    expect(r.code).toBe(ExitCode.usage);
    expect(r.err.trim().split("\n")).toHaveLength(1);
    expect(r.err).toMatch(/--clip-skip: .*text_encoder.*no hidden_states outputs/);
    expect(fs.existsSync(path.join(tmp, "cs.png"))).toBe(false);
  }, 120_000);
});

test("a 3-block geometry's size step is 16, and the message says so", async () => {
  const geo = USER_FIXTURES.find((f) => f.name === "tiny-sd-3block-linear-onnx")!;
  const r = await cli(["generate", "--model", geo.model, "--prompt", "a fox", "--width", "40", "--out", path.join(tmp, "w.png")]);
  expect(r.code).toBe(ExitCode.usage);
  expect(r.err).toMatch(/--width: 40 is not a multiple of 16/);
  const ok = await cli([
    "generate",
    "--model",
    geo.model,
    "--prompt",
    "a fox",
    "--width",
    "48",
    "--height",
    "32",
    "--steps",
    "2",
    "--out",
    path.join(tmp, "w48.png"),
  ]);
  expect(`${ok.code} ${ok.err}`).toMatch(/^0 /);
}, 120_000);
