/**
 * The library speaks in its own parameter names: a bad GenerateParams value throws InvalidParameter
 * naming the parameter, never a CLI flag, and the CLI's one table (cli/flags.ts) turns the same
 * error into the message with flags that `sd-harness generate` prints.
 */
import { cliMessage, PARAMETER_FLAGS } from "../src/cli/flags";
import { HarnessError, InvalidParameter, invalid, param } from "../src/errors";
import { loadModelFolder } from "../src/pipeline/model-folder";
import { GenerateParams, StableDiffusionPipeline } from "../src/pipeline/pipeline";
import { createScheduler, parseSchedulerConfig } from "../src/schedulers";
import { TINY } from "./helpers/fixtures";

let pipe: StableDiffusionPipeline;
beforeAll(async () => {
  // lowMemory: no session is opened up front, and every case below fails before the first one is
  pipe = await StableDiffusionPipeline.fromFolder(loadModelFolder(TINY), { lowMemory: true });
});
afterAll(async () => {
  await pipe.release();
});

const rgb = (width: number, height: number) => ({ width, height, data: new Uint8Array(width * height * 3) });
const gray = (width: number, height: number) => ({ width, height, data: new Uint8Array(width * height) });

/** [what, params, parameter at fault, the library's message, the CLI's message] */
const CASES: readonly [string, Partial<GenerateParams>, string, RegExp, string][] = [
  [
    "no image per prompt",
    { numImagesPerPrompt: 0 },
    "numImagesPerPrompt",
    /^numImagesPerPrompt: 0 must be an integer from 1 to 64$/,
    "--batch: 0 must be an integer from 1 to 64",
  ],
  ["a 1x1 init image", { initImage: rgb(1, 1) }, "width", /^width: 1 is not a multiple of 64/, "--width: 1 is not a multiple of 64"],
  ["steps 0", { steps: 0 }, "steps", /^steps: 0 must be an integer from 1 to 1000$/, "--steps: 0 must be an integer from 1 to 1000"],
  ["negative guidance", { guidanceScale: -1 }, "guidanceScale", /^guidanceScale: -1 must be/, "--guidance: -1 must be"],
  [
    "strength 0",
    { initImage: rgb(64, 64), strength: 0 },
    "strength",
    /^strength: 0 must be in \(0, 1\]$/,
    "--strength: 0 must be in (0, 1]",
  ],
  [
    "an init image of another size",
    { initImage: rgb(128, 64), width: 64, height: 64 },
    "initImage",
    /^initImage is 128x64 but the output is 64x64; resize the image or drop width\/height$/,
    "--init-image is 128x64 but the output is 64x64; resize the image or drop --width/--height",
  ],
  ["a mask without an init image", { mask: gray(64, 64) }, "mask", /^mask needs initImage$/, "--mask needs --init-image"],
  ["no prompt", { prompt: [] }, "prompt", /^prompt: no prompt given$/, "--prompt: no prompt given"],
  [
    "a sigma schedule the scheduler does not take",
    { scheduler: "ddim", sigmas: "karras" },
    "sigmas",
    /^sigmas karras: scheduler ddim accepts none/,
    "--sigmas karras: scheduler ddim accepts none",
  ],
];

describe.each(CASES)("%s", (_what, params, parameter, libraryMessage, cliText) => {
  test("throws InvalidParameter naming the library parameter; the CLI's table spells the flags", async () => {
    const e = await pipe.generate({ prompt: "x", ...params } as GenerateParams).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(InvalidParameter);
    const ip = e as InvalidParameter;
    expect(ip).toBeInstanceOf(HarnessError);
    expect(ip.parameter).toBe(parameter);
    expect(ip.message).toMatch(libraryMessage);
    expect(ip.message).not.toMatch(/--/);
    expect(cliMessage(ip).startsWith(cliText)).toBe(true);
  });
});

test("the scheduler registry names numInferenceSteps, which the CLI calls --steps", () => {
  const cfg = parseSchedulerConfig({ _class_name: "PNDMScheduler", steps_offset: 1 });
  const e = (() => {
    try {
      createScheduler("ddim", cfg, 1000);
    } catch (err) {
      return err as InvalidParameter;
    }
  })();
  expect(e).toBeInstanceOf(InvalidParameter);
  expect(e?.message).toMatch(/^numInferenceSteps 1000: ddim's "leading" schedule/);
  expect(cliMessage(e!)).toMatch(/^--steps 1000: ddim's "leading" schedule/);
});

test("every parameter the CLI maps is one the library takes", () => {
  // a renamed GenerateParams key would leave the table spelling a flag for nothing
  const keys: (keyof GenerateParams | "numInferenceSteps")[] = [
    "prompt",
    "negativePrompt",
    "steps",
    "numInferenceSteps",
    "guidanceScale",
    "scheduler",
    "numImagesPerPrompt",
    "width",
    "height",
    "initImage",
    "mask",
    "strength",
    "clipSkip",
    "eta",
    "sigmas",
  ];
  expect(Object.keys(PARAMETER_FLAGS).sort()).toEqual([...keys].sort());
});

test("text from elsewhere in a message is never taken for a parameter", () => {
  const e = invalid("mask")`/models/{mask}: needs ${param("initImage")}`;
  expect(e.message).toBe("/models/{mask}: needs initImage");
  expect(e.describe((p) => `--${p}`)).toBe("/models/{mask}: needs --initImage");
});
