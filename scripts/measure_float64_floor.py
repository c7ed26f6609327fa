"""PyTorch's own float32 error on one end-to-end run: the same diffusers pipeline in float32 and in
float64 from the same initial noise and prompt embeddings, relL2 of the latents after every step.

    .venv/bin/python scripts/measure_float64_floor.py --model fixtures/models/tiny-sd-2block-euler \
        --scheduler ddim --width 48 --height 32 --steps 6 --seed 7 \
        --prompt "a lighthouse on a cliff at dusk" --negative-prompt "blurry, low quality" --clip-skip 1

A conformance limit below this floor judges PyTorch's own rounding, not the port. The prompt
embeddings come from the float32 text encoder for both runs, so the figure is the denoising loop's
floor. (transformers 4.57's CLIP cannot build its causal mask in float64 as it is;
scripts/refgen/float64.py's clip_float64_mask builds it in the model's dtype.) make_references.py
now records this floor for every case of every reference set (meta.float64_floor); this script
remains the quick look at one run's per-step figures.
"""

from __future__ import annotations

import argparse

import common.telemetry_off  # noqa: F401  (diffusers may import onnxruntime)
import torch
from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
)

SCHEDULERS = {
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "pndm": PNDMScheduler,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="diffusers (PyTorch) SD 1.x folder")
    ap.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="pndm")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--prompt", default="a photograph of an astronaut riding a horse")
    ap.add_argument("--negative-prompt", default=None)
    ap.add_argument("--clip-skip", type=int, default=None)
    args = ap.parse_args()

    p32 = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None)
    cond, uncond = p32.encode_prompt(args.prompt, "cpu", 1, True, args.negative_prompt, clip_skip=args.clip_skip)
    runs = {}
    for dtype in (torch.float32, torch.float64):
        pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, torch_dtype=dtype)
        pipe.scheduler = SCHEDULERS[args.scheduler].from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        gen = torch.Generator("cpu").manual_seed(args.seed)
        shape = (
            1,
            pipe.vae.config.latent_channels,
            args.height // pipe.vae_scale_factor,
            args.width // pipe.vae_scale_factor,
        )
        # the same float32 draw for both, as the pipeline would make it
        latents = (torch.randn(shape, generator=gen, dtype=torch.float32) * pipe.scheduler.init_noise_sigma).to(dtype)
        steps: list[torch.Tensor] = []

        def on_step(_pipe, _i, _t, kw, steps=steps):
            steps.append(kw["latents"].double().clone())
            return kw

        pipe(
            prompt_embeds=cond.to(dtype),
            negative_prompt_embeds=uncond.to(dtype),
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            latents=latents,
            width=args.width,
            height=args.height,
            output_type="latent",
            callback_on_step_end=on_step,
        )
        runs[dtype] = steps
    a, b = runs[torch.float32], runs[torch.float64]
    print("step  relL2(float32 vs float64)")
    for k, (x, y) in enumerate(zip(a, b)):
        print(f"{k:4d}  {float((x - y).norm() / y.norm()):.3e}")


if __name__ == "__main__":
    main()
