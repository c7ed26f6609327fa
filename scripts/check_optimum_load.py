"""Check that the exported ONNX folders load and run in optimum's ORT pipelines, which is what
users already have on disk: txt2img, img2img (vae_encoder's latent_parameters) and inpainting.

    .venv/bin/python scripts/check_optimum_load.py fixtures/models
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main(models: Path) -> int:
    from optimum.onnxruntime import (
        ORTStableDiffusionImg2ImgPipeline,
        ORTStableDiffusionInpaintPipeline,
        ORTStableDiffusionPipeline,
    )

    image = Image.fromarray((np.indices((64, 64)).sum(0) % 256).astype(np.uint8)).convert("RGB")
    mask = Image.fromarray(((np.indices((64, 64))[1] > 32) * 255).astype(np.uint8)).convert("L")
    runs = [
        (ORTStableDiffusionPipeline, "tiny-sd-onnx", {}),
        (ORTStableDiffusionImg2ImgPipeline, "tiny-sd-onnx", {"image": image, "strength": 0.6}),
        (ORTStableDiffusionInpaintPipeline, "tiny-sd-inpaint-onnx", {"image": image, "mask_image": mask, "height": 64, "width": 64}),
    ]
    for cls, folder, extra in runs:
        pipe = cls.from_pretrained(str(models / folder))
        pipe.set_progress_bar_config(disable=True)
        out = pipe("a vase of flowers", num_inference_steps=4, output_type="np", **extra)
        assert np.isfinite(out.images).all()
        print(f"ok  {cls.__name__:36s} {folder}: image {out.images.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures/models")))
