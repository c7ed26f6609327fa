"""Rewrite an SD 1.x ONNX folder for onnxruntime's CPU provider, float32 throughout.

    .venv/bin/python scripts/optimize.py SRC DST [--passes groupnorm,attention] [--components unet,vae_decoder,...]

Every pass keeps float32 and is judged by the suite's fp32 profile (bench/RESULTS.md, "Conformance at SD 1.5
size", has the measurements); every file of SRC it does not rewrite is symlinked (relative) into DST.

Passes:

  groupnorm   GroupNorm as exporters write it (Reshape to [N, G, -1] -> InstanceNormalization ->
              Reshape) runs in onnxruntime's InstanceNormalization kernel, which sums the
              C/G x H x W values of a group in one float32 pass. At SD 1.5 size that is up to
              4 x 512 x 512 = 1M values per group (the VAE's last up block): measured on one
              GroupNorm(32, 128) at 512 x 512 with activations of mean 1.5, relL2 to float64
              8.5e-6 in onnxruntime 1.30 against 4.5e-8 for PyTorch's float32 (190x); 3e-7 at
              64 x 64. Centring the input first does not help (the variance pass is the same
              single sum). The pass replaces each such InstanceNormalization with the same
              arithmetic in two levels: the group is viewed as [N, G, rows, W] (W = the input's
              last axis), each row is averaged, then the row means; the variance likewise from the
              centred values. Same example: 1.8e-7. Default on, for the VAE (the U-Net only
              when --components names it: see GROUPNORM_DEFAULT).
              Not rewritten: the GroupNormalization op of opset 18+ graphs (onnxruntime's kernel
              measured 1.06e-5 on the same example); the pass says how many it left.
  attention   onnxruntime's transformer optimizer (onnxruntime.transformers.optimizer, the Python
              fusions only, model_type unet / vae / clip, use_gpu False) with the fusions that
              have CPU kernels: Attention / MultiHeadAttention, LayerNormalization, Gelu, BiasGelu.
              GroupNorm, NhwcConv, BiasSplitGelu, BiasAdd and packed QKV are contrib ops with
              GPU kernels only and stay unfused. Off by default: see bench/RESULTS.md for its step time
              and drift at SD 1.5 size.

Weights over protobuf's 2 GB (SD 1.5's U-Net) stay in one side file, model.onnx_data. Each written
model is loaded and run once in onnxruntime (CPU) on a small input and must give finite outputs.

DST is written as a new folder beside it and renamed at the end: SIGINT, SIGTERM or an error leave
nothing (one line; exit 130 / 143 / 2). DST must not exist, nor lie inside SRC or contain it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

import common.telemetry_off  # noqa: F401  (before onnxruntime.transformers)
from quantize import (
    COMPONENTS,
    check_model_file,
    check_output,
    finalize,
    prepare_folder,
    run_cli,
    staged_output,
    verify,
)

PASSES = ("groupnorm", "attention")
DEFAULT_PASSES = ("groupnorm",)
# Where the groupnorm pass is needed: the VAE, whose groups hold up to 1M values at 512 x 512 (the
# export as written fails vae_roundtrip at SD 1.5 size). The U-Net's hold at most 41k at 64 x 64
# latents and pass as exported; rewriting them cost its step 20 % on an Intel Xeon with AVX-512
# (9.13 s vs 7.63 s with CFG) though it saved 9 % on AMD EPYC (bench/RESULTS.md), so it is opt-in
# there (--components unet,...).
GROUPNORM_DEFAULT = ("vae_decoder", "vae_encoder")
ATTENTION_MODEL_TYPES = {"text_encoder": "clip", "unet": "unet", "vae_decoder": "vae", "vae_encoder": "vae"}
# Fusions whose contrib ops have no CPU kernel in onnxruntime 1.30: left unfused.
GPU_ONLY_FUSIONS = (
    "enable_group_norm",
    "enable_skip_group_norm",
    "enable_nhwc_conv",
    "enable_bias_splitgelu",
    "enable_bias_add",
    "enable_packed_qkv",
    "enable_packed_kv",
)


def log(msg: str) -> None:
    print(f"optimize.py: {msg}", file=sys.stderr)


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line naming the flag or folder, exit 2 (no usage block; --help has it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"optimize.py: {message}\n")


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by name (the InstanceNormalization's scale / bias)."""
    out = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = n.attribute[0].t
    return out


