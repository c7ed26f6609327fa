"""End-to-end references from diffusers' own pipelines, plus the U-Net's per-step inputs/outputs.

Each run records: prompt embeddings as the pipeline built them ([uncond, cond] when CFG is on),
the initial latents, the latents after every step (callback_on_step_end), the final latents, the
image as float [0, 1] (output_type "np") and as uint8 (numpy_to_pil's rounding). A forward hook on
the U-Net stores every call's exact inputs and output as `unet:<run>-stepNN` cases, for the
teacher-forced U-Net check. The generator is always a CPU torch.Generator, as users seed it.

The full preset runs RUNS (the tiny model's sizes); the small preset runs small_runs(), sized from
the model's geometry, and keeps only the first and last U-Net call of each run as cases. Either
way the scheduler of every run is built from the config the pipeline holds after its constructor
corrected the folder's file (steps_offset, clip_sample), which is what a diffusers user runs.

Unless --no-float64, each run is repeated by the same pipeline class in float64 (float64.py) from
the float32 run's initial latents and prompt embeddings, with the same random draws: the floor of
the loop and the decode, which the free-running U-Net case (unet:<run>-free) shares. Each kept
U-Net call is also run by the float64 U-Net on the call's own inputs (the teacher-forced floor).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline
from PIL import Image

from .context import RefContext
from .float64 import F64, float32_draws, floors
from .spread import amplification, spread_entry, ulp_perturb, variants
from .scheduler_refs import REGISTRY  # the TypeScript scheduler registry, schedulers.json


class SchedulerChoice:
    """A registry choice as a scheduler factory: its diffusers class with the config keys the choice
    forces (dpm++2m-karras: use_karras_sigmas), as `Cls.from_config(config, **forced)`."""

    def __init__(self, entry: dict[str, Any]):
        import diffusers

        self.cls = getattr(diffusers, entry["className"])
        self.overrides = dict(entry["overrides"])

    def from_config(self, config: Any) -> Any:
        return self.cls.from_config(config, **self.overrides)


# short CLI name -> factory, and diffusers class name -> short name (the first choice of the class)
SCHEDULERS = {s["id"]: SchedulerChoice(s) for s in REGISTRY["schedulers"]}
SHORT_NAMES: dict[str, str] = {}
for _entry in REGISTRY["schedulers"]:
    SHORT_NAMES.setdefault(_entry["className"], _entry["id"])


@dataclass
class Run:
    name: str
    kind: str  # txt2img | img2img | inpaint
    prompt: Any
    scheduler: str = "pndm"
    steps: int = 8
    guidance: float = 7.5
    seed: int = 42
    width: int = 64
    height: int = 64
    negative: Any = None
    images_per_prompt: int = 1
    strength: float = 1.0
    clip_skip: int | None = None
    extra: dict = field(default_factory=dict)
    # only the U-Net calls become cases (no end_to_end case): sizes whose decoded image would cost
    # the fixture budget, run for what the U-Net's deepest blocks see there
    unet_only: bool = False


RUNS = [
    Run("txt2img-pndm-64x64", "txt2img", "a photograph of an astronaut riding a horse", "pndm", steps=10, seed=42),
    Run("txt2img-euler-128x64-negative", "txt2img", "a lighthouse on a cliff at dusk", "euler", steps=8, seed=7,
        width=128, height=64, negative="blurry, low quality"),
    Run("txt2img-ddim-batch2", "txt2img", ["a red apple on a table", "a bowl of soup"], "ddim", steps=6, seed=1234,
        negative=["", "cartoon"]),
    Run("txt2img-euler-a-64x64", "txt2img", "an oil painting of a fox", "euler-a", steps=8, seed=99),
    Run("txt2img-pndm-guidance1", "txt2img", "a small cabin in the woods", "pndm", steps=6, seed=3, guidance=1.0),
    Run("txt2img-pndm-clipskip1", "txt2img", "a watercolor of a harbour", "pndm", steps=6, seed=11, clip_skip=1),
    Run("txt2img-pndm-2perprompt", "txt2img", "a castle in the clouds", "pndm", steps=5, seed=21, images_per_prompt=2),
    Run("img2img-pndm-strength0.6", "img2img", "a city street in the rain", "pndm", steps=10, seed=5, strength=0.6),
    Run("img2img-euler-strength0.75-128x64", "img2img", "a mountain lake", "euler", steps=8, seed=8, strength=0.75,
        width=128, height=64),
    Run("inpaint-pndm-64x64", "inpaint", "a vase of flowers", "pndm", steps=8, seed=13),
    # steps x strength fractional (7 x 0.55 = 3.85): diffusers' int() of it decides the start step
    Run("img2img-ddim-strength0.55-7steps", "img2img", "a harbour at sunrise", "ddim", steps=7, seed=31, strength=0.55),
    # a batch of two prompts over one init image (its latents repeated), ancestral steps drawing noise
    # for both, 6 x 0.7 = 4.2
    Run("img2img-euler-a-batch2-strength0.7", "img2img", ["a desert at noon", "a forest at night"], "euler-a", steps=6,
        seed=17, strength=0.7, negative=["", "fog"]),
    # inpainting at a second size and below full strength (6 x 0.75 = 4.5): image latents, then noise
    Run("inpaint-ddim-strength0.75-128x64", "inpaint", "a red door", "ddim", steps=6, seed=19, strength=0.75,
        width=128, height=64),
    # 256 x 256: 32 x 32 latents, so the mid block (three down-samplers) attends over 4 x 4 tokens;
    # at 64 x 64 it sees one, where self-attention is a softmax over a single key
    Run("txt2img-ddim-256x256", "txt2img", "a map of an island", "ddim", steps=2, seed=23, width=256, height=256,
        unet_only=True),
]


def small_runs(ctx: RefContext) -> list[Run]:
    """make_references.py --preset small: txt2img and img2img with the folder's own scheduler and
    with a second one, at the model's default size and at a wider one valid for its geometry.

    The scheduler config is the folder's as the pipeline corrected it (a legacy steps_offset 0 /
    clip_sample true becomes 1 / false), for the folder's class and for the second class alike.
    """
    geo = ctx.geometry()
    folder_class = json.loads((ctx.model_dir / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))["_class_name"]
    own = SHORT_NAMES[folder_class]
    other = "euler" if own == "ddim" else "ddim"
    s = geo.default_size
    wide = s + geo.size_step if geo.size_step < s else s  # non-square where the geometry has a size between s and 2s
    return [
        Run(f"txt2img-{own}-{s}x{s}", "txt2img", "a photograph of an astronaut riding a horse", own, steps=10, seed=42,
            width=s, height=s),
        Run(f"txt2img-{other}-{wide}x{s}-negative-clipskip1", "txt2img", "a lighthouse on a cliff at dusk", other, steps=6,
            seed=7, width=wide, height=s, negative="blurry, low quality", clip_skip=1),
        Run(f"img2img-{own}-strength0.6-{s}x{s}", "img2img", "a city street in the rain", own, steps=10, seed=5,
            strength=0.6, width=s, height=s),
        # 7 x 0.75 = 5.25: a fractional start step
        Run(f"img2img-{other}-strength0.75-7steps-{s}x{s}", "img2img", "a mountain lake", other, steps=7, seed=8,
            strength=0.75, width=s, height=s),
    ]


# make_references.py --preset sd15-ci: SD 1.5's own size and step count, one run per task
SD15_RUNS = [
    Run("txt2img-pndm-512x512", "txt2img", "a photograph of an astronaut riding a horse", "pndm", steps=20, seed=42,
        width=512, height=512),
    Run("img2img-pndm-strength0.5-512x512", "img2img", "a city street in the rain", "pndm", steps=10, seed=5,
        strength=0.5, width=512, height=512),
]


def kept_unet_calls(ctx: RefContext, n: int) -> list[int]:
    """Which U-Net calls of a run become teacher-forced cases: all; the first and the last (small);
    the first, the middle and the last (sd15-ci)."""
    if ctx.sd15:
        return sorted({0, n // 2, n - 1})
    return list(range(n)) if not ctx.small else sorted({0, n - 1})


def init_image(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic RGB test picture: gradients plus seeded texture (also committed as PNG)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = 127 + 100 * np.sin(x / 5) * np.cos(y / 7)
    arr = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")


def mask_image(width: int, height: int) -> Image.Image:
    """White (repaint) rectangle on black (keep), grayscale, with a soft edge to exercise binarisation."""
    arr = np.zeros((height, width), dtype=np.uint8)
    arr[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    arr[height // 4 - 1, width // 4 : 3 * width // 4] = 140  # rounds to "repaint" (>= 0.5)
    arr[3 * height // 4, width // 4 : 3 * width // 4] = 100  # rounds to "keep"
    return Image.fromarray(arr, "L")


def _pipeline(ctx: RefContext, kind: str):
    if kind == "inpaint":
        folder = getattr(ctx, "inpaint_model_dir", None)
        if folder is None:
            return None
        return StableDiffusionInpaintPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False)
    cls = StableDiffusionImg2ImgPipeline if kind == "img2img" else StableDiffusionPipeline
    return cls.from_pretrained(str(ctx.model_dir), safety_checker=None, requires_safety_checker=False)


@torch.no_grad()
def generate(ctx: RefContext) -> None:
    base_sched = None
    for run in small_runs(ctx) if ctx.small else SD15_RUNS if ctx.sd15 else RUNS:
        pipe = _pipeline(ctx, run.kind)
        if pipe is None:
            print(f"  skip {run.name}: no --inpaint-model")
            continue
        pipe = pipe.to(ctx.device)
        pipe.set_progress_bar_config(disable=True)
        base_sched = pipe.scheduler.config
        pipe.scheduler = SCHEDULERS[run.scheduler].from_config(base_sched)

        unet_calls: list[dict[str, torch.Tensor]] = []

        def hook(_module, args, kwargs, output):
            sample, timestep = args[0], args[1]
            ehs = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
            t = timestep if isinstance(timestep, torch.Tensor) else torch.tensor(timestep)
            unet_calls.append({
                "sample": sample.detach().cpu().clone(),
                "timestep": t.detach().cpu().reshape(-1).to(torch.float32).clone(),
                "encoder_hidden_states": ehs.detach().cpu().clone(),
                "out_sample": output[0].detach().cpu().clone(),
            })

        handle = pipe.unet.register_forward_hook(hook, with_kwargs=True)
        steps: list[torch.Tensor] = []
        timesteps: list[float] = []

        def on_step_end(_pipe, i, t, kwargs):
            steps.append(kwargs["latents"].detach().cpu().clone())
            timesteps.append(float(t))
            return kwargs

        gen = torch.Generator("cpu").manual_seed(run.seed)
        args: dict[str, Any] = dict(
            prompt=run.prompt, negative_prompt=run.negative, num_inference_steps=run.steps,
            guidance_scale=run.guidance, generator=gen, num_images_per_prompt=run.images_per_prompt,
            callback_on_step_end=on_step_end, output_type="np", clip_skip=run.clip_skip,
        )
        tensors: dict[str, Any] = {}
        if run.kind == "txt2img":
            args.update(width=run.width, height=run.height)
        else:
            img = init_image(run.width, run.height, run.seed)
            args.update(image=img, strength=run.strength)
            tensors["init_image"] = np.asarray(img)
            if run.kind == "inpaint":
                m = mask_image(run.width, run.height)
                args.update(mask_image=m, width=run.width, height=run.height)
                tensors["mask_image"] = np.asarray(m)
        # the initial latents exactly as prepare_latents returned them (inpaint returns a tuple)
        captured: dict[str, torch.Tensor] = {}
        original_prepare = pipe.prepare_latents

        def prepare_latents(*a, **kw):
            res = original_prepare(*a, **kw)
            captured["latents_init"] = (res[0] if isinstance(res, tuple) else res).detach().cpu().clone()
            return res

        pipe.prepare_latents = prepare_latents
        out = pipe(**args)
        handle.remove()
        kept = kept_unet_calls(ctx, len(unet_calls))
        image = out.images  # [B, H, W, 3] float in [0, 1]
        tensors.update({
            "latents_init": captured["latents_init"],
            "latents_steps": torch.stack(steps),
            "timesteps": torch.tensor(timesteps, dtype=torch.float32),
            "prompt_embeds": unet_calls[0]["encoder_hidden_states"],
            "image_float": image.astype(np.float32),
            "image_uint8": (image * 255).round().astype(np.uint8),
        })
        meta = {
            "kind": run.kind, "prompt": run.prompt, "negative_prompt": run.negative, "scheduler": run.scheduler,
            "scheduler_class": type(pipe.scheduler).__name__, "steps": run.steps, "guidance_scale": run.guidance,
            "seed": run.seed, "width": run.width, "height": run.height, "num_images_per_prompt": run.images_per_prompt,
            "strength": run.strength, "clip_skip": run.clip_skip, "unet_calls": len(unet_calls),
            "pipeline_class": type(pipe).__name__,
        }
        pipe.prepare_latents = original_prepare
        unet_floors: dict[int, dict] = {}
        if ctx.float64 and run.unet_only:
            unet_floors = _float64_unet_calls(ctx, run, pipe.unet, unet_calls, kept)
        elif ctx.float64:
            meta["float64_floor"], meta["float64_shared"], unet_floors, meta["float32_spread"], meta["amplification"] = _float64_run(
                ctx, run, pipe, base_sched, args, captured["latents_init"], steps, image, unet_calls, kept)
        if not run.unet_only:
            ctx.save(f"end_to_end:{run.name}", tensors, meta)
        for k in kept:
            call_meta: dict[str, Any] = {"run": run.name, "call": k}
            if k in unet_floors:
                call_meta["float64_floor"], call_meta["float32_spread"] = unet_floors[k]
            ctx.save(f"unet:{run.name}-step{k:02d}", unet_calls[k], call_meta)
        print(f"  {run.name}: {len(unet_calls)} U-Net calls")


def _call_floor(ctx: RefContext, unet32, unet64, call: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """One kept U-Net call: (its float64 floor, its float32 spread), each on the call's own inputs."""
    out64 = unet64(call["sample"].to(F64), call["timestep"], encoder_hidden_states=call["encoder_hidden_states"].to(F64)).sample
    spread = {}
    for vname, (vctx, nudged) in variants(ctx.device).items():
        sample, ehs = call["sample"], call["encoder_hidden_states"]
        if nudged:  # the timestep is a schedule value both sides take exactly; it stays
            sample, ehs = ulp_perturb(sample, 4), ulp_perturb(ehs, 5)
        with vctx():
            o = unet32(sample.to(ctx.device), call["timestep"].to(ctx.device), encoder_hidden_states=ehs.to(ctx.device)).sample
        spread[vname] = spread_entry({"out_sample": o}, {"out_sample": call["out_sample"]}, {"out_sample": out64})
    return floors({"out_sample": (call["out_sample"], out64)}), spread


