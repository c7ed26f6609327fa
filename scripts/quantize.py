"""Make a reduced-precision copy of an SD 1.x ONNX folder with onnxruntime's own tools.

    .venv/bin/python scripts/quantize.py SRC DST --mode fp16 [--compact-names]
    .venv/bin/python scripts/quantize.py SRC DST --mode int8-dynamic [--compact-names]
    .venv/bin/python scripts/quantize.py SRC DST --mode int8-static --references REFSET [--compact-names]

The committed fixtures are made with (conformance/README.md has their measurements):

    .venv/bin/python scripts/quantize.py fixtures/models/tiny-sd-onnx fixtures/models/tiny-sd-fp16-onnx --mode fp16 --compact-names --overwrite
    .venv/bin/python scripts/quantize.py fixtures/models/tiny-sd-onnx fixtures/models/tiny-sd-int8-onnx --mode int8-dynamic --compact-names --overwrite

Modes (per component; every other file of SRC is symlinked, relative, into DST). DST is written as
a new folder beside it and renamed at the end (an interrupted or failed run leaves nothing);
an existing DST is replaced only with --overwrite, and DST may not lie inside SRC or contain it.

  fp16          onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True) on
                all four components, with FP16_OP_BLOCK_LIST (ops kept in float32; the reasons
                are next to it). The models still take and return float32 (keep_io_types), so the
                same harness code runs every variant.
  int8-dynamic  onnxruntime.quantization.quantize_dynamic on all four components: weights int8
                (per tensor), activations quantized per call at run time. U-Net and VAE: MatMul,
                Gemm, Conv; text encoder: MatMul and the token-embedding Gather. QUInt8 weights,
                because ORT's CPU ConvInteger kernel takes uint8 x uint8 only (MatMulInteger would
                take int8, but quantize_dynamic has one weight type per model).
  int8-static   onnxruntime.quantization.quantize_static (QDQ, MinMax calibration, int8 weights and
                activations, per tensor) on the U-Net, calibrated with the reference set's
                teacher-forced U-Net inputs (unet:*-step*.safetensors: sample, timestep,
                encoder_hidden_states; only those whose channel count matches this U-Net). The text
                encoder and the VAE get int8-dynamic as above: the reference set has no inputs of
                theirs that would calibrate them better than their weights do. Measured on the tiny
                fixture it is not usable (U-Net relL2 0.33 teacher-forced, 0.8 free-running, even
                calibrated on the very inputs it is judged on; --per-channel or quantizing only the
                Convs does not help: per-tensor int8 activations are too coarse for the U-Net's
                input range, which grows from |2.5| to |38| along the loop), so the committed int8
                fixture is int8-dynamic. See conformance/README.md.

--exclude-from REPORT.json (int8 modes) closes the localization loop: it reads the `localize`
section of a `sd-harness conformance --localize` report of an earlier variant and keeps the
--exclude-top N modules that introduce the most drift (relL2 at the module's output / at its input,
the largest over the recorded calls; leaf modules only, as the report ranks them) in float: every node of SRC whose scope name lies in such a
module is passed to onnxruntime's nodes_to_exclude. SRC must carry the exporter's scope names
(`/model/down_blocks.1/...`; our export and optimum's do), the report may come from any variant.
A Gemm module is excluded under both its names (ORT rewrites a Gemm as `<name>_MatMul` + Add before
it reads nodes_to_exclude; before this, a Gemm named by the report was quantized all the same).

--exclude-op-types Conv[,MatMul,Gemm,Gather] and --exclude-modules GLOB[,GLOB] (int8-dynamic) keep
whole op types, and every module whose name matches a glob (`*.ff`, `*.attn2`, `down_blocks.3*`),
in float; --components leaves whole components in float. Measured on the tiny fixture (conformance/README.md,
"Closing the loop by kind"): excluding the N worst modules of a report converges slowly
(N = 150: U-Net relL2 3.6e-2 -> 2.7e-2), because each int8 Conv adds a little (x1.05-1.8 per
module), not a few a lot. The variant that passes the whole fp16 profile (393 / 393) is

    --components unet --exclude-op-types Conv --exclude-modules '*.ff,*.attn2'

(int8: the self-attention projections and the time-path linears, 12% of the U-Net's weights;
U-Net relL2 2.8e-3 teacher-forced, 6.6e-3 free-running). The text encoder fails the fp16 limits
with its MatMuls or its token embedding in int8 (relL2 8.2e-2, 3.3e-2; limit 4e-3); the VAE
passes with only its mid-block attention MatMuls in int8, which saves 1% of its files, and fails
with its Convs in int8.

--compact-names renames internal nodes / tensors to short ids: the exporter's long names are ~80%
of these tiny files, and the fixture budget is 40 MB.

Deterministic: the same SRC (and reference set) gives byte-identical files (no timestamps, no
random calibration subsets; calibration cases are read in id order). Every written model is then
loaded and run once in Python onnxruntime (CPU) on a small input and must give finite outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

import common.telemetry_off  # noqa: F401  (before onnxruntime)
import onnxruntime as ort

COMPONENTS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")

# Ops kept in float32 in the fp16 variant, and why. These are the ops that overflow or lose their
# accuracy in fp16 on execution providers with native fp16 kernels (CUDA, DirectML, CoreML), where
# the same file would run. A visible constant: change it here, not in the code below.
FP16_OP_BLOCK_LIST = {
    # GroupNorm (exported as Reshape -> InstanceNormalization -> Reshape): the variance is a mean of
    # squares over (C/groups) x H x W values; in fp16 the squares of large VAE activations overflow
    # 65504 and small variances lose their digits. The classic SD fp16 VAE failure.
    "InstanceNormalization": "GroupNorm variance: the sum of squares overflows / underflows in fp16",
    "GroupNormalization": "as InstanceNormalization (opset 18+ exports)",
    "LayerNormalization": "the same reduction over the attention / text-encoder width",
    # Attention: the normalizing sum over 77 or h*w keys loses precision in fp16, and a kernel that
    # does not subtract the row max overflows exp() above a logit of 11.09.
    "Softmax": "fp16 row sums lose precision; exp overflows above 11.09 without max subtraction",
    # Spelled-out norms (other exporters): x^2, its mean and the rsqrt, as for GroupNorm.
    "Pow": "x^2 of activations overflows fp16 (decomposed norms)",
    "ReduceMean": "mean of squares in decomposed norms",
    "Sqrt": "sqrt of a variance near zero underflows",
}
# Measured on the tiny fixture with ORT's CPU provider (conformance/README.md): this list costs a
# little accuracy there (U-Net worst relL2 3.6e-3 -> 3.7e-3, VAE decode 1.0e-3 -> 1.35e-3), because
# ORT's CPU provider has almost no fp16 kernels: it runs unsupported fp16 nodes in fp32 itself and
# drops its own back-to-back casts, while the converter's casts around blocked nodes are explicit
# roundings it must keep. The list is for the EPs above; on CPU it neither helps nor prevents an
# overflow of a tensor stored as fp16 between two nodes (see test/variants.test.ts).
#
# Not in the list, measured: keeping the U-Net's time embedding (timestep -> Sin / Cos) in fp32
# (--fp32-time-embedding). fp16's spacing near t=999 is 0.5, so fractional Euler timesteps round
# before the sinusoid: it does help the Euler runs (worst relL2 3.6e-3 -> 2.3e-3) but hurts PNDM's
# first step (2.3e-3 -> 5.8e-3) on ORT CPU, for the cast reason above, so it is off by default.


def log(msg: str) -> None:
    print(f"quantize.py: {msg}", file=sys.stderr)


# ---- one-line errors, signals and the output folder ---------------------------------------------
#
# Both scripts (quantize.py, optimize.py) write DST as a fresh sibling folder
# (`.DST.partial-<pid>-<hex>`) that is renamed to DST once every model in it was written and
# verified; SIGINT, SIGTERM and any error remove it. So DST is never half a model, nothing is ever
# written through a symlink that an existing DST holds (its model.onnx linking into SRC, say), and
# an existing DST is replaced only with --overwrite (quantize.py; optimize.py refuses it).
# Errors are one line: 2 for a bad input or output path, 130 / 143 for SIGINT / SIGTERM, 70 for
# anything unforeseen (a bug: the line names the exception).


class InputError(Exception):
    """A bad input or output path: one line, exit 2."""


class Interrupted(BaseException):
    """SIGINT / SIGTERM, raised where Python next runs, so the partial output is removed as for an error."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, _frame: object) -> None:
    # a second signal must not cut the first one's cleanup short
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def run_cli(tool: str, main, argv: list[str] | None = None) -> int:
    """main(argv) with SIGINT / SIGTERM turned into Interrupted and every error into one line."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        return main(argv)
    except Interrupted as e:
        how = "interrupted (SIGINT)" if e.signum == signal.SIGINT else "terminated (SIGTERM)"
        print(f"{tool}: {how}; the partial output folder was removed", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print(f"{tool}: interrupted (SIGINT); the partial output folder was removed", file=sys.stderr)
        return 130
    except InputError as e:
        print(f"{tool}: {one_line(str(e))}", file=sys.stderr)
        return 2
    except SystemExit as e:
        if isinstance(e.code, str):  # raise SystemExit("quantize.py: ..."): a refusal
            print(one_line(e.code), file=sys.stderr)
            return 2
        raise
    except Exception as e:  # noqa: BLE001 - the one place every other error becomes one line
        print(f"{tool}: internal error: {type(e).__name__}: {one_line(str(e))}", file=sys.stderr)
        return 70


def one_line(text: str, limit: int = 400) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def check_output(src: Path, dst: Path, overwrite: bool) -> None:
    """Refuse DST inside SRC, SRC inside DST, DST = SRC, a missing parent, and an existing DST without overwrite."""
    if dst.name in ("", ".", ".."):
        raise InputError(f"{dst}: name a new output folder")
    if not dst.parent.is_dir():
        raise InputError(f"{dst}: its parent folder {dst.parent} does not exist")
    s = src.resolve()
    d = dst.parent.resolve() / dst.name  # DST itself is not followed: a symlink there is replaced, not written through
    if d == s or (dst.exists() and dst.resolve() == s):
        raise InputError(f"{dst}: is SRC itself")
    if d.is_relative_to(s):
        raise InputError(f"{dst}: lies inside SRC ({src}); write the output folder outside it")
    if s.is_relative_to(d) or (dst.is_dir() and s.is_relative_to(dst.resolve())):
        raise InputError(f"{dst}: contains SRC ({src}); write the output folder outside it")
    if dst.exists() or dst.is_symlink():
        if overwrite is None:
            raise InputError(f"{dst}: exists; this script writes a new folder and does not replace one")
        if not overwrite:
            raise InputError(f"{dst}: exists; pass --overwrite to replace it")
        if not dst.is_symlink() and not dst.is_dir():
            raise InputError(f"{dst}: exists and is not a folder; not replaced")


def check_model_file(file: Path) -> onnx.ModelProto:
    """The graph of FILE (weights not loaded), or one line saying why it is not an ONNX model."""
    if not file.is_file():
        raise InputError(f"{file}: not a regular file (an ONNX model is expected)")
    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise InputError(f"{file}: not an ONNX model ({type(e).__name__}: {one_line(str(e), 120)})") from None
    if not model.graph.node or not model.opset_import:
        raise InputError(f"{file}: not an ONNX model (no graph nodes or opset)")
    return model


@contextlib.contextmanager
def staged_output(dst: Path, overwrite: bool | None):
    """Yields a fresh sibling folder of DST, renamed to DST when the block ends without error."""
    work = dst.parent / f".{dst.name}.partial-{os.getpid()}-{secrets.token_hex(3)}"
    work.mkdir()
    try:
        yield work
        # no signal between moving an old DST aside and the new one in: they wait until exit
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        old = None
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
        elif dst.exists():
            old = dst.parent / f".{dst.name}.old-{os.getpid()}-{secrets.token_hex(3)}"
            os.rename(dst, old)
        os.rename(work, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


# ---- folder plumbing ----------------------------------------------------------------------------


def link(src: Path, dst: Path) -> None:
    """dst -> src as a relative symlink (src may itself be a symlink: link to it, not through it)."""
    rel = os.path.relpath(src, dst.parent)
    if dst.is_symlink() or dst.exists():
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        else:
            dst.unlink()
    dst.symlink_to(rel, target_is_directory=src.is_dir())


def prepare_folder(src: Path, dst: Path, converted: tuple[str, ...]) -> None:
    """DST gets: a real folder per converted component (its non-model files symlinked), a symlink
    for everything else (tokenizer/, scheduler/, model_index.json, unconverted components)."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.name in converted and entry.is_dir():
            if target.is_symlink():
                target.unlink()
            target.mkdir(exist_ok=True)
            for f in sorted(entry.iterdir()):
                if f.name in ("model.onnx", "model.onnx_data"):
                    continue
                link(f, target / f.name)
        else:
            link(entry, target)


