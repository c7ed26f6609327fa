/**
 * Does the bundled shapes-sd model draw what its prompt says? Held-out prompts (attribute
 * combinations no training image showed; scripts/train_shapes_model.py picks them, seeded, and
 * writes them to the folder's prompts.json) are sampled through the TypeScript pipeline with fixed
 * seeds and scored by pixel statistics (test/helpers/adherence.ts). The figures and why each floor
 * sits where it does: fixtures/models/shapes-sd-onnx/README.md.
 */
import { StableDiffusionPipeline } from "../src/pipeline/pipeline";
import { SHAPES } from "./helpers/fixtures";
import { ATTRIBUTES, accuracy, drawShape, readShapesSpec, scoreImage, type Scored, type ShapesPrompt } from "./helpers/adherence";

const spec = readShapesSpec(SHAPES);
const prompts = spec.held_out;

/**
 * Floors, from the measured figures in the README (32 held-out prompts, seeds 0..31, 20 PNDM steps,
 * guidance 7.5: what `generate` does by default; the same on every run of a given onnxruntime
 * build). Measured: colour 12/32, background 13/32; the empty-prompt control below: 6/32 and 7/32
 * (chance 1/5). Each floor sits 2-3 prompts under the model and 3-4 over the control. Shape (13/32
 * against the control's 11/32) and position (4/32 against 7/32) are reported but have no floor:
 * this model does not follow those words, and a floor there would not tell a broken pipeline apart.
 */
const FLOORS = { colour: 10 / 32, background: 10 / 32 };

let pipe: StableDiffusionPipeline;
beforeAll(async () => {
  pipe = await StableDiffusionPipeline.load(SHAPES, { threads: 1 });
});
afterAll(async () => {
  await pipe.release();
});

async function sample(text: (p: ShapesPrompt, i: number) => string): Promise<Scored[]> {
  const out: Scored[] = [];
  for (const [i, p] of prompts.entries()) {
    const r = await pipe.generate({ prompt: text(p, i), seed: i });
    out.push(scoreImage(r.images[0], spec));
  }
  return out;
}

function table(title: string, scored: readonly Scored[]): string {
  const acc = accuracy(prompts, scored);
  const rows = prompts.map((p, i) => {
    const s = scored[i];
    const mark = (k: "colour" | "background" | "shape" | "position") => (s[k] === p[k] ? s[k] : `${s[k]}(want ${p[k]})`);
    return `${String(i).padStart(2)} ${p.prompt.padEnd(50)} ${mark("colour")} ${mark("shape")} ${mark("background")} ${mark("position")} fill=${s.fill.toFixed(2)} top=${s.top.toFixed(2)}`;
  });
  return `${title}: ${Object.entries(acc)
    .map(([k, v]) => `${k} ${(100 * v).toFixed(0)} %`)
    .join(", ")}\n${rows.join("\n")}`;
}

test("the scorer reads the training drawings right (sizes 10 and 14 px, jitter at its extremes)", () => {
  for (const side of [10, 14]) {
    for (const [dx, dy] of [
      [-1.5, -1.5],
      [1.5, 1.5],
      [1.5, -1.5],
    ]) {
      const wrong = prompts.flatMap((p) => {
        const s = scoreImage(drawShape(spec, p, side, dx, dy), spec);
        const bad = ATTRIBUTES.filter((a) => s[a] !== p[a]);
        return bad.length > 0
          ? [
              `${p.prompt} side ${side} (${dx}, ${dy}): ${bad.map((a) => `${a} ${s[a]}`).join(", ")} fill ${s.fill.toFixed(3)} top ${s.top.toFixed(3)}`,
            ]
          : [];
      });
      expect(wrong).toEqual([]);
    }
  }
});

test("held-out prompts: colour, background, shape and position as asked", async () => {
  const scored = await sample((p) => p.prompt);
  const acc = accuracy(prompts, scored);
  console.log(table("shapes-sd, held-out prompts", scored));
  for (const [k, floor] of Object.entries(FLOORS))
    expect({ [k]: acc[k as keyof typeof acc] >= floor ? "met" : acc[k as keyof typeof acc] }).toEqual({ [k]: "met" });
}, 120_000);

test("control: the same seeds without the prompt (what a pipeline that loses the text scores) miss every floor", async () => {
  const scored = await sample(() => "");
  const acc = accuracy(prompts, scored);
  console.log(table("control: empty prompt, scored against the held-out prompts", scored));
  for (const [k, floor] of Object.entries(FLOORS)) expect(acc[k as keyof typeof acc]).toBeLessThan(floor);
}, 120_000);
