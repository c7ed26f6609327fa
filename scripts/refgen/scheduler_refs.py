"""Scheduler traces: every diffusers scheduler the harness implements, driven through a full
denoising loop by a deterministic dummy "model", so the TypeScript schedulers can be checked step
by step against diffusers to float32 rounding.

One case per (scheduler, config variant, step count); id `scheduler:<short>-<variant>-<steps>`.
Each case stores (float32 unless noted):

    betas, alphas_cumprod        the training schedule            [num_train_timesteps]
    timesteps                    what the loop feeds the model    [n]  (cast to float32)
    sigmas                       only for sigma-based schedulers  [len(scheduler.sigmas)]
    initial_noise                the raw randn (before init_noise_sigma)      [1,4,8,8]
    samples                      sample before each model call; last = final  [n+1,1,4,8,8]
    model_inputs                 scheduler.scale_model_input(sample, t)        [n,1,4,4,4]
    model_outputs                dummy_model(model_input, t)                   [n,1,4,4,4]
    (scheduler.step(...).prev_sample of call k is samples[k + 1]; not stored twice)
    add_noise_in, add_noise_noise, add_noise_out
                                 img2img check: add_noise(x0, noise, timesteps[k:k+1]) on a fresh
                                 scheduler (set_begin_index(k) first where the scheduler has it);
                                 k is meta["add_noise_index"]

The random stream: generator = torch.Generator("cpu").manual_seed(seed); initial_noise =
torch.randn([1,4,8,8], generator) first, then the SAME generator is passed to every
scheduler.step that accepts one (DDPM, DDIM with eta > 0, EulerAncestral draw from it in
diffusers' own order). The add_noise inputs come from a second generator seeded seed + 1.

Correctly rounded twins. torch's CPU float32 sqrt (also behind `x ** 0.5`) is MKL's vsSqrt, which
is NOT correctly rounded on every host (measured: about 1 result in 5 off by one ulp on an AMD EPYC
with torch 2.8), so the plain traces carry host-dependent last-bit noise. Every case with at most
10 steps is therefore generated a second time, id suffix `-crsqrt`, with torch's float32 sqrt
replaced by the IEEE (correctly rounded) one for the duration of the run (meta["sqrt"]). Those
twins are what a bit-exact reimplementation must reproduce to the last bit; the plain traces are
real diffusers output on this host and are matched to a few ulp.

scheduler/index.json repeats every case's meta (the manifest has it too), keyed by case id.

The base config is Stable Diffusion 1.5's scheduler_config.json; every case overrides a few keys,
and meta["config"] holds the scheduler's full resolved config (diffusers' per-class defaults
filled in), so the TypeScript side never has to guess a default.
"""
from __future__ import annotations

import json

import contextlib
import inspect
import math
import zlib
from typing import Any

import numpy as np
import torch

from .context import RefContext

_SCHEDULES_SEEN: set[str] = set()
SHAPE = [1, 4, 4, 4]  # small: 245 traces must fit the fixture budget; the math is elementwise

# Stable Diffusion 1.5's scheduler/scheduler_config.json (without _diffusers_version).
SD15 = {
    "_class_name": "PNDMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "clip_sample": False,
    "trained_betas": None,
}

# short CLI name -> diffusers class name
CLASSES = {
    "pndm": "PNDMScheduler",
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
    "dpm++2m-karras": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}

EPS = {"prediction_type": "epsilon"}
V = {"prediction_type": "v_prediction"}
LEADING = {"timestep_spacing": "leading"}
LINSPACE = {"timestep_spacing": "linspace"}
TRAILING = {"timestep_spacing": "trailing"}

# The variants every scheduler gets: (variant name, config overrides, step counts).
COMMON = [
    ("leading-eps", {**LEADING, **EPS}, [4, 10, 25]),
    ("linspace-eps", {**LINSPACE, **EPS}, [10]),
    ("trailing-eps", {**TRAILING, **EPS}, [10]),
    ("leading-v", {**LEADING, **V}, [10]),
    ("trailing-v", {**TRAILING, **V}, [4]),
    ("linspace-v", {**LINSPACE, **V}, [25]),
]

