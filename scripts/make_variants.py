#!/usr/bin/env python3
"""Correct variations of an exported SD 1.x ONNX folder, for the conformance suite to judge.

Each variation computes the same function as the export it is made from, so it must pass the
same reference set under the fp32 profile:

  ortopt      onnxruntime's transformer optimizer (onnxruntime.transformers.optimizer) with its
              CPU fusions, float32: model_type clip / unet / vae per component, use_gpu False,
              opt_level 0 (the Python fusions only; onnxruntime's own graph optimizations are the
              other variation, made by the tests with onnxruntime-node). Fusions whose contrib ops
              have no CPU kernel (GroupNorm, SkipGroupNorm, NhwcConv, BiasSplitGelu, BiasAdd,
              packed QKV / KV attention) are switched off. This is scripts/optimize.py's
              `attention` pass (fuse_attention), called here per component.
  opset<N>    the PyTorch model re-exported with opset N: by scripts/export_onnx.py (its default
              17; it has no opset option, so its OPSET constant is set here), or with
              --exporter optimum by `optimum-cli export onnx --opset N` (for folders optimum made;
              export_onnx.py traces the text encoder with id 49407, which a smaller vocabulary lacks).

Components a variation leaves byte-identical (tokenizer, scheduler, configs) are relative symlinks
to the source folder. Every written model is loaded and run once in onnxruntime (CPU) here.

    .venv/bin/python scripts/make_variants.py --onnx fixtures/models/tiny-sd-onnx \\
        --pytorch fixtures/models/tiny-sd --out /tmp/variants --name tiny-sd --opsets 14,18

writes /tmp/variants/tiny-sd-ortopt-onnx, tiny-sd-opset14-onnx, tiny-sd-opset18-onnx and prints
each folder's path and the op types each fusion produced.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx

import common.telemetry_off  # noqa: F401  (before onnxruntime)
import onnxruntime as ort

from optimize import ATTENTION_MODEL_TYPES, fuse_attention

# the components and the transformer optimizer's model type for each: optimize.py's
PARTS = ATTENTION_MODEL_TYPES


def link_or_copy(src: Path, dst: Path) -> None:
    """A relative symlink to src's real path (or a copy of a file when links are refused)."""
    real = src.resolve()
    try:
        os.symlink(os.path.relpath(real, dst.parent), dst)
    except OSError:
        if real.is_dir():
            shutil.copytree(real, dst)
        else:
            shutil.copy(real, dst)


def smoke_run(path: Path) -> None:
    """Load the model in onnxruntime (CPU) and run it once on small inputs of its declared types."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        dims = [d if isinstance(d, int) else (77 if "sequence" in str(d) else 1) for d in i.shape]
        if i.name == "sample" and len(dims) == 4:
            dims = [1, dims[1] if isinstance(dims[1], int) else 4, 8, 8]
            if "vae" in str(path.parent.name):
                dims = [1, 3, 64, 64]
        if i.name == "latent_sample":
            dims = [1, dims[1] if isinstance(dims[1], int) else 4, 8, 8]
        if i.name == "encoder_hidden_states":
            dims = [1, 77, dims[2]]
        if i.name == "timestep":
            dims = [] if len(i.shape) == 0 else [1]  # optimum's exports take a scalar
        kind = i.type
        # token ids: 0 is in every vocabulary (the small fixtures' tokenizers have fewer than 49408)
        if "int64" in kind:
            feeds[i.name] = np.zeros(dims, dtype=np.int64)
        elif "int32" in kind:
            feeds[i.name] = np.zeros(dims, dtype=np.int32)
        else:
            feeds[i.name] = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    outs = sess.run(None, feeds)
    if not all(np.isfinite(o).all() for o in outs if o.dtype.kind == "f"):
        raise SystemExit(f"{path}: non-finite output in the smoke run")


def make_ortopt(src: Path, dst: Path) -> dict[str, str]:
    """optimize.py's attention pass on every component, nothing else (its fusions, its CPU-only checks)."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    fused: dict[str, str] = {}
    for entry in sorted(src.iterdir()):
        if entry.name not in PARTS:
            link_or_copy(entry, dst / entry.name)
    for part in PARTS:
        model = src / part / "model.onnx"
        if not model.exists():
            continue
        (dst / part).mkdir()
        for f in sorted((src / part).iterdir()):
            if f.name not in ("model.onnx", "model.onnx_data"):
                link_or_copy(f, dst / part / f.name)
        out = dst / part / "model.onnx"
        fused[part] = fuse_attention(model, out, part)
        smoke_run(out)
    return fused


def make_opset(pytorch: Path, dst: Path, opset: int, exporter: str) -> None:
    if exporter == "optimum":
        import subprocess

        cli = Path(sys.executable).parent / "optimum-cli"
        shutil.rmtree(dst, ignore_errors=True)
        subprocess.run(
            [
                str(cli),
                "export",
                "onnx",
                "--model",
                str(pytorch),
                "--task",
                "text-to-image",
                "--opset",
                str(opset),
                str(dst),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    else:
        import export_onnx

        export_onnx.OPSET = opset
        export_onnx.export_folder(pytorch, dst)
    for part in PARTS:
        model = dst / part / "model.onnx"
        if model.exists():
            got = {o.domain or "ai.onnx": o.version for o in onnx.load(str(model)).opset_import}
            if got.get("ai.onnx") != opset:
                raise SystemExit(f"{model}: opset {got}, wanted {opset}")
            smoke_run(model)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", type=Path, help="exported ONNX folder (for ortopt)")
    ap.add_argument("--pytorch", type=Path, help="diffusers PyTorch folder it was exported from (for opset<N>)")
    ap.add_argument("--out", type=Path, required=True, help="folder the variations are written into")
    ap.add_argument("--name", required=True, help="prefix of the written folders, e.g. tiny-sd")
    ap.add_argument("--opsets", default="14,18", help="comma-separated opsets to re-export with ('' for none)")
    ap.add_argument(
        "--exporter", choices=["export_onnx", "optimum"], default="export_onnx", help="what re-exports for opset<N>"
    )
    ap.add_argument("--no-ortopt", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_ortopt:
        if not args.onnx:
            ap.error("--onnx is needed for the ortopt variation")
        dst = args.out / f"{args.name}-ortopt-onnx"
        fused = make_ortopt(args.onnx, dst)
        print(dst)
        for part, ops in fused.items():
            print(f"  {part}: new op types: {ops}")
    for opset in [int(x) for x in args.opsets.split(",") if x.strip()]:
        if not args.pytorch:
            ap.error("--pytorch is needed for the opset variations")
        dst = args.out / f"{args.name}-opset{opset}-onnx"
        make_opset(args.pytorch, dst, opset, args.exporter)
        print(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
