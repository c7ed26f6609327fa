"""Check that ONNX fixture folders load and run in optimum's ORT pipelines, which is what users
already have on disk: txt2img, img2img (vae_encoder's latent_parameters) and inpainting; and print
each folder's ONNX signature (opset, input / output names, dtypes and shapes per component), which
shows how an export differs from optimum's own (fixtures/models/tiny-sd-optimum-onnx).

    .venv/bin/python scripts/check_optimum_load.py fixtures/models
    .venv/bin/python scripts/check_optimum_load.py fixtures/models --signatures tiny-sd-onnx tiny-sd-optimum-onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import common.telemetry_off  # noqa: F401  (before onnxruntime)

COMPONENTS = ["text_encoder", "unet", "vae_encoder", "vae_decoder"]
# folder -> pipelines to run it in (the inpainting one only for 9-channel U-Nets)
FOLDERS = {
    "tiny-sd-onnx": ["txt2img", "img2img"],
    "tiny-sd-inpaint-onnx": ["inpaint"],
    "tiny-sd-optimum-onnx": ["txt2img", "img2img"],
    "tiny-sd-3block-linear-onnx": ["txt2img", "img2img"],
    "tiny-sd-2block-euler-onnx": ["txt2img", "img2img"],
    "tiny-sd-legacy-pndm-onnx": ["txt2img", "img2img"],
}


def signature(folder: Path) -> list[str]:
    """One line per component: opset, then name:dtype[dims] of every input and output."""
    import onnx
    from onnx import TensorProto

    def values(vs) -> str:
        out = []
        for v in vs:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append(f"{v.name}:{TensorProto.DataType.Name(t.elem_type).lower()}{dims}")
        return ", ".join(out)

    lines = []
    for part in COMPONENTS:
        path = folder / part / "model.onnx"
        if not path.exists():
            lines.append(f"  {part}: absent")
            continue
        m = onnx.load(str(path), load_external_data=False)
        opset = ",".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in m.opset_import)
        lines.append(f"  {part}: opset {opset}, producer {m.producer_name} {m.producer_version}")
        lines.append(f"    in : {values(m.graph.input)}")
        lines.append(f"    out: {values(m.graph.output)}")
    return lines


def run_pipelines(models: Path, names: list[str]) -> None:
    from diffusers.utils import logging as dlogging
    from optimum.onnxruntime import (
        ORTStableDiffusionImg2ImgPipeline,
        ORTStableDiffusionInpaintPipeline,
        ORTStableDiffusionPipeline,
    )

    dlogging.set_verbosity_error()  # the safety-checker notice, once per pipeline
    classes = {
        "txt2img": ORTStableDiffusionPipeline,
        "img2img": ORTStableDiffusionImg2ImgPipeline,
        "inpaint": ORTStableDiffusionInpaintPipeline,
    }
    image = Image.fromarray((np.indices((64, 64)).sum(0) % 256).astype(np.uint8)).convert("RGB")
    mask = Image.fromarray(((np.indices((64, 64))[1] > 32) * 255).astype(np.uint8)).convert("L")
    extra = {
        "txt2img": {},
        "img2img": {"image": image, "strength": 0.6},
        "inpaint": {"image": image, "mask_image": mask, "height": 64, "width": 64},
    }
    for folder in names:
        for kind in FOLDERS[folder]:
            cls = classes[kind]
            pipe = cls.from_pretrained(str(models / folder))
            pipe.set_progress_bar_config(disable=True)
            out = pipe("a vase of flowers", num_inference_steps=4, output_type="np", **extra[kind])
            assert np.isfinite(out.images).all()
            print(
                f"ok  {cls.__name__:36s} {folder}: image {out.images.shape}, scheduler {type(pipe.scheduler).__name__}"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", type=Path, nargs="?", default=Path("fixtures/models"))
    ap.add_argument("--folders", default=",".join(FOLDERS), help="comma list (default: every ONNX fixture)")
    ap.add_argument(
        "--signatures",
        nargs="*",
        default=None,
        help="only print the ONNX signatures of these folders (default folders: all of --folders)",
    )
    args = ap.parse_args(argv)
    names = args.folders.split(",")
    if args.signatures is not None:
        for name in args.signatures or names:
            print(name)
            print("\n".join(signature(args.models / name)))
        return 0
    run_pipelines(args.models, [n for n in names if (args.models / n).exists()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