# Extra variants per scheduler: (variant name, config overrides, step counts, step() kwargs).
EXTRA: dict[str, list[tuple[str, dict[str, Any], list[int], dict[str, Any]]]] = {
    "pndm": [
        ("leading-eps", {**LEADING, **EPS}, [1], {}),
        ("prk-leading-eps", {**LEADING, **EPS, "skip_prk_steps": False}, [10, 25], {}),
        ("linear-linspace-eps", {**LINSPACE, **EPS, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}, [10], {}),
    ],
    "ddim": [
        ("leading-eps", {**LEADING, **EPS}, [1], {}),
        ("eta05-leading-eps", {**LEADING, **EPS}, [4, 10], {"eta": 0.5}),
        ("eta05-trailing-v", {**TRAILING, **V}, [10], {"eta": 0.5}),
        ("alpha1-leading-eps", {**LEADING, **EPS, "set_alpha_to_one": True}, [10], {}),
        ("clip-leading-eps", {**LEADING, **EPS, "clip_sample": True}, [10], {}),
        ("clip-eta05-linspace-v", {**LINSPACE, **V, "clip_sample": True, "clip_sample_range": 1.5}, [10], {"eta": 0.5}),
        ("linear-leading-eps", {**LEADING, **EPS, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}, [10], {}),
        ("cos-leading-eps", {**LEADING, **EPS, "beta_schedule": "squaredcos_cap_v2"}, [10], {}),
        ("zsnr-trailing-v", {**TRAILING, **V, "rescale_betas_zero_snr": True}, [10], {}),
    ],
    "ddpm": [
        ("leading-eps", {**LEADING, **EPS}, [1], {}),
        ("clip-leading-eps", {**LEADING, **EPS, "clip_sample": True}, [10], {}),
        ("large-leading-eps", {**LEADING, **EPS, "variance_type": "fixed_large"}, [10], {}),
        ("cos-leading-eps", {**LEADING, **EPS, "beta_schedule": "squaredcos_cap_v2"}, [10], {}),
        ("linear-trailing-v", {**TRAILING, **V, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}, [10], {}),
    ],
    "lms": [
        ("leading-eps", {**LEADING, **EPS}, [1], {}),
        ("cos-linspace-eps", {**LINSPACE, **EPS, "beta_schedule": "squaredcos_cap_v2"}, [10], {}),
        ("linear-leading-eps", {**LEADING, **EPS, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}, [10], {}),
        ("karras-leading-eps", {**LEADING, **EPS, "use_karras_sigmas": True}, [10], {}),
    ],
    "euler": [
        ("leading-eps", {**LEADING, **EPS}, [1], {}),
        ("linear-linspace-eps", {**LINSPACE, **EPS, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}, [10], {}),
        ("cos-trailing-eps", {**TRAILING, **EPS, "beta_schedule": "squaredcos_cap_v2"}, [10], {}),
        ("karras-leading-eps", {**LEADING, **EPS, "use_karras_sigmas": True}, [10, 25], {}),
        ("sigmamin-leading-eps", {**LEADING, **EPS, "final_sigmas_type": "sigma_min"}, [10], {}),
        ("zsnr-trailing-v", {**TRAILING, **V, "rescale_betas_zero_snr": True}, [10], {}),
    ],
    "euler-a": [
        ("leading-eps", {**LEADING, **EPS}, [1], {}),
        ("linear-leading-eps", {**LEADING, **EPS, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}, [10], {}),
        ("cos-linspace-v", {**LINSPACE, **V, "beta_schedule": "squaredcos_cap_v2"}, [10], {}),
    ],
    "heun": [
        ("leading-eps", {**LEADING, **EPS}, [1], {}),
        ("linear-leading-eps", {**LEADING, **EPS, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}, [10], {}),
        ("cos-linspace-eps", {**LINSPACE, **EPS, "beta_schedule": "squaredcos_cap_v2"}, [10], {}),
        ("karras-leading-eps", {**LEADING, **EPS, "use_karras_sigmas": True}, [10], {}),
    ],
    "dpm++2m": [
        ("leading-eps", {**LEADING, **EPS}, [1], {}),
        ("cos-leading-eps", {**LEADING, **EPS, "beta_schedule": "squaredcos_cap_v2"}, [10], {}),
        ("linear-linspace-eps", {**LINSPACE, **EPS, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}, [10], {}),
        ("order3-leading-eps", {**LEADING, **EPS, "solver_order": 3}, [10, 25], {}),
        ("nolof-leading-eps", {**LEADING, **EPS, "lower_order_final": False}, [10], {}),
        ("sigmamin-leading-eps", {**LEADING, **EPS, "final_sigmas_type": "sigma_min"}, [10], {}),
        ("heun-leading-eps", {**LEADING, **EPS, "solver_type": "heun"}, [10], {}),
    ],
    "dpm++2m-karras": [
        ("leading-eps", {**LEADING, **EPS}, [1], {}),
        # (not squaredcos_cap_v2: its Karras timesteps repeat 998 four times and diffusers'
        # index_for_timestep then walks off the end of sigmas -- an IndexError in diffusers itself)
        ("linear-linspace-eps", {**LINSPACE, **EPS, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}, [10], {}),
    ],
    "unipc": [
        ("leading-eps", {**LEADING, **EPS}, [1], {}),
        ("cos-leading-eps", {**LEADING, **EPS, "beta_schedule": "squaredcos_cap_v2"}, [10], {}),
        # bh1 with the default final_sigmas_type "zero" gives NaN at the last step in diffusers
        # (h = inf at sigma 0 and bh1's B(h) = -h), so this case ends at sigma_min
        ("bh1-sigmamin-leading-eps", {**LEADING, **EPS, "solver_type": "bh1", "final_sigmas_type": "sigma_min"}, [10], {}),
        ("order3-leading-eps", {**LEADING, **EPS, "solver_order": 3}, [10, 25], {}),
        ("karras-leading-eps", {**LEADING, **EPS, "use_karras_sigmas": True}, [10], {}),
        ("nocorr-leading-eps", {**LEADING, **EPS, "disable_corrector": [0]}, [10], {}),
    ],
}