@torch.no_grad()
def _float64_unet_calls(ctx: RefContext, run: Run, unet32, unet_calls: list[dict[str, torch.Tensor]],
                        kept: list[int]) -> dict[int, tuple[dict, dict]]:
    """The float64 U-Net on each kept call's own inputs (the teacher-forced floor) and the float32 spread."""
    unet = _pipeline(ctx, run.kind).unet.to("cpu", F64)
    return {k: _call_floor(ctx, unet32, unet, unet_calls[k]) for k in kept}


@torch.no_grad()
def _float64_run(ctx: RefContext, run: Run, pipe32, sched_config, args: dict[str, Any], latents_init: torch.Tensor,
                 steps: list[torch.Tensor], image: np.ndarray, unet_calls: list[dict[str, torch.Tensor]],
                 kept: list[int]) -> tuple[dict, list[str], dict[int, tuple[dict, dict]], dict, dict]:
    """The run again in float64: (end-to-end floors, tensors both runs share, U-Net call -> (floor,
    spread), the run's float32 spread, its amplification).

    The float32 run's initial latents and prompt embeddings go in unchanged (as in
    scripts/measure_float64_floor.py), so the floor is the loop's and the decode's; prepare_latents
    still runs first, so the generator advances as in the float32 run, and every draw is the float32
    draw cast (float32_draws), the ancestral steps' and the masked image's latent sample included.
    The float32 variants (spread.py) run the same way in float32: the same prompt embeddings, the
    initial latents as captured (one ulp off for the ulp variant), the same generator seed.
    """
    pipe = _pipeline(ctx, run.kind).to("cpu", F64)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SCHEDULERS[run.scheduler].from_config(sched_config)
    unet_floors = {k: _call_floor(ctx, pipe32.unet, pipe.unet, unet_calls[k]) for k in kept}
    embeds = unet_calls[0]["encoder_hidden_states"]  # [uncond, cond] with guidance, else cond
    cfg = run.guidance > 1
    half = embeds.shape[0] // 2

    def rerun(p, dtype, init: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The run's loop and decode by pipeline p in dtype, from the given initial latents."""
        original_prepare = p.prepare_latents

        def prepare_latents(*a, **kw):
            res = original_prepare(*a, **kw)
            if isinstance(res, tuple):
                return (init.to(res[0].device, dtype), *res[1:])
            return init.to(res.device, dtype)

        out_steps: list[torch.Tensor] = []

        def on_step_end(_pipe, i, t, kwargs):
            out_steps.append(kwargs["latents"].detach().cpu().clone())
            return kwargs

        e = embeds.to(p.device, dtype)
        a = {k: v for k, v in args.items() if k not in ("prompt", "negative_prompt", "clip_skip", "num_images_per_prompt")}
        a.update(
            prompt_embeds=e[half:] if cfg else e, negative_prompt_embeds=e[:half] if cfg else None,
            num_images_per_prompt=1, generator=torch.Generator("cpu").manual_seed(run.seed), output_type="pt",
            callback_on_step_end=on_step_end,
        )
        p.prepare_latents = prepare_latents
        try:
            with float32_draws():
                img = p(**a).images.permute(0, 2, 3, 1).cpu()  # [B, 3, H, W] -> [B, H, W, 3], as output_type "np"
        finally:
            p.prepare_latents = original_prepare
        if len(out_steps) != len(steps):
            raise RuntimeError(f"{run.name}: a rerun made {len(out_steps)} steps, the float32 run {len(steps)}")
        return out_steps, img

    steps64, image64 = rerun(pipe, F64, latents_init)
    end_to_end = floors({
        "final_latents": (steps[-1], steps64[-1]),
        "latents_steps": (torch.stack(steps), torch.stack(steps64)),
        "image_float": (torch.from_numpy(image), image64),
    })
    ref32 = {"final_latents": steps[-1], "latents_steps": torch.stack(steps), "image_float": torch.from_numpy(image)}
    ref64 = {"final_latents": steps64[-1], "latents_steps": torch.stack(steps64), "image_float": image64}
    spread = {}
    for vname, (vctx, nudged) in variants(ctx.device).items():
        with vctx():
            s32, img32 = rerun(pipe32, torch.float32, ulp_perturb(latents_init, 6) if nudged else latents_init)
        spread[vname] = spread_entry({"final_latents": s32[-1], "latents_steps": torch.stack(s32), "image_float": img32}, ref32, ref64)
    nudged_init = ulp_perturb(latents_init, 6)
    steps64b, _ = rerun(pipe, F64, nudged_init)
    amp = amplification(steps64, steps64b, latents_init.to(F64), nudged_init.to(F64))
    return end_to_end, ["latents_init", "prompt_embeds"], unet_floors, spread, amp
