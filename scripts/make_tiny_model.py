"""Build the tiny SD 1.x fixtures: SD 1.x's real topology with small widths, seeded.

    python scripts/make_tiny_model.py --out fixtures/models

writes tiny-sd/ and tiny-sd-inpaint/ (diffusers format, PyTorch safetensors) and, via
export_onnx.py, tiny-sd-onnx/ and tiny-sd-inpaint-onnx/ (the folder layout optimum writes).

Topology as SD 1.x: U-Net with 3x CrossAttnDownBlock2D + DownBlock2D and the mirrored up blocks,
layers_per_block 2, mid-block attention, cross_attention_dim = the text encoder's hidden size;
a four-block VAE with 4 latent channels, x8 downsampling and scaling_factor 0.18215; a CLIP text
encoder with 77 positions and the real 49408-token vocabulary. Only the widths are small.
Initialisation: every norm gets weight 1 + N(0, 0.1) and bias N(0, 0.05), every other bias
N(0, 0.02), so no layer is an identity or a zero that would hide a fault; the output convolutions
are rescaled so the U-Net predicts noise of roughly unit std and the VAE decodes into [-1, 1].
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip_tokenizer_files import check_tokenizer, write_tokenizer  # noqa: E402

SEED = 20261125
TEXT_HIDDEN = 8  # the 49408 x hidden token embedding dominates the fixture's size

# SD 1.5's scheduler_config.json, written out.
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def text_encoder_config() -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=4 * TEXT_HIDDEN,
        num_hidden_layers=4,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        projection_dim=TEXT_HIDDEN,
    )


def unet_config(in_channels: int) -> dict:
    return dict(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=2,
        attention_head_dim=8,
        cross_attention_dim=TEXT_HIDDEN,
        norm_num_groups=8,
    )


def vae_config() -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.18215,
    )


@torch.no_grad()
def perturb_init(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Give every norm and bias a non-trivial value (see the module docstring)."""
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        is_norm = any(k in name for k in ("norm", "layer_norm", "ln_"))
        if is_norm and leaf == "weight" and p.ndim == 1:
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
        elif leaf == "bias":
            p.copy_((0.05 if is_norm else 0.02) * torch.randn(p.shape, generator=gen))


@torch.no_grad()
def build(seed: int, in_channels: int):
    # One generator per component, so the text encoder and VAE are identical across the txt2img
    # and inpainting variants (the inpainting folders share them) and only the U-Net differs.
    torch.manual_seed(seed)
    text = CLIPTextModel(text_encoder_config()).eval()
    perturb_init(text, torch.Generator().manual_seed(seed + 10))
    torch.manual_seed(seed + 1 + in_channels)
    unet = UNet2DConditionModel(**unet_config(in_channels)).eval()
    perturb_init(unet, torch.Generator().manual_seed(seed + 11 + in_channels))
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(**vae_config()).eval()
    perturb_init(vae, torch.Generator().manual_seed(seed + 12))

    # Calibrate output scales on a fixed probe so the loop behaves like a trained model's.
    probe_gen = torch.Generator().manual_seed(seed + 13)
    ids = torch.full((1, 77), 49407, dtype=torch.long)
    ids[0, :6] = torch.tensor([49406, 320, 8853, 539, 550, 49407])
    emb = text(ids)[0]
    probe = torch.randn((1, in_channels, 8, 8), generator=probe_gen)
    eps = unet(probe, 500, emb).sample
    unet.conv_out.weight.mul_(1.0 / eps.std())
    unet.conv_out.bias.mul_(1.0 / eps.std())
    vae_probe = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(seed + 14))
    img = vae.decode(vae_probe / 0.18215).sample
    vae.decoder.conv_out.weight.mul_(0.5 / img.std())
    vae.decoder.conv_out.bias.mul_(0.5 / img.std())
    return text, unet, vae


def save_pytorch(dest: Path, text, unet, vae, inpaint: bool, tok_dir: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    scheduler = PNDMScheduler.from_config(SD15_SCHEDULER)
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipe = cls(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(dest), safe_serialization=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("fixtures/models"))
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    tok_dir = args.out / ".tokenizer-build"
    write_tokenizer(tok_dir)
    check_tokenizer(tok_dir)
    for name, in_ch in (("tiny-sd", 4), ("tiny-sd-inpaint", 9)):
        text, unet, vae = build(SEED, in_ch)
        save_pytorch(args.out / name, text, unet, vae, inpaint=in_ch == 9, tok_dir=tok_dir)
        print(f"wrote {args.out / name}")
    shutil.rmtree(tok_dir)
    if not args.no_onnx:
        from export_onnx import export_folder

        for name in ("tiny-sd", "tiny-sd-inpaint"):
            export_folder(args.out / name, args.out / f"{name}-onnx")
            print(f"wrote {args.out / f'{name}-onnx'}")
    share_identical(args.out / "tiny-sd", args.out / "tiny-sd-inpaint", ["text_encoder", "vae", "tokenizer", "scheduler"])
    if not args.no_onnx:
        share_identical(args.out / "tiny-sd", args.out / "tiny-sd-onnx", ["tokenizer", "scheduler"])
        share_identical(args.out / "tiny-sd-onnx", args.out / "tiny-sd-inpaint-onnx",
                        ["text_encoder", "vae_encoder", "vae_decoder", "tokenizer", "scheduler"])
    return 0


def share_identical(base: Path, variant: Path, parts: list[str]) -> None:
    """Replace the variant's copies of parts identical to base's by relative symlinks (fixture size)."""
    import filecmp

    for part in parts:
        a, b = base / part, variant / part
        cmp = filecmp.dircmp(a, b)
        if cmp.left_only or cmp.right_only or cmp.diff_files or not filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)[0] == cmp.common_files:
            raise SystemExit(f"{b} differs from {a}; the variants were meant to share it")
        shutil.rmtree(b)
        b.symlink_to(Path("..") / base.name / part, target_is_directory=True)


if __name__ == "__main__":
    sys.exit(main())
