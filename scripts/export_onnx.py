"""Export a diffusers SD 1.x folder (PyTorch) to the ONNX folder layout optimum writes:

    model_index.json, text_encoder/model.onnx, unet/model.onnx (+ model.onnx_data when over 2 GB),
    vae_encoder/model.onnx, vae_decoder/model.onnx, tokenizer/, scheduler/, each part's config.json

with optimum's input / output names: text_encoder(input_ids:int32) -> last_hidden_state,
pooler_output, hidden_states.0..N (for clip skip); unet(sample, timestep, encoder_hidden_states)
-> out_sample; vae_encoder(sample) -> latent_parameters (mean and log-variance, 2x latent
channels); vae_decoder(latent_sample) -> sample.

The timestep is exported as float32, as diffusers' own ONNX conversion does, so the fractional
timesteps of Euler / LMS / Heun / Karras schedules reach the time embedding unrounded (an int64
timestep input, as some exports have, truncates them; the loader supports both).
Uses the TorchScript exporter (dynamo=False), opset 17.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

OPSET = 17


class TextEncoderWrapper(torch.nn.Module):
    def __init__(self, model: CLIPTextModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        out = self.model(input_ids=input_ids.to(torch.int64), output_hidden_states=True)
        return (out.last_hidden_state, out.pooler_output, *out.hidden_states)


class UNetWrapper(torch.nn.Module):
    def __init__(self, model: UNet2DConditionModel):
        super().__init__()
        self.model = model

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.model(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class VaeEncoderWrapper(torch.nn.Module):
    def __init__(self, model: AutoencoderKL):
        super().__init__()
        self.model = model

    def forward(self, sample):
        # The raw moments (mean, logvar) before DiagonalGaussianDistribution's clamp.
        h = self.model.encoder(sample)
        return self.model.quant_conv(h) if self.model.quant_conv is not None else h


class VaeDecoderWrapper(torch.nn.Module):
    def __init__(self, model: AutoencoderKL):
        super().__init__()
        self.model = model

    def forward(self, latent_sample):
        return self.model.decode(latent_sample, return_dict=False)[0]


def _export(
    module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    _fold_external_data(path)


def _fold_external_data(path: Path) -> None:
    """Keep models under protobuf's 2 GB limit in one file; larger ones get model.onnx_data."""
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    for node in model.graph.node:
        node.doc_string = ""  # the exporter's Python stack traces: bulk, and machine-specific paths
    size = sum(t.ByteSize() for t in model.graph.initializer)
    for f in path.parent.glob("*"):
        if f.name != path.name and f.suffix != ".json":
            f.unlink()
    if size > 1_800_000_000:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="model.onnx_data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))


def export_folder(src: Path, dst: Path, height: int | None = None, width: int | None = None) -> None:
    text = CLIPTextModel.from_pretrained(str(src / "text_encoder")).eval()
    unet = UNet2DConditionModel.from_pretrained(str(src / "unet")).eval()
    vae = AutoencoderKL.from_pretrained(str(src / "vae")).eval()
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)

    n_layers = text.config.num_hidden_layers
    seq = text.config.max_position_embeddings
    ids = torch.full((1, seq), text.config.eos_token_id, dtype=torch.int32)  # a valid id for any vocabulary size
    _export(
        TextEncoderWrapper(text),
        (ids,),
        dst / "text_encoder" / "model.onnx",
        ["input_ids"],
        ["last_hidden_state", "pooler_output", *[f"hidden_states.{i}" for i in range(n_layers + 1)]],
        {
            "input_ids": {0: "batch_size", 1: "sequence_length"},
            "last_hidden_state": {0: "batch_size", 1: "sequence_length"},
            "pooler_output": {0: "batch_size"},
            **{f"hidden_states.{i}": {0: "batch_size", 1: "sequence_length"} for i in range(n_layers + 1)},
        },
    )

    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    lat_h = (height or unet.config.sample_size * scale) // scale
    lat_w = (width or unet.config.sample_size * scale) // scale
    sample = torch.randn(2, unet.config.in_channels, lat_h, lat_w)
    timestep = torch.tensor([981.0], dtype=torch.float32)
    ehs = torch.randn(2, seq, text.config.hidden_size)
    _export(
        UNetWrapper(unet),
        (sample, timestep, ehs),
        dst / "unet" / "model.onnx",
        ["sample", "timestep", "encoder_hidden_states"],
        ["out_sample"],
        {
            "sample": {0: "batch_size", 2: "height", 3: "width"},
            "timestep": {0: "steps"},
            "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
            "out_sample": {0: "batch_size", 2: "height", 3: "width"},
        },
    )

    image = torch.randn(1, 3, lat_h * scale, lat_w * scale)
    _export(
        VaeEncoderWrapper(vae),
        (image,),
        dst / "vae_encoder" / "model.onnx",
        ["sample"],
        ["latent_parameters"],
        {
            "sample": {0: "batch_size", 2: "height", 3: "width"},
            "latent_parameters": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
        },
    )
    latent = torch.randn(1, vae.config.latent_channels, lat_h, lat_w)
    _export(
        VaeDecoderWrapper(vae),
        (latent,),
        dst / "vae_decoder" / "model.onnx",
        ["latent_sample"],
        ["sample"],
        {
            "latent_sample": {0: "batch_size", 2: "height_latent", 3: "width_latent"},
            "sample": {0: "batch_size", 2: "height", 3: "width"},
        },
    )

    # configs beside each part, as optimum writes them
    shutil.copy(src / "text_encoder" / "config.json", dst / "text_encoder" / "config.json")
    shutil.copy(src / "unet" / "config.json", dst / "unet" / "config.json")
    shutil.copy(src / "vae" / "config.json", dst / "vae_encoder" / "config.json")
    shutil.copy(src / "vae" / "config.json", dst / "vae_decoder" / "config.json")
    shutil.copytree(src / "tokenizer", dst / "tokenizer")
    shutil.copytree(src / "scheduler", dst / "scheduler")
    index = json.loads((src / "model_index.json").read_text())
    for k in ("safety_checker", "feature_extractor", "image_encoder"):
        index[k] = [None, None] if k in index else index.get(k)
        if index[k] is None:
            del index[k]
    index["vae_encoder"] = ["diffusers", "OnnxRuntimeModel"]
    index["vae_decoder"] = ["diffusers", "OnnxRuntimeModel"]
    index["text_encoder"] = ["diffusers", "OnnxRuntimeModel"]
    index["unet"] = ["diffusers", "OnnxRuntimeModel"]
    index.pop("vae", None)
    (dst / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    args = ap.parse_args()
    export_folder(args.src, args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