# ---- reference-set calibration data ----------------------------------------------------------


def read_safetensors(file: Path) -> dict[str, np.ndarray]:
    buf = file.read_bytes()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n])
    base = 8 + n
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8, "F16": np.float16}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(buf[base + a : base + b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def calibration_feeds(references: Path, in_channels: int) -> list[dict[str, np.ndarray]]:
    manifest = json.loads((references / "manifest.json").read_text())
    feeds = []
    for case in sorted(manifest["cases"], key=lambda c: c["id"]):
        cid = case["id"]
        if not cid.startswith("unet:") or "-step" not in cid:
            continue
        t = read_safetensors(references / case["file"])
        if t["sample"].shape[1] != in_channels:
            continue
        feeds.append(
            {
                "sample": np.ascontiguousarray(t["sample"], dtype=np.float32),
                "timestep": np.ascontiguousarray(t["timestep"], dtype=np.float32).reshape(-1),
                "encoder_hidden_states": np.ascontiguousarray(t["encoder_hidden_states"], dtype=np.float32),
            }
        )
    if not feeds:
        raise SystemExit(
            f"quantize.py: {references}: no unet:*-step* cases with {in_channels} input channels to calibrate on"
        )
    return feeds


# ---- conversions -------------------------------------------------------------------------------


def time_embedding_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes on a path from the graph input `timestep` to a Sin / Cos node."""
    g = model.graph
    if not any(i.name == "timestep" for i in g.input):
        return []
    producers = {o: n for n in g.node for o in n.output}
    # forward: nodes reachable from timestep
    reach: set[str] = {"timestep"}
    downstream: set[int] = set()
    for k, n in enumerate(g.node):  # topologically sorted
        if any(x in reach for x in n.input):
            downstream.add(k)
            reach.update(n.output)
    # backward from Sin / Cos, staying inside the forward set
    keep: set[str] = set()
    stack = [n for k, n in enumerate(g.node) if k in downstream and n.op_type in ("Sin", "Cos")]
    index = {id(n): k for k, n in enumerate(g.node)}
    while stack:
        n = stack.pop()
        if n.name in keep:
            continue
        keep.add(n.name)
        for x in n.input:
            p = producers.get(x)
            if p is not None and index[id(p)] in downstream:
                stack.append(p)
    return sorted(keep)


def drop_duplicate_nodes(model: onnx.ModelProto) -> int:
    """convert_float_to_float16 (ORT 1.30) inserts one identical Cast (same name, input, output)
    per blocked consumer of a float16 tensor when the tensor feeds two blocked nodes; ORT then
    refuses the model ("two nodes with same node name"). The copies are byte-identical, so keep
    the first."""
    seen: set[bytes] = set()
    keep = []
    for n in model.graph.node:
        key = n.SerializeToString(deterministic=True)
        if key in seen:
            continue
        seen.add(key)
        keep.append(n)
    dropped = len(model.graph.node) - len(keep)
    del model.graph.node[:]
    model.graph.node.extend(topological(model.graph, keep))
    return dropped


def topological(graph: onnx.GraphProto, nodes: list) -> list:
    """Stable topological order (the converter appends its Casts at the end; ORT sorts on load,
    but onnx.checker and other tools want the order the spec asks for)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    out, pending = [], list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(x in ready for x in n.input):
                out.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise SystemExit(f"quantize.py: graph has a cycle or a missing input near {rest[0].name}")
        pending = rest
    return out


def to_fp16(src: Path, dst: Path, block_ops: set[str], fp32_time_embedding: bool) -> None:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    external = (src.parent / "model.onnx_data").exists()
    if external:
        # >2 GB: the converter's own shape inference serializes the whole proto (protobuf's 2 GB
        # limit), so infer on the file (as onnxruntime.quantization does) and load the weights after
        with tempfile.TemporaryDirectory(prefix="quantize.") as tmp:
            inferred = Path(tmp) / "model.onnx"
            onnx.shape_inference.infer_shapes_path(str(src), str(inferred))
            model = onnx.load(str(inferred), load_external_data=False)
        onnx.external_data_helper.load_external_data_for_model(model, str(src.parent))
    else:
        model = onnx.load(str(src))
    unnamed = [n for n in model.graph.node if not n.name]
    for k, n in enumerate(unnamed):
        n.name = f"_unnamed_{k}"
    nodes = time_embedding_nodes(model) if fp32_time_embedding else []
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | block_ops)
    out = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=block, node_block_list=nodes, disable_shape_infer=external
    )
    dropped = drop_duplicate_nodes(out)
    # shape inference's value_info is ~10% of the file and ORT re-infers it on load
    del out.graph.value_info[:]
    onnx.checker.check_model(out)
    onnx.save(out, str(dst))
    log(
        f"{dst}: fp16 (kept fp32: {','.join(sorted(block_ops)) or 'nothing beyond ORT defaults'}; {len(nodes)} time-embedding nodes; {dropped} duplicate Casts dropped)"
    )


