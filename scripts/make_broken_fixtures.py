"""Build the small "broken input" fixtures the reliability tests use (fixtures/broken/):

    .venv/bin/python scripts/make_broken_fixtures.py --out fixtures/broken

Deterministic (no randomness; fixed onnx ir/opset versions), a few KB in all. The tests copy
fixtures/models/tiny-sd-onnx to a temporary folder and overlay or break parts of it there; only
what cannot be made in TypeScript without an ONNX writer is made here:

  sdxl-like/unet/model.onnx       a tiny graph whose inputs are SDXL's U-Net inputs (sample, timestep,
                                  encoder_hidden_states, text_embeds, time_ids); out_sample = 0.1 sample
  fast-unet/model.onnx            the same with SD 1.x's inputs: loads in milliseconds where the tiny
                                  U-Net takes seconds, for CLI tests that are not about the U-Net
  sdxl-like/model_index.json      StableDiffusionXLPipeline with text_encoder_2 / tokenizer_2
  sd2-like/...config.json         SD 2.x configs: cross_attention_dim 1024, attention_head_dim a list,
                                  use_linear_projection, CLIP-H text encoder (hidden 1024), v-prediction
  external-data/vae_decoder/      a tiny valid VAE decoder whose weights live in model.onnx_data
                                  (latent_sample [b,4,h,w] -> 1x1 conv -> x8 nearest upsample -> tanh;
                                  the conv weight and a 4 KB table are external, small constants inline)
  truncated/model.onnx            the first 60% of the same decoder saved inline
  zero-byte/model.onnx            an empty file
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


def save(model: onnx.ModelProto, path: Path, **kw) -> None:
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), **kw)


def identity_unet(sdxl: bool) -> onnx.ModelProto:
    """out_sample = 0.1 * sample; SD 1.x's inputs, or SDXL's with text_embeds and time_ids."""
    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("sample", f, ["batch", 4, "height", "width"]),
        helper.make_tensor_value_info("timestep", f, [1]),
        helper.make_tensor_value_info("encoder_hidden_states", f, ["batch", 77, 2048 if sdxl else "dim"]),
    ]
    if sdxl:
        inputs += [
            helper.make_tensor_value_info("text_embeds", f, ["batch", 1280]),
            helper.make_tensor_value_info("time_ids", f, ["batch", 6]),
        ]
    out = helper.make_tensor_value_info("out_sample", f, ["batch", 4, "height", "width"])
    nodes = [helper.make_node("Mul", ["sample", "k"], ["out_sample"])]
    k = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "k")
    graph = helper.make_graph(nodes, "sdxl_like_unet" if sdxl else "identity_unet", inputs, [out], [k])
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="make_broken_fixtures",
    )


def tiny_decoder() -> onnx.ModelProto:
    f = TensorProto.FLOAT
    # deterministic weights: 3 output channels from the 4 latent channels, plus a bias
    w = (np.arange(3 * 4 * 16, dtype=np.float32).reshape(3, 4 * 16)[:, :4] / 100.0 - 0.05).reshape(3, 4, 1, 1)
    b = np.array([0.01, -0.02, 0.03], dtype=np.float32)
    # a larger table (never used in the output's value, only added as zero) so the external file and
    # the truncated model have a body worth cutting
    pad = np.zeros((1, 3, 1, 1), dtype=np.float32)
    big = np.linspace(-1, 1, 1024, dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["latent_sample", "W", "B"], ["conv"], kernel_shape=[1, 1]),
        helper.make_node("ReduceSum", ["big_table"], ["big_sum"], keepdims=0),
        helper.make_node("Mul", ["big_sum", "zero"], ["zero_sum"]),
        helper.make_node("Add", ["conv", "zero_sum"], ["conv2"]),
        helper.make_node("Add", ["conv2", "pad"], ["conv3"]),
        helper.make_node("Resize", ["conv3", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Tanh", ["up"], ["sample"]),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(b, "B"),
        numpy_helper.from_array(pad, "pad"),
        numpy_helper.from_array(big, "big_table"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array([1, 1, 8, 8], dtype=np.float32), "scales"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_vae_decoder",
        [helper.make_tensor_value_info("latent_sample", f, ["batch", 4, "h", "w"])],
        [helper.make_tensor_value_info("sample", f, ["batch", 3, "H", "W"])],
        inits,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="make_broken_fixtures",
    )


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="fixtures/broken")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)

    save(identity_unet(sdxl=True), out / "sdxl-like" / "unet" / "model.onnx")
    save(identity_unet(sdxl=False), out / "fast-unet" / "model.onnx")
    write_json(
        out / "sdxl-like" / "model_index.json",
        {
            "_class_name": "StableDiffusionXLPipeline",
            "_diffusers_version": "0.35.2",
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "text_encoder": ["diffusers", "OnnxRuntimeModel"],
            "text_encoder_2": ["diffusers", "OnnxRuntimeModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "OnnxRuntimeModel"],
            "vae_decoder": ["diffusers", "OnnxRuntimeModel"],
            "vae_encoder": ["diffusers", "OnnxRuntimeModel"],
        },
    )

    # SD 2.x (stabilityai/stable-diffusion-2-1-base and -2-1): the keys that set it apart from 1.x
    write_json(
        out / "sd2-like" / "unet" / "config.json",
        {
            "_class_name": "UNet2DConditionModel",
            "attention_head_dim": [5, 10, 20, 20],
            "block_out_channels": [320, 640, 1280, 1280],
            "cross_attention_dim": 1024,
            "in_channels": 4,
            "out_channels": 4,
            "sample_size": 96,
            "use_linear_projection": True,
            "upcast_attention": True,
        },
    )
    write_json(
        out / "sd2-like" / "text_encoder" / "config.json",
        {
            "architectures": ["CLIPTextModel"],
            "hidden_size": 1024,
            "num_hidden_layers": 23,
            "max_position_embeddings": 77,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-05,
        },
    )
    write_json(
        out / "sd2-like" / "scheduler" / "scheduler_config.json",
        {
            "_class_name": "DDIMScheduler",
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "clip_sample": False,
            "num_train_timesteps": 1000,
            "prediction_type": "v_prediction",
            "set_alpha_to_one": False,
            "steps_offset": 1,
        },
    )

    dec = tiny_decoder()
    # onnx compares sys.getsizeof(raw_data) (data + ~33 bytes) with the threshold: 80 moves W (48 bytes)
    # and big_table out and keeps the constants shape inference must read (scales) inline
    dec_file = out / "external-data" / "vae_decoder" / "model.onnx"
    save(
        dec,
        dec_file,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx_data",
        size_threshold=80,
    )
    external = sorted(
        t.name
        for t in onnx.load(str(dec_file), load_external_data=False).graph.initializer
        if t.data_location == TensorProto.EXTERNAL
    )
    assert external == ["W", "big_table"], external
    inline = tiny_decoder().SerializeToString()
    (out / "truncated").mkdir(parents=True, exist_ok=True)
    (out / "truncated" / "model.onnx").write_bytes(inline[: int(len(inline) * 0.6)])
    (out / "zero-byte").mkdir(parents=True, exist_ok=True)
    (out / "zero-byte" / "model.onnx").write_bytes(b"")

    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total} bytes)")


if __name__ == "__main__":
    main()
