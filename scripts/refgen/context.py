"""Shared writer for reference sets: one safetensors file per case plus a manifest entry.

Case ids are stable strings `stage:case` (for example `unet:euler-64x64-step07`); the file name is
the id with ':' replaced by '/', so `unet/euler-64x64-step07.safetensors`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.numpy import save_file


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return np.ascontiguousarray(t.numpy())
    return np.ascontiguousarray(np.asarray(value))


@dataclass(frozen=True)
class Geometry:
    """The sizes a diffusers SD 1.x folder allows, from its configs (as the pipeline derives them)."""

    vae_factor: int  # 2 ** (len(vae.block_out_channels) - 1)
    unet_factor: int  # 2 ** (number of U-Net down-samplers): latents must divide by it
    latent_channels: int
    default_size: int  # unet.sample_size * vae_factor, the pipeline's default width and height

    @property
    def size_step(self) -> int:
        """Image sizes valid for the model are multiples of this."""
        return self.vae_factor * self.unet_factor

    def latent_shape(self, batch: int, width: int, height: int) -> list[int]:
        return [batch, self.latent_channels, height // self.vae_factor, width // self.vae_factor]

    @staticmethod
    def of(model_dir: Path) -> "Geometry":
        vae = json.loads((model_dir / "vae" / "config.json").read_text(encoding="utf-8"))
        unet = json.loads((model_dir / "unet" / "config.json").read_text(encoding="utf-8"))
        vae_factor = 2 ** (len(vae["block_out_channels"]) - 1)
        return Geometry(
            vae_factor=vae_factor,
            unet_factor=2 ** (len(unet["down_block_types"]) - 1),
            latent_channels=int(vae["latent_channels"]),
            default_size=int(unet["sample_size"]) * vae_factor,
        )


@dataclass
class RefContext:
    out_dir: Path
    model_dir: Path | None
    device: torch.device
    dtype: torch.dtype
    cases: list[dict[str, Any]] = field(default_factory=list)
    only: list[str] | None = None
    preset: str = "full"  # "full" | "small" | "sd15-ci" (make_references.py --preset)
    float64: bool = True  # also run each model stage in float64 and record the floor (--no-float64: not)

    @property
    def small(self) -> bool:
        return self.preset == "small"

    @property
    def sd15(self) -> bool:
        return self.preset == "sd15-ci"

    def geometry(self) -> "Geometry":
        if self.model_dir is None:
            raise ValueError("this stage needs --model")
        return Geometry.of(self.model_dir)

    def wants(self, stage: str) -> bool:
        return self.only is None or stage in self.only

    def save(self, case_id: str, tensors: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Path:
        """Write one case: named tensors -> <out>/<stage>/<case>.safetensors, recorded in the manifest."""
        stage, _, name = case_id.partition(":")
        if not stage or not name or "/" in name:
            raise ValueError(f"bad case id {case_id!r}")
        path = self.out_dir / stage / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: _to_numpy(v) for k, v in tensors.items()}
        save_file(arrays, str(path))
        self._record(case_id, stage, path, meta, {k: [str(a.dtype), list(a.shape)] for k, a in arrays.items()})
        return path

    def save_json(self, case_id: str, obj: Any, meta: Mapping[str, Any] | None = None) -> Path:
        stage, _, name = case_id.partition(":")
        path = self.out_dir / stage / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        self._record(case_id, stage, path, meta, None)
        return path

    def _record(self, case_id: str, stage: str, path: Path, meta: Mapping[str, Any] | None, tensors: Any) -> None:
        if any(c["id"] == case_id for c in self.cases):
            raise ValueError(f"duplicate case id {case_id!r}")
        entry: dict[str, Any] = {
            "id": case_id,
            "stage": stage,
            "file": path.relative_to(self.out_dir).as_posix(),
            "sha256": sha256_file(path),
        }
        if tensors is not None:
            entry["tensors"] = tensors
        if meta:
            entry["meta"] = dict(meta)
        self.cases.append(entry)