def int8_dynamic_ops(kind: str, float_ops: set[str] = frozenset()) -> list[str]:
    """The op types int8-dynamic quantizes in a component, less those --exclude-op-types keeps in float."""
    ops = ["MatMul", "Gather"] if kind == "text_encoder" else ["MatMul", "Gemm", "Conv"]
    return [o for o in ops if o not in float_ops]


def int8_dynamic(
    src: Path,
    dst: Path,
    kind: str,
    keep_modules: list[str] | None = None,
    float_ops: set[str] = frozenset(),
    float_globs: dict[str, list[str]] | None = None,
) -> None:
    """float_globs: glob -> the nodes of this component it matched (--exclude-modules; filled here)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ops = int8_dynamic_ops(kind, float_ops)
    model = onnx.load(str(src), load_external_data=False) if keep_modules or float_globs else None
    exclude = nodes_in_modules(model, keep_modules) if keep_modules else []
    if float_globs:
        for g, names in nodes_matching(model, list(float_globs)).items():
            float_globs[g] += names
            exclude += [x for x in names if x not in exclude]
    # quantize_dynamic first rewrites each Gemm as MatMul + Add, naming the MatMul `<gemm>_MatMul`,
    # and only then reads nodes_to_exclude: a Gemm's own name alone would not keep it in float
    gemms = {n.name for n in model.graph.node if n.op_type == "Gemm"} if model is not None else set()
    exclude += [x + "_MatMul" for x in exclude if x in gemms]
    # a model whose weights live in model.onnx_data (over protobuf's 2 GB: SD 1.5's U-Net) keeps them
    # outside: a mix that leaves most weights float would not serialize into one file
    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=ops,
        weight_type=QuantType.QUInt8,
        per_channel=False,
        nodes_to_exclude=exclude,
        use_external_data_format=(src.parent / "model.onnx_data").exists(),
    )
    kept = f"; kept in float: {', '.join(keep_modules)} ({len(exclude)} nodes)" if keep_modules else ""
    kept += f"; op types kept in float: {', '.join(sorted(float_ops))}" if float_ops else ""
    kept += f"; {len(exclude)} nodes kept in float in all" if float_globs else ""
    log(f"{dst}: int8 dynamic ({', '.join(ops)}){kept}")


# ---- the localization loop (--exclude-from) ----------------------------------------------------

# conformance --localize names components as the pipeline does; the folders are the same names
LOCALIZE_COMPONENTS = {"text_encoder", "unet", "vae_decoder", "vae_encoder"}


def worst_introducers(report: Path, label: str | None, top: int) -> dict[str, list[str]]:
    """component -> the modules introducing the most drift in REPORT's localize section (largest
    relL2 out / relL2 in over the recorded calls), the `top` largest over all components."""
    data = json.loads(report.read_text(encoding="utf-8"))
    loc = data.get("localize")
    if not isinstance(loc, dict) or not isinstance(loc.get("calls"), list):
        raise SystemExit(f"quantize.py: {report}: no localize section (run sd-harness conformance --localize)")
    labels = [c.get("model") for c in loc["calls"]]
    label = label if label is not None else (labels[0] if labels else None)
    if label not in labels:
        raise SystemExit(f"quantize.py: {report}: no localized model {label!r}; it has {sorted(set(map(str, labels)))}")
    score: dict[tuple[str, str], float] = {}
    for call in loc["calls"]:
        if call.get("model") != label or call.get("component") not in LOCALIZE_COMPONENTS:
            continue
        names = [m["module"] for m in call.get("modules", [])]
        for m in call.get("modules", []):
            # leaves only, as the report ranks them: a block's ratio is everything inside it
            if any(n.startswith(m["module"] + ".") for n in names):
                continue
            x = m.get("introduced")
            if isinstance(x, str):  # report.json writes non-finite numbers as strings
                x = float(x)
            if isinstance(x, (int, float)) and np.isfinite(x):
                key = (call["component"], m["module"])
                score[key] = max(score.get(key, 0.0), float(x))
    ranked = sorted(score.items(), key=lambda kv: -kv[1])[:top]
    out: dict[str, list[str]] = {}
    for (component, module), x in ranked:
        out.setdefault(component, []).append(module)
        log(f"keep in float: {component} {module} (drift introduced x{x:.3g})")
    return out


def scope(name: str) -> str | None:
    """A node's module scope: `/model/down_blocks.1/resnets.0/conv1/Conv` ->
    `down_blocks.1.resnets.0.conv1` (the exporter's wrapper `model.` dropped); None without one."""
    if not name.startswith("/"):
        return None
    parts = name.split("/")[1:-1]
    s = ".".join(parts)
    return s[len("model.") :] if s.startswith("model.") else s


def nodes_matching(model: onnx.ModelProto, globs: list[str]) -> dict[str, list[str]]:
    """glob -> names of the nodes lying in a module whose name matches it (fnmatch over the
    module and each module enclosing it: `*.ff` takes every node under a `...transformer_blocks.0.ff`)."""
    from fnmatch import fnmatchcase

    out: dict[str, list[str]] = {g: [] for g in globs}
    for n in model.graph.node:
        s = scope(n.name)
        if not s:
            continue
        parts = s.split(".")
        prefixes = [".".join(parts[:k]) for k in range(1, len(parts) + 1)]
        for g in globs:
            if any(fnmatchcase(x, g) for x in prefixes):
                out[g].append(n.name)
                break
    return out


def nodes_in_modules(model: onnx.ModelProto, modules: list[str]) -> list[str]:
    """Names of the nodes whose scope (`/model/down_blocks.1/resnets.0/conv1/Conv` ->
    `down_blocks.1.resnets.0.conv1`, the exporter's wrapper `model.` dropped) is one of `modules`
    or lies inside one."""
    found: dict[str, int] = {m: 0 for m in modules}
    out = []
    for n in model.graph.node:
        s = scope(n.name)
        if s is None:
            continue
        for m in modules:
            if s == m or s.startswith(m + "."):
                out.append(n.name)
                found[m] += 1
                break
    missing = [m for m, k in found.items() if k == 0]
    if missing:
        raise SystemExit(
            f"quantize.py: no node of SRC carries the scope of {missing}: --exclude-from needs an export with scope names (not --compact-names)"
        )
    return out


class ReferenceReader:
    """CalibrationDataReader over the reference set's teacher-forced U-Net inputs."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self.k = 0

    def get_next(self):
        if self.k >= len(self.feeds):
            return None
        self.k += 1
        return self.feeds[self.k - 1]

    def rewind(self):
        self.k = 0


def int8_static(src: Path, dst: Path, references: Path, in_channels: int, per_channel: bool) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    feeds = calibration_feeds(references, in_channels)

    class Reader(ReferenceReader, CalibrationDataReader):
        pass

    src, dst = src.resolve(), dst.resolve()
    # ORT's pre-processing and calibration write scratch files (augmented models, external data)
    # into the working directory: run them inside a temporary one
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        pre = Path(tmp) / "pre.onnx"
        # ORT's recommended pre-processing (ONNX shape inference + ORT basic graph optimization;
        # symbolic shape inference gives up on this export's dynamic reshapes)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(dst),
            Reader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    log(
        f"{dst}: int8 static QDQ ({'per-channel' if per_channel else 'per-tensor'} weights), calibrated on {len(feeds)} reference U-Net inputs"
    )


def finalize(file: Path, compact: bool) -> None:
    """Drop shape inference's value_info (ORT re-infers it; ~10% of the file) and optionally
    compact the names; saved again so every mode ends in the same canonical serialization. A model
    whose weights are external (over protobuf's 2 GB: SD 1.5's U-Net) is handled as its graph only,
    its weights left in one side file named model.onnx_data (the layout optimum writes)."""
    # read once without external data: a self-contained model is then already whole
    model = onnx.load(str(file), load_external_data=False)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    if external:
        del model.graph.value_info[:]
        move_external_data(model, file)
    elif compact:
        compact_names(model)
    else:
        del model.graph.value_info[:]
    onnx.save(model, str(file))


def move_external_data(model: onnx.ModelProto, file: Path) -> None:
    """Point every external initializer at model.onnx_data, renaming the one side file the quantizer wrote."""
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    if locations == {"model.onnx_data"}:
        return
    if len(locations) != 1:
        raise SystemExit(f"quantize.py: {file}: weights in several side files {sorted(locations)}; expected one")
    (file.parent / locations.pop()).replace(file.parent / "model.onnx_data")
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "model.onnx_data"


def compact_names(model: onnx.ModelProto) -> None:
    """Rename every node, and every tensor that is not a graph input / output or an initializer, to
    a short id (n12 / t34), in graph order. The TorchScript exporter's names
    ("/model/down_blocks.0/attentions.0/transformer_blocks.0/attn1/Cast_3_output_0") are ~80% of a
    small model's file; the committed fixtures use this to fit the fixture budget. Initializer
    names are kept (the pipeline reads final_layer_norm.* by name for clip skip), as are the I/O
    names the pipeline feeds and reads."""
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        log("a model with subgraphs: names left as they are")
        return
    keep = {i.name for i in g.input} | {o.name for o in g.output} | {i.name for i in g.initializer} | {""}
    rename: dict[str, str] = {}
    for k, n in enumerate(g.node):
        n.name = f"n{k}"
        for j, o in enumerate(n.output):
            if o not in keep:
                rename.setdefault(o, f"t{len(rename)}")
                n.output[j] = rename[o]
    for n in g.node:
        for j, x in enumerate(n.input):
            if x in rename:
                n.input[j] = rename[x]
    del g.value_info[:]


# ---- verification ------------------------------------------------------------------------------


def smoke_feed(session: ort.InferenceSession, kind: str, hidden: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        if i.name == "input_ids":
            ids = np.full((1, 77), 49407, dtype=np.int64)
            ids[0, :4] = [49406, 320, 1929, 49407]
            feeds[i.name] = ids.astype(np.int32 if i.type == "tensor(int32)" else np.int64)
        elif i.name == "timestep":
            # optimum's exports declare a scalar timestep, ours a [1]
            feeds[i.name] = np.array(500.5 if len(i.shape) == 0 else [500.5], dtype=np.float32)
        elif i.name == "encoder_hidden_states":
            feeds[i.name] = rng.standard_normal((2, 77, hidden)).astype(np.float32)
        elif kind == "unet":
            ch = i.shape[1] if isinstance(i.shape[1], int) else 4
            feeds[i.name] = rng.standard_normal((2, ch, 8, 8)).astype(np.float32)
        elif kind == "vae_decoder":
            feeds[i.name] = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
        else:
            feeds[i.name] = rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    return feeds


def verify(dst: Path, kinds: tuple[str, ...]) -> None:
    hidden = json.loads((dst / "text_encoder" / "config.json").read_text())["hidden_size"]
    for kind in kinds:
        f = dst / kind / "model.onnx"
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = 1
        s = ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
        for i in s.get_inputs():
            if i.type not in ("tensor(float)", "tensor(int32)", "tensor(int64)"):
                raise SystemExit(f"quantize.py: {f}: input {i.name} is {i.type}; the pipeline feeds float32 / int ids")
        outs = s.run(None, smoke_feed(s, kind, hidden))
        bad = [o.name for o, v in zip(s.get_outputs(), outs) if v.dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:
            raise SystemExit(f"quantize.py: {f}: non-finite outputs {bad} on the smoke input")
        log(f"{f}: loads and runs in onnxruntime {ort.__version__} ({f.stat().st_size} bytes)")


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line naming the flag or folder, exit 2 (no usage block; --help has it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"quantize.py: {message}\n")


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="SD 1.x ONNX folder (float32)")
    ap.add_argument(
        "dst",
        type=Path,
        help="output folder (written as a new folder beside it, then renamed; must not exist unless --overwrite)",
    )
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing DST (the whole folder, once the new one is complete)",
    )
    ap.add_argument("--mode", required=True, choices=["fp16", "int8-dynamic", "int8-static"])
    ap.add_argument("--references", type=Path, help="reference set (int8-static: calibration inputs)")
    ap.add_argument(
        "--components",
        default=",".join(COMPONENTS),
        help="comma-separated components to convert (the rest are symlinked)",
    )
    ap.add_argument(
        "--fp16-block-ops",
        help="fp16: comma-separated op types kept in float32 instead of FP16_OP_BLOCK_LIST ('' = ORT's defaults only; for experiments)",
    )
    ap.add_argument(
        "--fp32-time-embedding",
        action="store_true",
        help="fp16: keep the U-Net's timestep -> Sin/Cos nodes in float32 (measured: helps Euler, hurts PNDM on ORT CPU)",
    )
    ap.add_argument(
        "--per-channel", action="store_true", help="int8-static: per-output-channel weight scales for the U-Net"
    )
    ap.add_argument(
        "--compact-names",
        action="store_true",
        help="rename internal nodes / tensors to short ids (smaller files; used for the committed fixtures)",
    )
    ap.add_argument(
        "--no-verify", action="store_true", help="skip the onnxruntime smoke run (a model meant to overflow)"
    )
    ap.add_argument(
        "--exclude-from",
        type=Path,
        help="int8-dynamic: report.json of `sd-harness conformance --localize`; keep its worst drift introducers in float",
    )
    ap.add_argument("--exclude-model", help="the report's model label to read (default: the first localized model)")
    ap.add_argument(
        "--exclude-top",
        type=int,
        default=5,
        help="how many modules to keep in float, largest drift introduced first (default 5)",
    )
    ap.add_argument(
        "--exclude-modules",
        default="",
        help="int8-dynamic: comma-separated globs over module names (`*.ff`, `down_blocks.3.*`); every node in a matching module is kept in float (SRC needs scope names)",
    )
    ap.add_argument(
        "--exclude-op-types",
        default="",
        help="int8-dynamic: comma-separated op types kept in float in every component (Conv, MatMul, Gemm, Gather); a component left with nothing to quantize is not converted (symlinked, as for --components)",
    )
    args = ap.parse_args(argv)

    src, dst = args.src, args.dst
    if not (src / "unet" / "model.onnx").exists():
        ap.error(f"{src}: not an SD 1.x ONNX folder (no unet/model.onnx)")
    if args.mode == "int8-static" and not args.references:
        ap.error("--mode int8-static needs --references (the calibration inputs)")
    check_output(src, dst, args.overwrite)
    kinds = tuple(k for k in args.components.split(",") if k and (src / k / "model.onnx").exists())
    float_ops = {o for o in args.exclude_op_types.split(",") if o}
    if float_ops and args.mode != "int8-dynamic":
        ap.error("--exclude-op-types applies to --mode int8-dynamic")
    unknown = float_ops - {"Conv", "MatMul", "Gemm", "Gather"}
    if unknown:
        ap.error(
            f"--exclude-op-types: {sorted(unknown)} are not op types int8-dynamic quantizes (Conv, MatMul, Gemm, Gather)"
        )
    for k in kinds:
        if float_ops and not int8_dynamic_ops(k, float_ops):
            log(f"{k}: --exclude-op-types {args.exclude_op_types} leaves nothing to quantize; kept as in SRC")
    kinds = tuple(k for k in kinds if int8_dynamic_ops(k, float_ops) or args.mode != "int8-dynamic")
    # External weights (model.onnx_data, a >2 GB fp32 U-Net): onnx.load reads them, and the fp16 /
    # int8-dynamic outputs (1/2, 1/4 of the size) fit in one file again. int8-static's scratch
    # copies are not written for them.
    for k in kinds:
        if (src / k / "model.onnx_data").exists() and args.mode == "int8-static":
            ap.error(f"{src / k}: external weights (model.onnx_data) are not supported with --mode int8-static")
    block_ops = (
        set(FP16_OP_BLOCK_LIST) if args.fp16_block_ops is None else {o for o in args.fp16_block_ops.split(",") if o}
    )
    if args.exclude_from and args.mode != "int8-dynamic":
        ap.error("--exclude-from applies to --mode int8-dynamic")
    keep = worst_introducers(args.exclude_from, args.exclude_model, args.exclude_top) if args.exclude_from else {}
    if args.exclude_modules and args.mode != "int8-dynamic":
        ap.error("--exclude-modules applies to --mode int8-dynamic")
    for k in kinds:
        check_model_file(src / k / "model.onnx")
    in_channels = json.loads((src / "unet" / "config.json").read_text())["in_channels"]
    float_globs: dict[str, list[str]] = {g: [] for g in args.exclude_modules.split(",") if g}
    # written into a fresh sibling folder, renamed to DST at the end (staged_output)
    with staged_output(dst, args.overwrite) as work:
        prepare_folder(src, work, kinds)
        for k in kinds:
            s, d = src / k / "model.onnx", work / k / "model.onnx"
            if args.mode == "fp16":
                to_fp16(s, d, block_ops, args.fp32_time_embedding)
            elif args.mode == "int8-static" and k == "unet":
                int8_static(s, d, args.references, in_channels, args.per_channel)
            else:
                int8_dynamic(s, d, k, keep.get(k), float_ops, float_globs)
            finalize(d, compact=args.compact_names)
        unmatched = [g for g, names in float_globs.items() if not names]
        if unmatched:
            raise SystemExit(
                f"quantize.py: --exclude-modules {unmatched} matched no node of {', '.join(kinds)}: SRC needs scope names (not --compact-names)"
            )
        if not args.no_verify:
            verify(work, kinds)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("quantize.py", main))
