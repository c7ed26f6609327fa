/**
 * The committed fixtures leave no place for a fault to hide that the suite knows of: read from the
 * reference manifests and the model folders' configs, not from a list kept beside them.
 *  - some fixture's U-Net cases reach every block with at least 4 x 4 latent tokens, the mid block
 *    included (tiny-sd's mid block sees one token at 64 x 64, where self-attention is a softmax
 *    over one key and no fault in it can show);
 *  - that fixture's attention heads are at least 8 channels wide and its cross-attention reads a
 *    text encoder at least 32 wide (tiny-sd's is 8 wide, with 2- and 4-channel heads);
 *  - img2img and inpainting runs whose steps x strength is fractional (where floor / ceil / round
 *    of the start step differ), inpainting at two sizes and two strengths, a batch-2 img2img, and an
 *    end-to-end PNDM run through its Runge-Kutta warm-up.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { ReferenceSet } from "../src/conformance/cases/reference-set";
import { REFS, TINY, USER_FIXTURES } from "./helpers/fixtures";

interface UnetConfig {
  block_out_channels: number[];
  down_block_types: string[];
  attention_head_dim: number | number[];
  num_attention_heads?: number | number[] | null;
  cross_attention_dim: number;
}

interface Fixture {
  name: string;
  set: ReferenceSet;
  unet: UnetConfig;
}

const FIXTURES: Fixture[] = [{ name: "tiny-sd-onnx", model: TINY, refs: REFS }, ...USER_FIXTURES].map((f) => ({
  name: f.name,
  set: ReferenceSet.open(f.refs),
  unet: JSON.parse(fs.readFileSync(path.join(f.model, "unet", "config.json"), "utf8")) as UnetConfig,
}));

type Meta = Record<string, unknown>;
const e2e = (f: Fixture) => f.set.cases.filter((c) => c.stage === "end_to_end").map((c) => ({ id: c.id, meta: (c.meta ?? {}) as Meta }));

/** Latent tokens the mid block attends over for a U-Net input of h x w latents. */
function midTokens(u: UnetConfig, h: number, w: number): number {
  const down = u.down_block_types.length - 1; // the last down block has no down-sampler
  return Math.floor(h / 2 ** down) * Math.floor(w / 2 ** down);
}

/** Channels per head of every attention block (diffusers' SD 1.x configs name the head count attention_head_dim). */
function headWidths(u: UnetConfig): number[] {
  const heads = u.num_attention_heads ?? u.attention_head_dim;
  const perBlock = (i: number) => (Array.isArray(heads) ? heads[i] : heads);
  const widths = u.down_block_types.flatMap((t, i) => (t.startsWith("CrossAttn") ? [u.block_out_channels[i] / perBlock(i)] : []));
  const last = u.block_out_channels.length - 1;
  widths.push(u.block_out_channels[last] / perBlock(last)); // the mid block takes the last entry
  return widths;
}

const fractional = (m: Meta) => {
  const x = (m.steps as number) * (m.strength as number);
  return Math.abs(x - Math.round(x)) > 1e-6;
};

test("one fixture reaches every U-Net block with >= 4 x 4 tokens, 8-wide heads and a 32-wide cross-attention", () => {
  const seen = FIXTURES.map((f) => {
    const unetCases = f.set.cases.filter((c) => c.stage === "unet" && c.tensors?.sample);
    const maxMid = Math.max(
      0,
      ...unetCases.map((c) => {
        const [, , h, w] = c.tensors!.sample[1] as number[];
        return midTokens(f.unet, h, w);
      }),
    );
    return { name: f.name, maxMid, minHead: Math.min(...headWidths(f.unet)), cross: f.unet.cross_attention_dim };
  });
  const clean = seen.filter((s) => s.maxMid >= 16 && s.minHead >= 8 && s.cross >= 32);
  expect(clean.map((s) => s.name)).toContain("tiny-sd-wide-optimum-onnx");
  // and the bundled model's own set now has cases where its mid block sees 4 x 4 tokens
  expect(seen.find((s) => s.name === "tiny-sd-onnx")!.maxMid).toBeGreaterThanOrEqual(16);
});

test("img2img and inpainting runs with a fractional steps x strength, in the bundled set and a user fixture's", () => {
  const bundled = e2e(FIXTURES[0]);
  expect(bundled.filter((c) => c.meta.kind === "img2img" && fractional(c.meta)).length).toBeGreaterThanOrEqual(1);
  expect(bundled.filter((c) => c.meta.kind === "inpaint" && fractional(c.meta)).length).toBeGreaterThanOrEqual(1);
  const wide = e2e(FIXTURES.find((f) => f.name === "tiny-sd-wide-optimum-onnx")!);
  expect(wide.filter((c) => c.meta.kind === "img2img" && fractional(c.meta)).length).toBeGreaterThanOrEqual(1);
});

test("inpainting at two sizes and two strengths; a batch-2 img2img", () => {
  const runs = e2e(FIXTURES[0]);
  const inpaint = runs.filter((c) => c.meta.kind === "inpaint");
  expect(new Set(inpaint.map((c) => `${c.meta.width}x${c.meta.height}`)).size).toBeGreaterThanOrEqual(2);
  expect(new Set(inpaint.map((c) => c.meta.strength)).size).toBeGreaterThanOrEqual(2);
  const batch = (m: Meta) => (Array.isArray(m.prompt) ? m.prompt.length : 1) * (m.num_images_per_prompt as number);
  expect(runs.some((c) => c.meta.kind === "img2img" && batch(c.meta) >= 2)).toBe(true);
});

test("an end-to-end PNDM run goes through the Runge-Kutta warm-up", () => {
  const prk = FIXTURES.flatMap((f) => {
    const sched = (f.set.fingerprint as { scheduler?: Meta } | undefined)?.scheduler ?? {};
    if (sched._class_name !== "PNDMScheduler" || sched.skip_prk_steps !== false) return [];
    // PRK: four U-Net calls per step for the first three steps, so more calls than steps + 1
    return e2e(f).filter((c) => c.meta.scheduler === "pndm" && (c.meta.unet_calls as number) > (c.meta.steps as number) + 1);
  });
  expect(prk.length).toBeGreaterThanOrEqual(1);
});