# fixed overrides per short name (dpm++2m-karras is DPM-Solver++ 2M with Karras sigmas)
BASE_OVERRIDES = {"dpm++2m-karras": {"use_karras_sigmas": True}}


def build_cases() -> list[dict[str, Any]]:
    """The CASES table: one dict per (short, variant, steps)."""
    cases = []
    for short, cls_name in CLASSES.items():
        variants = [(name, cfg, steps, {}) for name, cfg, steps in COMMON] + EXTRA.get(short, [])
        for name, overrides, step_counts, step_kwargs in variants:
            for steps in step_counts:
                config = {**SD15, **BASE_OVERRIDES.get(short, {}), **overrides, "_class_name": cls_name}
                case_id = f"scheduler:{short}-{name}-{steps}"
                cases.append(
                    {
                        "id": case_id,
                        "short": short,
                        "class_name": cls_name,
                        "config": config,
                        "steps": steps,
                        "step_kwargs": step_kwargs,
                        # a stable, distinct seed per case (the -crsqrt twin shares it)
                        "seed": zlib.crc32(case_id.encode()) % 100000,
                    }
                )
    return cases


def _with_crsqrt(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in cases:
        out.append({**c, "sqrt": "torch"})
        if c["steps"] <= 10:
            out.append({**c, "id": c["id"] + "-crsqrt", "sqrt": "correctly-rounded"})
    return out


CASES = _with_crsqrt(build_cases())


@contextlib.contextmanager
def correctly_rounded_sqrt():
    """Within the block, float32 torch.sqrt / Tensor.sqrt / Tensor ** 0.5 round correctly (numpy's
    IEEE sqrt); everything else is untouched. Restored on exit."""
    orig_pow, orig_method, orig_fn = torch.Tensor.__pow__, torch.Tensor.sqrt, torch.sqrt

    def cr(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(np.sqrt(t.detach().cpu().numpy()), dtype=np.float32).reshape(t.shape))

    def pow_(self, e):
        if isinstance(e, float) and e == 0.5 and self.dtype == torch.float32:
            return cr(self)
        return orig_pow(self, e)

    torch.Tensor.__pow__ = pow_
    torch.Tensor.sqrt = lambda self: cr(self) if self.dtype == torch.float32 else orig_method(self)
    torch.sqrt = lambda t, *a, **k: cr(t) if (t.dtype == torch.float32 and not a and not k) else orig_fn(t, *a, **k)
    try:
        yield
    finally:
        torch.Tensor.__pow__, torch.Tensor.sqrt, torch.sqrt = orig_pow, orig_method, orig_fn


def dummy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth elementwise stand-in for the U-Net, float32 throughout."""
    tf = t.to(torch.float32)
    return 0.8 * x * torch.cos(tf / 300.0) + 0.3 * torch.sin(x + tf / 1000.0)


def _jsonable(v: Any) -> Any:
    """JSON-safe: tuples -> lists, tensors/arrays -> lists, and non-finite floats (DPM-Solver's
    lambda_min_clipped = -inf) -> the strings "Infinity" / "-Infinity" / "NaN", which strict JSON lacks."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        # diffusers' _use_default_values is built from a set: its order changes between runs
        return {k: sorted(x) if k == "_use_default_values" else _jsonable(x) for k, x in v.items()}
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def run_case(case: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import diffusers

    cls = getattr(diffusers, case["class_name"])
    sched = cls.from_config(case["config"])
    steps = case["steps"]
    sched.set_timesteps(steps, device="cpu")
    seed = case["seed"]

    gen = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn(SHAPE, generator=gen, dtype=torch.float32)
    init_sigma = sched.init_noise_sigma
    sample = noise * init_sigma

    step_params = inspect.signature(sched.step).parameters
    kwargs = dict(case["step_kwargs"])
    if "generator" in step_params:
        kwargs["generator"] = gen

    samples, inputs, outputs, prevs = [], [], [], []
    timesteps = sched.timesteps.clone()
    for t in timesteps:
        samples.append(sample)
        model_in = sched.scale_model_input(sample, t)
        model_out = dummy_model(model_in, t)
        prev = sched.step(model_out, t, sample, **kwargs).prev_sample
        inputs.append(model_in)
        outputs.append(model_out)
        prevs.append(prev)
        sample = prev
    samples.append(sample)
    if not torch.isfinite(sample).all():
        raise RuntimeError(f"{case['id']}: non-finite final sample")

    # img2img: add_noise on a fresh scheduler at call index k
    k = len(timesteps) // 2
    fresh = cls.from_config(case["config"])
    fresh.set_timesteps(steps, device="cpu")
    if hasattr(fresh, "set_begin_index"):
        fresh.set_begin_index(k)
    gen2 = torch.Generator("cpu").manual_seed(seed + 1)
    x0 = torch.randn(SHAPE, generator=gen2, dtype=torch.float32)
    an_noise = torch.randn(SHAPE, generator=gen2, dtype=torch.float32)
    an_out = fresh.add_noise(x0, an_noise, fresh.timesteps[k : k + 1])

    tensors: dict[str, torch.Tensor] = {
        "timesteps": timesteps.to(torch.float32),
        "initial_noise": noise,
        "samples": torch.stack(samples),
        "model_inputs": torch.stack(inputs),
        "model_outputs": torch.stack(outputs),
        "add_noise_in": x0,
        "add_noise_noise": an_noise,
        "add_noise_out": an_out,
    }
    # The 1000-entry training schedule is stored once per distinct schedule config (fixture size).
    schedule_key = json.dumps(_jsonable({k: case["config"].get(k) for k in ("beta_schedule", "beta_start", "beta_end", "rescale_betas_zero_snr", "trained_betas")}), sort_keys=True) + case["class_name"] + str(case["id"].endswith("crsqrt"))
    if schedule_key not in _SCHEDULES_SEEN:
        _SCHEDULES_SEEN.add(schedule_key)
        tensors["betas"] = sched.betas.to(torch.float32)
        tensors["alphas_cumprod"] = sched.alphas_cumprod.to(torch.float32)
    sigmas = getattr(sched, "sigmas", None)
    if isinstance(sigmas, torch.Tensor):
        tensors["sigmas"] = sigmas.to(torch.float32)

    meta = {
        "class_name": case["class_name"],
        "short": case["short"],
        "input_config": _jsonable(case["config"]),
        "config": _jsonable(dict(sched.config)),
        "steps": steps,
        "seed": seed,
        "shape": SHAPE,
        "init_noise_sigma": float(init_sigma),
        "order": sched.order,
        "num_model_calls": len(timesteps),
        "timesteps_dtype": str(timesteps.dtype).replace("torch.", ""),
        "step_kwargs": case["step_kwargs"],
        "draws_noise": "generator" in step_params,
        "add_noise_index": k,
        "add_noise_timestep": float(fresh.timesteps[k]),
        "model": "0.8*x*cos(t/300) + 0.3*sin(x + t/1000), float32, x = model input",
    }
    return tensors, meta


def generate(ctx: RefContext) -> None:
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()  # from_config warns about SD 1.5 keys a class does not use
    torch.manual_seed(0)
    index = {}
    for case in CASES:
        with correctly_rounded_sqrt() if case["sqrt"] == "correctly-rounded" else contextlib.nullcontext():
            tensors, meta = run_case(case)
        meta["sqrt"] = case["sqrt"]
        ctx.save(case["id"], tensors, meta)
        index[case["id"]] = meta
    # every case's meta again inside the scheduler/ folder, so the folder is self-describing
    ctx.save_json("scheduler:index", {"format": "sd-harness-scheduler-traces/1", "cases": index})
    print(f"[scheduler_refs] {len(CASES)} cases", flush=True)
