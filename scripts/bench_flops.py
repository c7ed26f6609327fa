"""FLOPs per U-Net step counted from the ONNX graph, and the machine's measured fp32 GEMM peak.

    .venv/bin/python scripts/bench_flops.py ONNX_DIR [--threads 2] [--batch 2] [--height 512] [--width 512]

Writes one JSON object (to --out, or stdout). FLOPs: the graph (weights not loaded) gets concrete input shapes
(batch 2 = one classifier-free-guidance step, 64x64 latents at 512x512), onnx.shape_inference
(with data propagation, so the Reshape targets computed from Shape ops resolve), then
2 * multiply-adds for every Conv, ConvTranspose, MatMul and Gemm, the attention's Q.K^T and
P.V being MatMul nodes of the export; every other op (norms, softmax, elementwise) is left out
and their count reported, as the multiply-add ops are > 99% of the arithmetic.

Peak: the best of several large square sgemms (float32) on THREADS threads through ORT's MatMul
(MLAS, the kernel family the U-Net runs on), numpy (its BLAS) and torch.mm.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import common.telemetry_off  # noqa: F401  (before onnxruntime)


def _dims(vi) -> list[int] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            return None
    return out


def _load_with_shapes(model_path: Path, inputs: dict[str, list[int]]):
    """The graph without its weights' bytes: large / external initializers become graph inputs of
    the same shape (shape inference needs only their dims), and the model inputs get fixed dims."""
    import onnx
    from onnx import helper

    m = onnx.load(str(model_path), load_external_data=False)
    for inp in m.graph.input:
        if inp.name in inputs:
            shape = inp.type.tensor_type.shape
            del shape.dim[:]
            for v in inputs[inp.name]:
                shape.dim.add().dim_value = v
    keep = []
    for init in m.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL or len(init.raw_data) > 65536:
            m.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            keep.append(init)
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    return m


def _shape_map(m) -> dict[str, list[int] | None]:
    shapes: dict[str, list[int] | None] = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[vi.name] = _dims(vi)
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def count_flops(model_path: Path, inputs: dict[str, list[int]]) -> dict:
    from onnx import shape_inference

    m = _load_with_shapes(model_path, inputs)
    weights = {i.name for i in m.graph.input if i.name not in inputs} | {i.name for i in m.graph.initializer}
    weights |= {o for n in m.graph.node if n.op_type == "Constant" for o in n.output}
    shapes = _shape_map(shape_inference.infer_shapes(m, data_prop=True))
    # onnx's own inference stops at Reshape / Pad targets computed from Shape ops in places;
    # onnxruntime's symbolic shape inference (its transformer tooling) resolves those. Each value
    # is taken from onnx where onnx has it, and the two must agree where both do.
    from_onnx = sum(1 for v in shapes.values() if v is not None)
    filled = 0
    disagree: list[str] = []
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        sym = _shape_map(SymbolicShapeInference.infer_shapes(m, auto_merge=False))
        for k, v in sym.items():
            if v is None:
                continue
            if shapes.get(k) is None:
                shapes[k] = v
                filled += 1
            elif shapes[k] != v:
                disagree.append(k)
    except Exception as e:  # pragma: no cover
        disagree.append(f"symbolic shape inference failed: {e}")

    by_op: dict[str, float] = {}
    attention = 0.0
    unresolved: list[str] = []
    counted = 0
    other_ops: dict[str, int] = {}
    for node in m.graph.node:
        op = node.op_type
        if op not in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            other_ops[op] = other_ops.get(op, 0) + 1
            continue
        a = shapes.get(node.input[0])
        b = shapes.get(node.input[1])
        y = shapes.get(node.output[0])
        if a is None or b is None or y is None:
            unresolved.append(f"{op} {node.name}")
            continue
        counted += 1
        if op == "Conv":
            # y [N, Cout, *spatial]; w [Cout, Cin/group, *k]: w's shape already divides by group
            macs = _prod(y) * _prod(b[1:])
        elif op == "ConvTranspose":
            macs = _prod(a) * _prod(b[1:])
        elif op == "Gemm":
            macs = _prod(y) * (a[0] if any(at.name == "transA" and at.i for at in node.attribute) else a[-1])
        else:  # MatMul, numpy broadcasting: out elements * K
            k = a[-1] if len(a) >= 1 else 1
            macs = _prod(y) * k
        flops = 2.0 * macs
        by_op[op] = by_op.get(op, 0.0) + flops
        # attention products: both operands are activations (no initializer), in the 4-D/3-D batch-of-heads form
        if op == "MatMul" and node.input[0] not in weights and node.input[1] not in weights:
            attention += flops
    total = sum(by_op.values())
    return {
        "model": str(model_path),
        "inputs": inputs,
        "flops": total,
        "by_op": by_op,
        "attention_matmul_flops": attention,
        "counted_nodes": counted,
        "shapes_from_onnx_inference": from_onnx,
        "shapes_filled_by_ort_symbolic_inference": filled,
        "shape_disagreements": disagree[:20],
        "unresolved_nodes": unresolved,
        "uncounted_op_types": dict(sorted(other_ops.items(), key=lambda kv: -kv[1])),
    }


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def _best(fn, flops: float, seconds: float = 3.0, min_reps: int = 3) -> float:
    fn()  # warm-up
    best = 0.0
    reps = 0
    t_end = time.perf_counter() + seconds
    while reps < min_reps or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = max(best, flops / dt)
        reps += 1
    return best


def peak_sgemm(threads: int, sizes=(2048, 4096)) -> dict:
    import numpy as np

    results: dict[str, dict[str, float]] = {}
    rng = np.random.default_rng(0)

    # ORT MatMul (MLAS)
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        res = {}
        for n in sizes:
            g = helper.make_graph(
                [helper.make_node("MatMul", ["a", "b"], ["y"])],
                "mm",
                [
                    helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                    helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n]),
                ],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
            )
            model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
            model.ir_version = 8
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            res[str(n)] = _best(lambda: sess.run(None, {"a": a, "b": b}), 2.0 * n**3)
        results["onnxruntime"] = res
    except Exception as e:  # pragma: no cover
        results["onnxruntime"] = {"error": str(e)}

    # numpy's BLAS (thread count fixed by the environment before numpy was imported)
    res = {}
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        res[str(n)] = _best(lambda: a @ b, 2.0 * n**3)
    results["numpy"] = res

    try:
        import torch

        torch.set_num_threads(threads)
        res = {}
        for n in sizes:
            a = torch.randn(n, n)
            b = torch.randn(n, n)
            res[str(n)] = _best(lambda: torch.mm(a, b), 2.0 * n**3)
        results["torch"] = res
    except Exception as e:  # pragma: no cover
        results["torch"] = {"error": str(e)}

    best_src, best = "", 0.0
    for src, r in results.items():
        for n, v in r.items():
            if isinstance(v, float) and v > best:
                best, best_src = v, f"{src} {n}x{n}"
    return {"threads": threads, "flops_per_s": results, "peak_flops_per_s": best, "peak_source": best_src}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("onnx_dir", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--no-peak", action="store_true")
    ap.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    args = ap.parse_args()
    h, w = args.height // 8, args.width // 8
    out = {
        "unet": count_flops(
            args.onnx_dir / "unet" / "model.onnx",
            {"sample": [args.batch, 4, h, w], "timestep": [1], "encoder_hidden_states": [args.batch, 77, 768]},
        ),
        "vae_decoder": count_flops(args.onnx_dir / "vae_decoder" / "model.onnx", {"latent_sample": [1, 4, h, w]}),
        "vae_encoder": count_flops(
            args.onnx_dir / "vae_encoder" / "model.onnx", {"sample": [1, 3, args.height, args.width]}
        ),
        "text_encoder": count_flops(args.onnx_dir / "text_encoder" / "model.onnx", {"input_ids": [args.batch, 77]}),
    }
    if not args.no_peak:
        out["peak"] = peak_sgemm(args.threads)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    else:
        json.dump(out, sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    t = os.environ.get("BENCH_THREADS", "2")
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(k, t)
    sys.exit(main())
