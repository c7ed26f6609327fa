"""Reference draws of torch's CPU generator: `torch.randn(shape, generator=g, dtype=float32)`.

Every case is one fresh `torch.Generator("cpu").manual_seed(seed)` drawing one or more tensors in a
row, stored in draw order as `draw0`, `draw1`, ... (a single draw is just `draw0`). The seed is part
of the case name (`seed<decimal>`) and of the manifest meta, with the shapes.

Which float32 Box-Muller kernel torch runs for tensors of >= 16 elements depends on the CPU
capability torch picks at start-up (ATen's dispatch stubs): AVX2 runs `normal_fill_16_AVX2`
(avx_mathfun.h polynomials), DEFAULT and AVX512 run the generic `normal_fill_16` (libm logf/cosf/
sinf), and the two differ in the last bits. So the draws are made in child processes with
ATEN_CPU_CAPABILITY pinned before torch starts: the main cases with "avx2" (reproducible on any
x86-64 with AVX2, whatever the machine's best capability), and a few `-cpudefault` cases with
"default". The capability the child actually reported is recorded in the meta; the avx2 cases are
skipped, with a warning, on a machine whose torch cannot run AVX2 kernels. The small preset
(small_cases) draws only a few avx2 cases, at the model's own latent shapes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

# (name, seed, [shape, ...]) drawn from one generator in order.
Case = tuple[str, int, list[list[int]]]

SEEDS = [0, 1, 42, 1234, 2**32 - 1, 2**32 + 5, 2**63 - 1, 2**64 - 1]


def _shape_name(shape: list[int]) -> str:
    return "x".join(str(d) for d in shape)


def avx2_cases() -> list[Case]:
    cases: list[Case] = []
    single = [
        (42, [1, 4, 8, 8]),  # the tiny model's latents at 64x64 pixels
        (0, [2, 4, 8, 8]),  # batch 2 from one generator
        (42, [1, 4, 16, 8]),
        (42, [1]),  # < 16 elements: serial double-precision path
        (42, [3]),
        (42, [15]),
        (42, [16]),  # exactly one Box-Muller block
        (42, [17]),  # one block plus a redrawn, overlapping tail window
        (42, [4, 5, 7]),  # 140 = 8 * 16 + 12
        (42, [1, 4, 64, 64]),  # SD 1.5 at 512x512
        (7, [1, 4, 96, 96]),  # SD 1.5 at 768x768
    ]
    for seed in SEEDS:
        for shape in ([1, 4, 8, 8], [4, 5, 7], [3]):
            if (seed, shape) not in single:
                single.append((seed, shape))
    for seed, shape in single:
        cases.append((f"seed{seed}-{_shape_name(shape)}", seed, [shape]))
    # One generator across calls, as a stochastic scheduler uses it every step. The small draws
    # leave a cached normal on the generator that the next small draw starts with, while the
    # >= 16 path ignores the cache.
    cases.append(("seed42-seq-3-20-5-64", 42, [[3], [20], [5], [64]]))
    cases.append(("seed1234-seq-mixed", 1234, [[1], [17], [1], [1], [7], [16], [2, 3], [33], [15]]))
    # Initial latents, then per-step noise of the same shape (an ancestral sampler, 5 steps).
    cases.append(("seed42-seq-latents-5-steps", 42, [[1, 4, 8, 8]] * 6))
    return cases


def default_cases() -> list[Case]:
    return [
        ("seed42-1x4x8x8-cpudefault", 42, [[1, 4, 8, 8]]),
        ("seed42-4x5x7-cpudefault", 42, [[4, 5, 7]]),
        ("seed42-1x4x64x64-cpudefault", 42, [[1, 4, 64, 64]]),
        ("seed0-seq-3-20-5-64-cpudefault", 0, [[3], [20], [5], [64]]),
    ]


def small_cases(geo) -> list[Case]:
    """A few draws at the model's own latent shapes (make_references.py --preset small)."""
    s = geo.default_size
    latents = geo.latent_shape(1, s, s)
    odd = geo.latent_shape(1, s + geo.vae_factor, s // 2)  # a width that is an odd multiple of the VAE factor
    cases: list[Case] = [
        (f"seed42-{_shape_name(latents)}", 42, [latents]),
        (f"seed0-{_shape_name(geo.latent_shape(2, s, s))}", 0, [geo.latent_shape(2, s, s)]),
        (f"seed7-{_shape_name(odd)}", 7, [odd]),
        ("seed42-3", 42, [[3]]),
        ("seed42-17", 42, [[17]]),
        ("seed42-seq-latents-3-steps", 42, [latents] * 4),
    ]
    return cases


def _draw(cases: list[Case]) -> dict[str, Any]:
    """Run in the child: make every case's draws with the capability the environment pinned."""
    out: dict[str, Any] = {"capability": torch.backends.cpu.get_cpu_capability(), "torch": str(torch.__version__)}
    draws: dict[str, list[torch.Tensor]] = {}
    for name, seed, shapes in cases:
        g = torch.Generator(device="cpu").manual_seed(seed)
        draws[name] = [torch.randn(shape, generator=g, dtype=torch.float32, device="cpu") for shape in shapes]
    out["draws"] = draws
    return out


def _run_child(cases: list[Case], capability: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "draws.pt"
        spec = Path(tmp) / "cases.json"
        spec.write_text(json.dumps([[name, str(seed), shapes] for name, seed, shapes in cases]))
        env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
        subprocess.run([sys.executable, str(Path(__file__).resolve()), str(spec), str(result)], env=env, check=True)
        return torch.load(result, weights_only=True)


def generate(ctx) -> None:
    if ctx.small:
        plan = [("avx2", "avx2", small_cases(ctx.geometry()), "AVX2")]
    else:
        plan = [("avx2", "avx2", avx2_cases(), "AVX2"), ("default", "default", default_cases(), "NO AVX")]
    for kind, capability, cases, expect in plan:
        res = _run_child(cases, capability)
        got = res["capability"]
        if got != expect:
            print(f"[rng_refs] warning: ATEN_CPU_CAPABILITY={capability} gave capability {got!r}, "
                  f"not {expect!r}; skipping the {kind} cases", flush=True)
            continue
        by_name = {c[0]: c for c in cases}
        for name, tensors in res["draws"].items():
            _, seed, shapes = by_name[name]
            ctx.save(
                f"rng:{name}",
                {f"draw{i}": t for i, t in enumerate(tensors)},
                {
                    "seed": str(seed),
                    "shapes": shapes,
                    "generator": "torch.Generator('cpu').manual_seed(seed)",
                    "call": "torch.randn(shape, generator=g, dtype=torch.float32) per shape, in order",
                    "normal_kernel": "normal_fill_16_AVX2" if kind == "avx2" else "normal_fill_16 (generic)",
                    "aten_cpu_capability": got,
                    "torch": res["torch"],
                },
            )


if __name__ == "__main__":
    # Child mode: python rng_refs.py CASES.json OUT.pt (ATEN_CPU_CAPABILITY set by the parent);
    # CASES.json lists [name, seed as a decimal string, shapes] (seeds can exceed a double's range).
    spec, dest = sys.argv[1], sys.argv[2]
    cases = [(name, int(seed), shapes) for name, seed, shapes in json.loads(Path(spec).read_text())]
    torch.save(_draw(cases), dest)
