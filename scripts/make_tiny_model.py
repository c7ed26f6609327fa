"""Build the tiny SD 1.x fixtures: SD 1.x's real topology with small widths, seeded.

    python scripts/make_tiny_model.py --out fixtures/models                # tiny-sd, tiny-sd-inpaint
    python scripts/make_tiny_model.py --out fixtures/models --models all   # and the further geometries

writes <name>/ (diffusers format, PyTorch safetensors; not committed: rebuilt bit for bit by this
script, see scripts/make_fixtures.sh) and, via export_onnx.py, <name>-onnx/ (the folder layout
optimum writes) for each preset in PRESETS. Parts identical to an earlier model's become relative
symlinks to it (checked byte for byte first).

tiny-sd: topology as SD 1.x: U-Net with 3x CrossAttnDownBlock2D + DownBlock2D and the mirrored up
blocks, layers_per_block 2, mid-block attention, cross_attention_dim = the text encoder's hidden
size; a four-block VAE with 4 latent channels, x8 downsampling and scaling_factor 0.18215; a CLIP
text encoder with 77 positions and the real 49408-token vocabulary. Only the widths are small.
tiny-sd-inpaint is its 9-channel inpainting twin. The further presets vary the geometry (block
counts, head counts, projections, latent channels, VAE factor and scaling factor) or ship a
legacy scheduler config; each says why beside its definition.
Initialisation: every norm gets weight 1 + N(0, 0.1) and bias N(0, 0.05), every other bias
N(0, 0.02), so no layer is an identity or a zero that would hide a fault; the output convolutions
are rescaled so the U-Net predicts noise of roughly unit std and the VAE decodes into [-1, 1].
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from clip_tokenizer_files import check_tokenizer, write_tokenizer

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

# An early SD 1.x scheduler_config.json (as the first v1-4 upload had it): steps_offset 0 and
# clip_sample true. diffusers' pipelines correct both when they are built (steps_offset -> 1,
# clip_sample -> False, with a deprecation warning), so a pipeline that reads the file literally
# runs the timesteps 900...0 where diffusers runs 901...1.
LEGACY_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 0,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

# An SD 1.x folder whose default scheduler is Euler (as community fine-tunes ship it).
EULER_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


def text_encoder_config(
    hidden: int = TEXT_HIDDEN, layers: int = 4, heads: int = 2, vocab_size: int = 49408
) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        projection_dim=hidden,
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


@dataclass(frozen=True)
class Preset:
    """One fixture model: its configs, seeds, scheduler, and what its folders share with others."""

    name: str
    unet: dict
    vae: dict
    text: dict = field(default_factory=dict)  # text_encoder_config() arguments
    scheduler: dict = field(default_factory=lambda: SD15_SCHEDULER)
    seed: int = SEED  # U-Net and VAE
    text_seed: int = SEED  # the same text encoder weights wherever the text config is the same
    # parts replaced by relative symlinks to an identical, earlier built folder (fixture size):
    # (base model, parts) for the PyTorch folder and for the ONNX folder
    torch_shares: tuple[str, tuple[str, ...]] | None = None
    onnx_shares: tuple[str, tuple[str, ...]] | None = None
    # exported by scripts/export_optimum.sh (optimum's exporter) instead of export_onnx.py
    optimum_export: bool = False

    @property
    def vocab_size(self) -> int:
        return self.text.get("vocab_size", 49408)

    @property
    def inpaint(self) -> bool:
        return self.unet["in_channels"] == 9


PRESETS = {
    p.name: p
    for p in [
        Preset("tiny-sd", unet_config(4), vae_config()),
        Preset(
            "tiny-sd-inpaint",
            unet_config(9),
            vae_config(),
            torch_shares=("tiny-sd", ("text_encoder", "vae", "tokenizer", "scheduler")),
            onnx_shares=("tiny-sd", ("text_encoder", "vae_encoder", "vae_decoder", "tokenizer", "scheduler")),
        ),
        # Geometry A: per-block head counts (attention_head_dim as a list: diffusers reads it as the
        # number of heads, and the mid block takes the LAST entry, here the attention-free block's),
        # linear projections in the transformers, a 3-block U-Net whose last block has no attention, a
        # 3-block VAE (x4, so sizes step by 4 * 4 = 16) with SD-XL's scaling factor. Channels per head:
        # 8 / 2 = 4 and 16 / 2 = 8 in the down / up blocks, 16 / 4 = 4 in the mid block; cross-attention
        # from the text encoder's 8 to 8 and 16 channels. The text encoder is tiny-sd's (its 49408-token
        # embedding is most of a fixture's size), so the ONNX folder shares it.
        Preset(
            "tiny-sd-3block-linear",
            seed=SEED + 100,
            unet=dict(
                sample_size=8,
                in_channels=4,
                out_channels=4,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                block_out_channels=(8, 16, 16),
                layers_per_block=1,
                attention_head_dim=(2, 2, 4),
                use_linear_projection=True,
                cross_attention_dim=TEXT_HIDDEN,
                norm_num_groups=8,
            ),
            vae=dict(
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3,
                block_out_channels=(8, 16, 16),
                layers_per_block=1,
                latent_channels=4,
                norm_num_groups=8,
                sample_size=32,
                scaling_factor=0.13025,
            ),
            onnx_shares=("tiny-sd", ("text_encoder", "tokenizer", "scheduler")),
        ),
        # Geometry B: a 2-block U-Net (one down-sampler, so sizes step by 8 * 2 = 16), two layers per
        # block, 8 latent channels (the VAE's moments are 16 channels), Euler as the folder's scheduler,
        # a default size of 32 x 32 (sample_size 4).
        # tiny-sd's text encoder again (a new one would cost 0.8 MB of embedding).
        Preset(
            "tiny-sd-2block-euler",
            seed=SEED + 200,
            unet=dict(
                sample_size=4,
                in_channels=8,
                out_channels=8,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                block_out_channels=(8, 16),
                layers_per_block=2,
                attention_head_dim=2,
                cross_attention_dim=TEXT_HIDDEN,
                norm_num_groups=8,
            ),
            vae=dict(
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(8, 8, 8, 16),
                layers_per_block=1,
                latent_channels=8,
                norm_num_groups=8,
                sample_size=32,
                scaling_factor=0.18215,
            ),
            scheduler=EULER_SCHEDULER,
            onnx_shares=("tiny-sd", ("text_encoder", "tokenizer")),
        ),
        # The tiny model's weights with a legacy scheduler_config.json that diffusers' pipelines correct.
        # The detection fixture: no blind spot a weight can hide in. At its default 64 x 64 every U-Net
        # block sees at least 4 x 4 latent tokens (16 x 16 latents, x4 VAE, two down-samplers: the mid
        # block attends over 16 tokens, where tiny-sd's attends over one), attention heads are 8 and 16
        # channels wide, and the cross-attention reads a 32-wide text encoder (tiny-sd's is 8 wide:
        # its keys span 8 dimensions). A 1000-token vocabulary (CLIP's first 486 merges) keeps the
        # 32-wide token embedding at 128 kB. Its scheduler is PNDM with the PRK warm-up on
        # (skip_prk_steps false, the class default, which StableDiffusionPipeline leaves as it is),
        # so its end-to-end runs go through the Runge-Kutta steps no other fixture runs.
        Preset(
            "tiny-sd-wide",
            seed=SEED + 300,
            text_seed=SEED + 300,
            text=dict(hidden=32, layers=3, heads=2, vocab_size=1000),
            unet=dict(
                sample_size=16,
                in_channels=4,
                out_channels=4,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                block_out_channels=(16, 32, 32),
                layers_per_block=1,
                attention_head_dim=2,
                cross_attention_dim=32,
                norm_num_groups=8,
            ),
            vae=dict(
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3,
                block_out_channels=(16, 16, 32),
                layers_per_block=1,
                latent_channels=4,
                norm_num_groups=8,
                sample_size=64,
                scaling_factor=0.18215,
            ),
            scheduler={**SD15_SCHEDULER, "skip_prk_steps": False},
            optimum_export=True,
        ),
        Preset(
            "tiny-sd-legacy-pndm",
            unet_config(4),
            vae_config(),
            scheduler=LEGACY_SCHEDULER,
            torch_shares=("tiny-sd", ("text_encoder", "vae", "unet", "tokenizer")),
            onnx_shares=("tiny-sd", ("text_encoder", "vae_encoder", "vae_decoder", "unet", "tokenizer")),
        ),
    ]
}
DEFAULT_MODELS = ["tiny-sd", "tiny-sd-inpaint"]


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
def build(preset: Preset, probe_ids: list[int] | None = None):
    # One generator per component, so the text encoder and VAE are identical across the txt2img
    # and inpainting variants (the inpainting folders share them) and only the U-Net differs.
    seed, in_channels = preset.seed, preset.unet["in_channels"]
    torch.manual_seed(preset.text_seed)
    text = CLIPTextModel(text_encoder_config(**preset.text)).eval()
    perturb_init(text, torch.Generator().manual_seed(preset.text_seed + 10))
    torch.manual_seed(seed + 1 + in_channels)
    unet = UNet2DConditionModel(**preset.unet).eval()
    perturb_init(unet, torch.Generator().manual_seed(seed + 11 + in_channels))
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(**preset.vae).eval()
    perturb_init(vae, torch.Generator().manual_seed(seed + 12))

    # Calibrate output scales on a fixed probe so the loop behaves like a trained model's.
    probe_gen = torch.Generator().manual_seed(seed + 13)
    eos = preset.vocab_size - 1
    ids = torch.full((1, 77), eos, dtype=torch.long)
    # "a photograph of an" with bos / eos (SD 1.x's ids; a smaller vocabulary's own)
    head = [49406, 320, 8853, 539, 550, 49407] if probe_ids is None else probe_ids
    ids[0, : len(head)] = torch.tensor(head)
    emb = text(ids)[0]
    s = preset.unet["sample_size"]
    probe = torch.randn((1, in_channels, s, s), generator=probe_gen)
    eps = unet(probe, 500, emb).sample
    unet.conv_out.weight.mul_(1.0 / eps.std())
    unet.conv_out.bias.mul_(1.0 / eps.std())
    vae_probe = torch.randn(
        (1, preset.vae["latent_channels"], 8, 8), generator=torch.Generator().manual_seed(seed + 14)
    )
    img = vae.decode(vae_probe / preset.vae["scaling_factor"]).sample
    vae.decoder.conv_out.weight.mul_(0.5 / img.std())
    vae.decoder.conv_out.bias.mul_(0.5 / img.std())
    return text, unet, vae


def save_pytorch(dest: Path, preset: Preset, tok_dir: Path) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    probe = None if preset.vocab_size == 49408 else tokenizer("a photograph of an").input_ids
    text, unet, vae = build(preset, probe)
    shutil.rmtree(dest, ignore_errors=True)
    scheduler = getattr(diffusers, preset.scheduler["_class_name"]).from_config(preset.scheduler)
    cls = StableDiffusionInpaintPipeline if preset.inpaint else StableDiffusionPipeline
    pipe = cls(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(dest), safe_serialization=True)
    # save_pretrained writes the scheduler's config as the pipeline corrected it (steps_offset,
    # clip_sample); the folder must hold the file as the model ships it.
    config = json.loads((dest / "scheduler" / "scheduler_config.json").read_text())
    if any(config.get(k) != v for k, v in preset.scheduler.items() if k != "_class_name"):
        scheduler._internal_dict = type(scheduler.config)({**scheduler.config, **preset.scheduler})
        scheduler.save_pretrained(str(dest / "scheduler"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("fixtures/models"))
    ap.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma list out of {','.join(PRESETS)}, or 'all' (default: %(default)s)",
    )
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    args = ap.parse_args()
    names = list(PRESETS) if args.models == "all" else args.models.split(",")
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        ap.error(f"--models: unknown {unknown}; known: {list(PRESETS)}")
    for name in names:  # a model that shares parts needs its base built in the same run
        for shares in (PRESETS[name].torch_shares, PRESETS[name].onnx_shares):
            if shares and shares[0] not in names:
                ap.error(f"--models: {name} shares parts with {shares[0]}; build them together")
    torch.use_deterministic_algorithms(True)
    tok_dirs: dict[int, Path] = {}
    for size in sorted({PRESETS[n].vocab_size for n in names}):
        tok_dirs[size] = args.out / f".tokenizer-build-{size}"
        write_tokenizer(tok_dirs[size], size)
        check_tokenizer(tok_dirs[size], size)
    for name in names:
        save_pytorch(args.out / name, PRESETS[name], tok_dirs[PRESETS[name].vocab_size])
        print(f"wrote {args.out / name}")
    for d in tok_dirs.values():
        shutil.rmtree(d)
    if not args.no_onnx:
        from export_onnx import export_folder

        for name in names:
            if PRESETS[name].optimum_export:
                continue  # scripts/export_optimum.sh
            export_folder(args.out / name, args.out / f"{name}-onnx")
            print(f"wrote {args.out / f'{name}-onnx'}")
    for name in names:
        preset = PRESETS[name]
        if preset.torch_shares:
            base, parts = preset.torch_shares
            share_identical(args.out / base, args.out / name, list(parts))
        if preset.onnx_shares and not args.no_onnx:
            base, parts = preset.onnx_shares
            share_identical(args.out / f"{base}-onnx", args.out / f"{name}-onnx", list(parts))
    return 0


def share_identical(base: Path, variant: Path, parts: list[str]) -> None:
    """Replace the variant's copies of parts identical to base's by relative symlinks (fixture size)."""
    import filecmp

    for part in parts:
        a, b = base / part, variant / part
        cmp = filecmp.dircmp(a, b)
        if (
            cmp.left_only
            or cmp.right_only
            or cmp.diff_files
            or not filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)[0] == cmp.common_files
        ):
            raise SystemExit(f"{b} differs from {a}; the variants were meant to share it")
        shutil.rmtree(b)
        b.symlink_to(Path("..") / base.name / part, target_is_directory=True)


if __name__ == "__main__":
    sys.exit(main())
