"""The float32 floor as a spread, and the loops' amplification (make_references.py; --no-float64
leaves both out).

One float32 run against float64 is one sample of PyTorch's own rounding error. Other float32
computations of the same stage are just as correct and land elsewhere: another thread count
(reductions split differently), oneDNN off (convolutions and matmuls through ATen's own kernels,
another summation order), and the same inputs nudged by one float32 ulp each (what one rounding
of every input costs, the stage's conditioning). A port on another CPU is one more such
computation. Each variant's error against the float64 run is stored per compared tensor
(`meta.float32_spread = {variant: {tensor: {relL2, relL2Ref}}}`, relL2Ref against the float32
reference), and the runner divides by the envelope of all of them, not by the one sample.

The loops (end-to-end runs and the free-running U-Net that shares their floors) also store their
amplification (`meta.amplification`): two float64 runs whose initial latents differ by one float32
ulp, their relL2 after every step divided by the initial one. A loop that amplifies a one-ulp
change a thousandfold turns every float32 rounding on its way into drift of that size.
"""
from __future__ import annotations

import contextlib
import platform
from typing import Any, Callable, Iterator, Mapping

import torch

from .float64 import F64

# The seed of the one-ulp perturbation's signs: fixed, so the set is reproducible.
ULP_SEED = 20261207


def rel_l2(a: Any, b: Any) -> float:
    x = torch.as_tensor(a).detach().cpu().to(F64)
    y = torch.as_tensor(b).detach().cpu().to(F64)
    if x.shape != y.shape:
        raise ValueError(f"float32 spread: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    nd, nb = float((x - y).norm()), float(y.norm())
    return nd / nb if nb > 0 else (0.0 if nd == 0 else float("inf"))


def ulp_perturb(t: torch.Tensor, salt: int = 0) -> torch.Tensor:
    """Every element moved one float32 ulp up or down, the direction drawn from a seeded generator."""
    x = t.detach().to(torch.float32)
    gen = torch.Generator("cpu").manual_seed(ULP_SEED + salt)
    up = torch.rand(x.shape, generator=gen) < 0.5
    target = torch.where(up.to(x.device), torch.full_like(x, float("inf")), torch.full_like(x, float("-inf")))
    return torch.nextafter(x, target).to(t.dtype)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _no_mkldnn() -> Iterator[None]:
    with torch.backends.mkldnn.flags(enabled=False):
        yield


@contextlib.contextmanager
def _plain() -> Iterator[None]:
    yield


def variants(device: torch.device) -> dict[str, tuple[Callable[[], Any], bool]]:
    """name -> (a context for the recomputation, whether the inputs are nudged by one ulp).

    On a GPU the thread count and oneDNN do not apply; the one-ulp variant does.
    """
    out: dict[str, tuple[Callable[[], Any], bool]] = {}
    if device.type == "cpu":
        if torch.get_num_threads() > 1:
            out["threads1"] = (lambda: _threads(1), False)
        out["no-onednn"] = (_no_mkldnn, False)
    out["ulp"] = (_plain, True)
    return out


def spread_entry(variant_out: Mapping[str, Any], ref32: Mapping[str, Any], ref64: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{tensor: variant's tensor} -> {tensor: {relL2 against float64, relL2Ref against the float32 reference}}."""
    return {name: {"relL2": rel_l2(t, ref64[name]), "relL2Ref": rel_l2(t, ref32[name])} for name, t in variant_out.items()}


def amplification(steps_a: list[torch.Tensor], steps_b: list[torch.Tensor], init_a: torch.Tensor, init_b: torch.Tensor) -> dict[str, Any]:
    """Two float64 runs from initial latents one ulp apart: the initial relL2 and the relL2 after each step."""
    return {
        "input_relL2": rel_l2(init_b, init_a),
        "steps_relL2": [rel_l2(b, a) for a, b in zip(steps_a, steps_b)],
    }


def cpu_description() -> dict[str, Any]:
    """The machine that computed the set: CPU model and the ISA features that change kernels."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16"]
    info: dict[str, Any] = {
        "model": model,
        "isa": [f for f in wanted if f in flags],
        "os": f"{platform.system()} {platform.release()}",
        "threads": torch.get_num_threads(),
    }
    try:
        info["aten_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        pass
    return info
