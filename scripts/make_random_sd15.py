"""Build the full Stable Diffusion 1.5 architecture with seeded random weights, for benchmarks.

    .venv/bin/python scripts/make_random_sd15.py [--out DIR] [--force]

writes DIR/pytorch (a diffusers folder, fp32 safetensors, ~4.3 GB) and DIR/onnx (the optimum
ONNX layout, via export_onnx.export_folder; the U-Net's weights in unet/model.onnx_data), where
DIR defaults to ${SD_HARNESS_CACHE:-$HOME/.cache/sd-harness}/sd15-random. Each half ends with a
marker file (.complete) naming the configuration; a half whose marker matches is not rebuilt.

The configurations below are SD 1.5's published ones (runwayml/stable-diffusion-v1-5, the
unet/vae/text_encoder config.json and scheduler_config.json), written out because the hub is
unreachable here. Only the weights are random (seeded): the operator graph, shapes and FLOPs are
SD 1.5's, which is what a speed / memory benchmark needs. As in make_tiny_model.py the norms and
biases are perturbed and the output convolutions rescaled on a probe, so the sampling loop and
the decoder see values of a trained model's magnitude (no NaN / inf / denormal slow paths).

Peak RAM: everything is built and stored in fp32, one component at a time (each freed once
saved); the export then loads the saved folder, and its peak is the U-Net's TorchScript export.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

# SD 1.5's published scheduler config and the non-trivial norm/bias initialisation are shared with the tiny model
from make_tiny_model import SD15_SCHEDULER, perturb_init

SEED = 20261215

# runwayml/stable-diffusion-v1-5 unet/config.json
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)

# runwayml/stable-diffusion-v1-5 vae/config.json
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

# openai/clip-vit-large-patch14's text tower, as SD 1.5's text_encoder/config.json
SD15_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    attention_dropout=0.0,
    dropout=0.0,
    initializer_factor=1.0,
    initializer_range=0.02,
    projection_dim=768,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

MARKER = ".complete"


def default_out() -> Path:
    root = os.environ.get("SD_HARNESS_CACHE") or str(Path.home() / ".cache" / "sd-harness")
    return Path(root) / "sd15-random"


def config_tag() -> str:
    blob = json.dumps([SEED, SD15_UNET, SD15_VAE, SD15_TEXT, SD15_SCHEDULER], sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_done(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("config") == config_tag()
    except (OSError, ValueError):
        return False


def mark_done(folder: Path, **info) -> None:
    (folder / MARKER).write_text(json.dumps({"config": config_tag(), **info}, indent=2) + "\n")


def rss_gb() -> float:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
    except Exception:  # pragma: no cover
        return float("nan")


@torch.no_grad()
def rescale_output(conv: torch.nn.Conv2d, probe_out: torch.Tensor, target_std: float, what: str) -> None:
    """Scale an output convolution so the probe's output has `target_std` (unit-std noise for the
    U-Net, images inside [-1, 1] for the VAE), as a trained model's outputs would be."""
    s = float(probe_out.std())
    if not (s > 0 and s < float("inf")):
        raise SystemExit(f"{what} probe output std is {s}; the random initialisation is unusable")
    conv.weight.mul_(target_std / s)
    conv.bias.mul_(target_std / s)


@torch.no_grad()
def build_pytorch(dest: Path) -> None:
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from clip_tokenizer_files import check_tokenizer, write_tokenizer

    t0 = time.time()
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    write_tokenizer(dest / "tokenizer")
    check_tokenizer(dest / "tokenizer")
    tok = CLIPTokenizer.from_pretrained(str(dest / "tokenizer"))
    PNDMScheduler.from_config(SD15_SCHEDULER).save_pretrained(str(dest / "scheduler"))

    # Text encoder: built, perturbed, saved, and its probe embedding kept for the U-Net's calibration.
    torch.manual_seed(SEED)
    text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT)).eval()  # bos 0 / eos 2 / pad 1, as published
    perturb_init(text, torch.Generator().manual_seed(SEED + 10))
    ids = tok(
        ["a photograph of an astronaut riding a horse"],
        padding="max_length",
        max_length=77,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    emb = text(ids)[0].clone()
    text.save_pretrained(str(dest / "text_encoder"), safe_serialization=True)
    del text
    gc.collect()
    print(f"text encoder saved ({time.time() - t0:.0f} s, peak RSS {rss_gb():.1f} GB)", flush=True)

    # U-Net: calibrated on a small probe (32x32 latents) so it predicts noise of about unit std.
    torch.manual_seed(SEED + 1)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    perturb_init(unet, torch.Generator().manual_seed(SEED + 11))
    probe = torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(SEED + 13))
    eps = unet(probe, 500, emb).sample
    rescale_output(unet.conv_out, eps, 1.0, "U-Net")
    unet.save_pretrained(str(dest / "unet"), safe_serialization=True)
    n_unet = sum(p.numel() for p in unet.parameters())
    del unet, eps
    gc.collect()
    print(f"unet saved: {n_unet / 1e6:.0f} M params ({time.time() - t0:.0f} s, peak RSS {rss_gb():.1f} GB)", flush=True)

    # VAE: the decoder's output rescaled to about 0.5 std, i.e. images inside [-1, 1].
    torch.manual_seed(SEED + 2)
    vae = AutoencoderKL(**SD15_VAE).eval()
    perturb_init(vae, torch.Generator().manual_seed(SEED + 12))
    lat = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(SEED + 14))
    img = vae.decode(lat / SD15_VAE["scaling_factor"]).sample
    rescale_output(vae.decoder.conv_out, img, 0.5, "VAE")
    vae.save_pretrained(str(dest / "vae"), safe_serialization=True)
    del vae, img
    gc.collect()

    import diffusers

    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (dest / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    mark_done(dest, seed=SEED, unet_params=n_unet, seconds=round(time.time() - t0), peak_rss_gb=round(rss_gb(), 2))
    print(f"wrote {dest} ({time.time() - t0:.0f} s, peak RSS {rss_gb():.1f} GB)", flush=True)


def build_onnx(src: Path, dest: Path) -> None:
    from export_onnx import export_folder

    t0 = time.time()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    export_folder(src, dest)
    gc.collect()
    mark_done(dest, seconds=round(time.time() - t0), peak_rss_gb=round(rss_gb(), 2))
    print(f"wrote {dest} ({time.time() - t0:.0f} s, peak RSS {rss_gb():.1f} GB)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=default_out())
    ap.add_argument("--force", action="store_true", help="rebuild even when the markers say done")
    ap.add_argument("--no-onnx", action="store_true", help="build the PyTorch folder only")
    args = ap.parse_args()
    pt, ox = args.out / "pytorch", args.out / "onnx"
    if args.force or not is_done(pt):
        build_pytorch(pt)
        if ox.exists():
            shutil.rmtree(ox)  # exported from older weights
    else:
        print(f"{pt}: up to date")
    if args.no_onnx:
        return 0
    if args.force or not is_done(ox):
        # A separate process, so the export's peak does not stack on the build's freed-but-held heap.
        if os.environ.get("SD_HARNESS_SAME_PROCESS") == "1":
            build_onnx(pt, ox)
        else:
            import subprocess

            rc = subprocess.call([sys.executable, __file__, "--export-only", str(pt), str(ox)])
            if rc != 0:
                return rc
    else:
        print(f"{ox}: up to date")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--export-only":
        build_onnx(Path(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
