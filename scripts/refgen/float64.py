"""The float64 floor: each float32 reference tensor's own error against a float64 PyTorch run of the
same stage on the same inputs (make_references.py; --no-float64 leaves it out).

The floor is stored per case in the manifest (`meta.float64_floor = {tensor: {relL2, maxAbs,
meanAbs}}`, scalars only), keyed by the names the conformance runner compares, so the runner can
state a port's drift in units of PyTorch's own float32 error. Nothing here touches the float32
tensors: the float64 models are copies, and every random draw a float64 run makes is the float32
draw of the same generator, cast (`float32_draws`), so both runs see the same noise.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator, Mapping

import torch

F64 = torch.float64


def floor_metrics(ref32: Any, ref64: Any) -> dict[str, float]:
    """The float32 reference's error against float64: relL2 = ||a - b|| / ||b||, max and mean |a - b|."""
    a = torch.as_tensor(ref32).detach().cpu().to(F64)
    b = torch.as_tensor(ref64).detach().cpu().to(F64)
    if a.shape != b.shape:
        raise ValueError(f"float64 floor: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    d = (a - b).abs()
    nb = float(b.norm())
    nd = float(d.norm())
    return {
        "relL2": nd / nb if nb > 0 else (0.0 if nd == 0 else float("inf")),
        "maxAbs": float(d.max()) if d.numel() else 0.0,
        "meanAbs": float(d.mean()) if d.numel() else 0.0,
    }


def floors(pairs: Mapping[str, tuple[Any, Any]]) -> dict[str, dict[str, float]]:
    """{tensor name: (float32 reference, float64 run)} -> {tensor name: floor metrics}."""
    return {name: floor_metrics(a, b) for name, (a, b) in pairs.items()}


def as_float64(module: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of a module (the float32 original is left as it is)."""
    return copy.deepcopy(module).to(F64).eval()


def _causal_mask(input_shape, dtype, device, past_key_values_length: int = 0, sliding_window=None):
    """transformers' causal mask for CLIP, built in the requested dtype.

    transformers 4.57 fills it with `torch.full(..., torch.finfo(dtype).min)` without a dtype, so
    for float64 the fill value overflows the default float32 and the text model cannot run. Same
    mask otherwise: 0 on and below the diagonal, the dtype's minimum above it.
    """
    if past_key_values_length or sliding_window:
        raise NotImplementedError("float64 CLIP mask: no past key values or sliding window in SD 1.x")
    b, n = input_shape[0], input_shape[-1]
    mask = torch.full((n, n), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)
    return mask[None, None].expand(b, 1, n, n)


@contextlib.contextmanager
def clip_float64_mask() -> Iterator[None]:
    """Run transformers' CLIP text model with a causal mask in its own dtype (see _causal_mask)."""
    from transformers.models.clip import modeling_clip

    original = modeling_clip._create_4d_causal_attention_mask
    modeling_clip._create_4d_causal_attention_mask = _causal_mask
    try:
        yield
    finally:
        modeling_clip._create_4d_causal_attention_mask = original


@contextlib.contextmanager
def float32_draws() -> Iterator[None]:
    """torch.randn for a float64 tensor draws float32 (the same generator calls) and casts.

    diffusers draws through torch.randn (randn_tensor): the initial noise, the VAE latent sample,
    the ancestral schedulers' per-step noise. A float64 draw would be other numbers, so the float64
    run would not be the same computation; with this, both runs consume the generator alike.
    """
    original = torch.randn

    def randn(*args, **kwargs):
        if kwargs.get("dtype") is F64:
            return original(*args, **{**kwargs, "dtype": torch.float32}).to(F64)
        return original(*args, **kwargs)

    torch.randn = randn
    try:
        yield
    finally:
        torch.randn = original