def precise_groupnorm(model: onnx.ModelProto) -> int:
    """Replace every InstanceNormalization fed by a Reshape (the exporters' GroupNorm) with a
    two-level mean / variance. Returns how many were replaced."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    constants = constant_values(model)
    axes_as_input = default_opset(model) >= 18
    new_inits: list[onnx.TensorProto] = []
    shared = {
        "gn2/head": np.array([0, 0, -1], np.int64),
        "gn2/last_start": np.array([-1], np.int64),
        "gn2/last_end": np.array([np.iinfo(np.int64).max], np.int64),
    }
    if axes_as_input:  # opset 18+: ReduceMean takes its axes as an input
        shared |= {"gn2/axis2": np.array([2], np.int64), "gn2/axis3": np.array([3], np.int64)}
    nodes: list[onnx.NodeProto] = []
    replaced = 0
    for n in g.node:
        p = producer.get(n.input[0]) if n.op_type == "InstanceNormalization" else None
        if (
            p is None
            or p.op_type != "Reshape"
            or len(n.input) < 3
            or n.input[1] not in constants
            or n.input[2] not in constants
        ):
            nodes.append(n)
            continue
        scale = numpy_helper.to_array(constants[n.input[1]]).astype(np.float32)
        bias = numpy_helper.to_array(constants[n.input[2]]).astype(np.float32)
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        k = f"gn2/{replaced}"
        x, r = p.input[0], n.input[0]

        def mean(src: str, axis: int, dst: str) -> onnx.NodeProto:
            if axes_as_input:
                return helper.make_node("ReduceMean", [src, f"gn2/axis{axis}"], [dst], keepdims=1, name=dst)
            return helper.make_node("ReduceMean", [src], [dst], axes=[axis], keepdims=1, name=dst)

        new_inits.append(numpy_helper.from_array(np.array(eps, np.float32), f"{k}/eps"))
        nodes += [
            helper.make_node("Shape", [x], [f"{k}/xshape"], name=f"{k}/xshape"),
            helper.make_node("Slice", [f"{k}/xshape", "gn2/last_start", "gn2/last_end"], [f"{k}/w"], name=f"{k}/w"),
            helper.make_node("Concat", ["gn2/head", f"{k}/w"], [f"{k}/rows_shape"], axis=0, name=f"{k}/rows_shape"),
            helper.make_node("Reshape", [r, f"{k}/rows_shape"], [f"{k}/rows"], name=f"{k}/rows"),
            mean(f"{k}/rows", 3, f"{k}/row_mean"),
            mean(f"{k}/row_mean", 2, f"{k}/mean"),
            helper.make_node("Sub", [f"{k}/rows", f"{k}/mean"], [f"{k}/centred"], name=f"{k}/centred"),
            helper.make_node("Mul", [f"{k}/centred", f"{k}/centred"], [f"{k}/sq"], name=f"{k}/sq"),
            mean(f"{k}/sq", 3, f"{k}/row_var"),
            mean(f"{k}/row_var", 2, f"{k}/var"),
            helper.make_node("Add", [f"{k}/var", f"{k}/eps"], [f"{k}/var_eps"], name=f"{k}/var_eps"),
            helper.make_node("Sqrt", [f"{k}/var_eps"], [f"{k}/std"], name=f"{k}/std"),
            helper.make_node("Div", [f"{k}/centred", f"{k}/std"], [f"{k}/normed"], name=f"{k}/normed"),
        ]
        last = f"{k}/normed"
        groups = scale.size
        if not np.all(scale == 1):
            new_inits.append(numpy_helper.from_array(scale.reshape(groups, 1, 1), f"{k}/scale"))
            nodes.append(helper.make_node("Mul", [last, f"{k}/scale"], [f"{k}/scaled"], name=f"{k}/scaled"))
            last = f"{k}/scaled"
        if not np.all(bias == 0):
            new_inits.append(numpy_helper.from_array(bias.reshape(groups, 1, 1), f"{k}/bias"))
            nodes.append(helper.make_node("Add", [last, f"{k}/bias"], [f"{k}/biased"], name=f"{k}/biased"))
            last = f"{k}/biased"
        # back to the InstanceNormalization's own output shape, under its output name
        nodes += [
            helper.make_node("Shape", [r], [f"{k}/rshape"], name=f"{k}/rshape"),
            helper.make_node("Reshape", [last, f"{k}/rshape"], [n.output[0]], name=n.name or f"{k}/out"),
        ]
        replaced += 1
    if replaced:
        g.initializer.extend(numpy_helper.from_array(v, name) for name, v in shared.items())
        g.initializer.extend(new_inits)
        del g.node[:]
        g.node.extend(nodes)
    return replaced


def fuse_attention(src: Path, dst: Path, kind: str) -> str:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = ATTENTION_MODEL_TYPES[kind]
    options = FusionOptions(model_type)
    for attr in GPU_ONLY_FUSIONS:
        if hasattr(options, attr):
            setattr(options, attr, False)
    before = {n.op_type for n in onnx.load(str(src), load_external_data=False).graph.node}
    m = optimize_model(
        str(src),
        model_type=model_type,
        num_heads=0,
        hidden_size=0,
        opt_level=0,
        use_gpu=False,
        only_onnxruntime=False,
        optimization_options=options,
    )
    left = sorted(
        {n.op_type for n in m.model.graph.node if n.domain == "com.microsoft"}
        & {"GroupNorm", "NhwcConv", "SkipGroupNorm", "BiasSplitGelu", "BiasAdd"}
    )
    if left:
        raise SystemExit(f"optimize.py: {src}: the optimizer left ops with GPU kernels only: {left}")
    external = (src.parent / "model.onnx_data").exists()
    m.save_model_to_file(str(dst), use_external_data_format=external, all_tensors_to_one_file=True)
    after: dict[str, int] = {}
    for node in m.model.graph.node:
        after[node.op_type] = after.get(node.op_type, 0) + 1
    return ", ".join(f"{op} {count}" for op, count in sorted(after.items()) if op not in before) or "nothing fused"


def save(model: onnx.ModelProto, dst: Path, external: bool) -> None:
    if external:
        onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx_data")
    else:
        onnx.save(model, str(dst))


def write(src: Path, dst: Path, plans: dict[str, onnx.ModelProto], passes: list[str]) -> None:
    prepare_folder(src, dst, tuple(plans))
    for k, model in plans.items():
        external = (src / k / "model.onnx_data").exists()
        out = dst / k / "model.onnx"
        if external:
            # the rewritten graph still points at SRC's weights: load them in, then write DST's own side file
            onnx.load_external_data_for_model(model, str(src / k))
        save(model, out, external)
        if "attention" in passes:
            fused = fuse_attention(out, out, k)
            log(f"{k}: attention: {fused}")
        finalize(out, compact=False)
    verify(dst, tuple(plans))


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="SD 1.x ONNX folder (float32)")
    ap.add_argument("dst", type=Path, help="output folder (created; must not exist yet)")
    ap.add_argument(
        "--passes",
        default=",".join(DEFAULT_PASSES),
        help=f"comma-separated, from {', '.join(PASSES)} (default: {','.join(DEFAULT_PASSES)})",
    )
    ap.add_argument(
        "--components",
        default=None,
        help="comma-separated components to rewrite (the rest are symlinked); default: groupnorm on the VAE "
        f"({','.join(GROUPNORM_DEFAULT)}), attention on every component",
    )
    args = ap.parse_args(argv)

    src, dst = args.src, args.dst
    passes = [p for p in args.passes.split(",") if p]
    unknown = [p for p in passes if p not in PASSES]
    if unknown or not passes:
        ap.error(f"--passes: {unknown or 'none given'}; choose from {', '.join(PASSES)}")
    if not (src / "unet" / "model.onnx").exists():
        ap.error(f"{src}: not an SD 1.x ONNX folder (no unet/model.onnx)")
    check_output(src, dst, None)  # not inside SRC, nor containing it; must not exist
    named = args.components.split(",") if args.components is not None else list(COMPONENTS)
    bad = [k for k in named if k and k not in COMPONENTS]
    if bad:
        ap.error(f"--components: {bad} are not components ({', '.join(COMPONENTS)})")
    kinds = tuple(k for k in named if k and (src / k / "model.onnx").exists())
    # without --components the groupnorm pass rewrites only where precision needs it (GROUPNORM_DEFAULT)
    groupnorm_on = set(kinds) if args.components is not None else set(GROUPNORM_DEFAULT)

    # decide what changes before writing anything: a component no pass touches stays a symlink
    graphs = {k: check_model_file(src / k / "model.onnx") for k in kinds}  # every input checked before any log line
    plans: dict[str, onnx.ModelProto] = {}
    for k in kinds:
        model = graphs[k]
        if "groupnorm" in passes and k in groupnorm_on:
            count = precise_groupnorm(model)
            left = sum(1 for n in model.graph.node if n.op_type == "GroupNormalization")
            log(
                f"{k}: groupnorm: {count} InstanceNormalization rewritten"
                + (f"; {left} GroupNormalization left as they are" if left else "")
            )
            if not count and "attention" not in passes:
                continue
        elif "attention" not in passes:
            continue
        plans[k] = model
    # written into a fresh sibling folder and renamed at the end (quantize.staged_output): an
    # interrupted or failed run leaves no half DST and no partial folder
    with staged_output(dst, None) as work:
        write(src, work, plans, passes)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("optimize.py", main))
