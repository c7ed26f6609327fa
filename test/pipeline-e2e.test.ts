/**
 * The TypeScript pipeline against diffusers' own end-to-end runs (PyTorch, CPU): same seed, same
 * prompts, same scheduler. Initial latents must be identical (same RNG stream); the per-step
 * latents and the image may differ only by onnxruntime-vs-PyTorch float drift, measured below.
 */
import { StableDiffusionPipeline } from "../src/pipeline/pipeline";
import { ReferenceSet } from "../src/conformance/cases/reference-set";
import { TINY, TINY_INPAINT, REFS } from "./helpers/fixtures";

const refs = ReferenceSet.open(REFS);
let pipe: StableDiffusionPipeline;
let inpaint: StableDiffusionPipeline;

beforeAll(async () => {
  pipe = await StableDiffusionPipeline.load(TINY, { threads: 1 });
  inpaint = await StableDiffusionPipeline.load(TINY_INPAINT, { threads: 1 });
});
afterAll(async () => {
  await pipe.release();
  await inpaint.release();
});

/** Largest difference in units of the reference value's float32 spacing (ULP). */
function maxUlp(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const ulp = 2 ** (Math.floor(Math.log2(Math.max(Math.abs(b[i]), 2 ** -126))) - 23);
    m = Math.max(m, Math.abs(a[i] - b[i]) / ulp);
  }
  return m;
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const e2e = refs.cases.filter((c) => c.stage === "end_to_end");

describe.each(e2e.map((c) => [c.id, c] as const))("%s", (id, c) => {
  test("initial latents, per-step latents and image match diffusers", async () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- manifest meta is untyped JSON
    const meta = c.meta as Record<string, any>;
    const t = refs.tensors(id);
    const kind = meta.kind as string;
    const image = kind !== "txt2img" ? { width: meta.width, height: meta.height, data: t.raw("init_image").data as Uint8Array } : null;
    const mask = kind === "inpaint" ? { width: meta.width, height: meta.height, data: t.raw("mask_image").data as Uint8Array } : null;
    const steps: Float32Array[] = [];
    const p = kind === "inpaint" ? inpaint : pipe;
    const r = await p.generate({
      prompt: meta.prompt,
      negativePrompt: meta.negative_prompt,
      steps: meta.steps,
      guidanceScale: meta.guidance_scale,
      scheduler: meta.scheduler,
      seed: meta.seed,
      width: meta.width,
      height: meta.height,
      numImagesPerPrompt: meta.num_images_per_prompt,
      strength: meta.strength,
      clipSkip: meta.clip_skip ?? 0,
      initImage: image,
      mask,
      onStep: (s) => {
        steps.push(s.latents.data.slice());
      },
    });
    const embDrift = maxAbs(r.promptEmbeds.data, t.f32("prompt_embeds").data);
    const initDrift = maxAbs(r.initialLatents.data, t.f32("latents_init").data);
    const initUlp = maxUlp(r.initialLatents.data, t.f32("latents_init").data);
    const ref = t.f32("latents_steps");
    const per = ref.data.length / ref.dims[0];
    expect(steps.length).toBe(ref.dims[0]);
    const stepDrift = steps.map((s, k) => maxAbs(s, ref.data.subarray(k * per, (k + 1) * per)));
    const imgRef = t.raw("image_uint8").data as Uint8Array;
    let maxPix = 0;
    r.images.forEach((im, n) => {
      const off = n * im.data.length;
      for (let i = 0; i < im.data.length; i++) maxPix = Math.max(maxPix, Math.abs(im.data[i] - imgRef[off + i]));
    });
    console.log(
      `${id}: embeds ${embDrift.toExponential(2)}, init latents ${initDrift.toExponential(2)} (${initUlp} ULP), final latents ${stepDrift[stepDrift.length - 1].toExponential(2)}, image max |Δ| ${maxPix}/255`,
    );
    expect(embDrift).toBeLessThan(1e-4);
    // txt2img: the same RNG stream times init_noise_sigma. Measured: bit-identical for sigma 1;
    // Euler: init_noise_sigma = sqrt(sigma_max^2 + 1) is 1 ULP off in torch, whose float32 sqrt on
    // this CPU is not correctly rounded (1 ULP from IEEE sqrt on 17% of random inputs); times the
    // noise that is at most 2 ULP of the product (measured: 2).
    // img2img / inpaint: the VAE encoder's output runs through ORT, so drift is expected there.
    if (kind === "txt2img") expect(initUlp).toBeLessThanOrEqual(2);
    else expect(initDrift).toBeLessThan(1e-4);
    expect(Math.max(...stepDrift)).toBeLessThan(1e-3);
    expect(maxPix).toBeLessThanOrEqual(1);
  });
});
