"""Write test/fixtures/webgpu-conv-channels.onnx: the smallest graph that shows onnxruntime-web's
WebGPU Conv going wrong on the inpainting U-Net's conv_in (docs/other-runtimes.md).

    python scripts/make_webgpu_conv_repro.py

Two independent 3x3 Convs (pad 1, bias) on [1, C, 4, 4] inputs, 4 output channels each:
  conv9   C = 9  (the inpainting U-Net's input: latents 4 + mask 1 + masked-image latents 4)
  conv12  C = 12 (the control: same kernel, a channel count that is a multiple of 4)
onnxruntime-web 1.30's WebGPU Conv2dMM program reads C in vec3 steps when C is a multiple of 3 but
not of 4, and its generated x reader indexes the scalar input with `xCh / 4` (the vec4 path's
channel index) where it needs `xCh`: with C = 9 every output but those fed by channels 0-2 is wrong,
with C = 12 (vec4 path) the result is exact to float32. Weights are seeded and small; the file is
a few KB. test/webgpu-conv-repro.test.ts runs it on chromium-webgpu and chromium-wasm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent.parent / "test" / "fixtures" / "webgpu-conv-channels.onnx"


def conv(
    name: str, channels: int, rng: np.random.Generator
) -> tuple[onnx.NodeProto, list[onnx.TensorProto], onnx.ValueInfoProto, onnx.ValueInfoProto]:
    w = (rng.standard_normal((4, channels, 3, 3)) / np.sqrt(channels * 9)).astype(np.float32)
    b = (rng.standard_normal(4) * 0.1).astype(np.float32)
    node = helper.make_node(
        "Conv",
        [f"x_{name}", f"w_{name}", f"b_{name}"],
        [f"y_{name}"],
        name=name,
        pads=[1, 1, 1, 1],
        kernel_shape=[3, 3],
    )
    inits = [numpy_helper.from_array(w, f"w_{name}"), numpy_helper.from_array(b, f"b_{name}")]
    x = helper.make_tensor_value_info(f"x_{name}", TensorProto.FLOAT, [1, channels, 4, 4])
    y = helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, [1, 4, 4, 4])
    return node, inits, x, y


def main() -> None:
    rng = np.random.default_rng(2024)
    parts = [conv("conv9", 9, rng), conv("conv12", 12, rng)]
    graph = helper.make_graph(
        [p[0] for p in parts],
        "webgpu-conv-channels",
        [p[2] for p in parts],
        [p[3] for p in parts],
        [t for p in parts for t in p[1]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="sd-harness")
    model.ir_version = 8
    onnx.checker.check_model(model)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
