"""Per-module PyTorch references: the output of every named module for a few chosen calls.

    .venv/bin/python scripts/make_module_references.py --model fixtures/models/tiny-sd \
        --references fixtures/references/tiny-sd/cpu --out fixtures/references/tiny-sd/modules

`sd-harness conformance --localize` compares these with the same tensors taken out of an ONNX port
(the exporter names nodes after the module scope, `/down_blocks.1/attentions.0/...`), to name the
module where drift starts. Calls recorded (inputs copied from the main reference set's cases, so
both sets describe the same calls; the source case's sha256 is recorded):

  text_encoder  one call: input_ids of `text_encoder:astronaut`
  unet          two calls of one end-to-end run: `unet:txt2img-pndm-64x64-step00` and `-step09`
                (sample, timestep, encoder_hidden_states as diffusers fed them)
  vae_decoder   one decode: `vae_decode:64x64`'s latents divided by scaling_factor, as
                vae.decode receives them (what the ONNX decoder's latent_sample is)
  vae_encoder   one encode: `vae_encode:64x64`'s image; the ONNX encoder is encoder + quant_conv

Forward hooks record every module's output (a tuple's first tensor: the hidden states); a module
called twice in one call keeps its last output (the ONNX side takes a scope's last output too).
What is stored, to keep the fixtures small (the budget is 40 MB for all of fixtures/):

  * modules down to a depth per component (MAX_DEPTH; depth = number of dots in the path), except
    those that compute nothing at inference or only repeat a neighbour (SKIP_CLASSES: dropout,
    identity, parameter-free activations); the manifest's `tree` lists every module with the
    reason it is not stored;
  * of a tensor with more than MAX_VALUES values, every `stride`-th value of its flattened form
    (stride = ceil(n / MAX_VALUES), from index 0), recorded per tensor: the ONNX side reads the
    same elements. Drift figures of a sampled tensor are those of the sample (relL2 and cosine
    estimate the whole tensor's; max abs can only be lower).

Each module also records where its input came from (`input`): the stored module whose output
object it received, following unstored modules (an activation) back to a stored one, or `input:<name>`
for a call input; null when its input was made by tensor ops outside any module (a residual add,
a concat). The ONNX side uses it for "drift introduced" (drift at the output / drift at the input).

Output: one safetensors file per call (tensor names = module paths; call inputs as `input:<name>`),
manifest.json with provenance (versions, device, command, sha256 of every file and of this script)
and per component the stored modules in the order their outputs come to exist (`modules`) and the
module tree in network order, the order modules start (`tree`: [path, class, why not stored]).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

FORMAT = "sd-harness-module-references/1"
MAX_VALUES = 256
MAX_DEPTH = {"text_encoder": 99, "unet": 5, "vae_decoder": 4, "vae_encoder": 4}
SKIP_CLASSES = {
    "Dropout": "no computation at inference",
    "Identity": "no computation",
    "SiLU": "parameter-free activation (checked through the module it feeds)",
    "GELU": "parameter-free activation (checked through the module it feeds)",
    "QuickGELUActivation": "parameter-free activation (checked through the module it feeds)",
    "GELUActivation": "parameter-free activation (checked through the module it feeds)",
}
UNET_CALLS = ["unet:txt2img-pndm-64x64-step00", "unet:txt2img-pndm-64x64-step09"]
TEXT_CALL = "text_encoder:astronaut"
DECODE_CALL = "vae_decode:64x64"
ENCODE_CALL = "vae_encode:64x64"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ["diffusers", "transformers", "numpy", "safetensors"]:
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:
            out[name] = "absent"
    return out


def first_tensor(value):
    """The hidden states of a module's output: the tensor itself, a tuple's first tensor, or a
    ModelOutput's first field (CLIPTextModel -> last_hidden_state, AutoencoderKL parts -> sample)."""
    if torch.is_tensor(value):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            if torch.is_tensor(v):
                return v
        return None
    if hasattr(value, "to_tuple"):
        return first_tensor(value.to_tuple())
    return None


def input_tensor(args, kwargs):
    if args and torch.is_tensor(args[0]):
        return args[0]
    for k in ("hidden_states", "sample", "input_ids", "x", "input"):
        if torch.is_tensor(kwargs.get(k)):
            return kwargs[k]
    return None


class Recorder:
    """Hooks on every named module of `root`; records outputs of the selected ones for one call."""

    def __init__(self, root: torch.nn.Module, component: str):
        self.root = root
        self.component = component
        self.modules = [(n, m) for n, m in root.named_modules() if n]
        self.handles = []
        self.start_order: list[str] = []
        self.outputs: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self.inputs: dict[str, str | None] = {}
        self.producer: dict[int, str] = {}  # id(tensor) -> module that returned it, or input:<name>
        self.keep: list[torch.Tensor] = []  # keep ids unique while the call runs
        self.raw_input: dict[str, str | None] = {}

    def why_skipped(self, name: str, module: torch.nn.Module) -> str | None:
        cls = type(module).__name__
        if cls in SKIP_CLASSES:
            return SKIP_CLASSES[cls]
        if name.count(".") > MAX_DEPTH[self.component]:
            return f"deeper than depth {MAX_DEPTH[self.component]} (fixture size)"
        return None

    def __enter__(self):
        for name, module in self.modules:
            self.handles.append(module.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._post(name, module), with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.keep.clear()

    def mark_inputs(self, named: dict[str, torch.Tensor]) -> None:
        for k, v in named.items():
            self.producer[id(v)] = f"input:{k}"
            self.keep.append(v)

    def _pre(self, name):
        def hook(_module, args, kwargs):
            if name not in self.start_order:
                self.start_order.append(name)
            x = input_tensor(args, kwargs)
            self.raw_input[name] = self.producer.get(id(x)) if x is not None else None
        return hook

    def _post(self, name, module):
        # an unstored module is transparent: its output counts as made by whatever made its input
        # (resolved at this call: a resnet's `nonlinearity` is called twice, on different inputs)
        transparent = self.why_skipped(name, module) is not None

        def hook(_module, args, kwargs, output):
            y = first_tensor(output)
            if y is None:
                return
            self.calls[name] = self.calls.get(name, 0) + 1
            self.outputs[name] = y.detach().to("cpu", torch.float32).clone()
            if transparent:
                x = input_tensor(args, kwargs)
                src = self.producer.get(id(x)) if x is not None else None
                if src is None:
                    self.producer.pop(id(y), None)
                else:
                    self.producer[id(y)] = src
            else:
                self.producer[id(y)] = name
            self.keep.append(y)
        return hook

    def resolve_input(self, name: str, stored: set[str]) -> str | None:
        """The stored module (or call input) whose output this module read."""
        src = self.raw_input.get(name)
        return src if src is None or src.startswith("input:") or src in stored else None


def sample(t: torch.Tensor) -> tuple[np.ndarray, int]:
    flat = t.contiguous().reshape(-1).numpy()
    stride = max(1, math.ceil(flat.size / MAX_VALUES))
    return np.ascontiguousarray(flat[::stride]), stride


def record(component: str, root: torch.nn.Module, inputs: dict[str, torch.Tensor], call) -> tuple[dict, list, dict]:
    """Run one call under hooks. Returns the arrays to save, the stored modules' entries in the order
    their outputs were produced, and the full tree in start order."""
    with Recorder(root, component) as rec, torch.no_grad():
        rec.mark_inputs(inputs)
        call()
        skipped = {n: rec.why_skipped(n, m) for n, m in rec.modules}
        classes = {n: type(m).__name__ for n, m in rec.modules}
        # completion order = the order in which the output tensors came to exist
        produced = [n for n in rec.outputs]  # dict insertion order = first completion
        stored = {n for n in produced if skipped[n] is None}
        arrays: dict[str, np.ndarray] = {f"input:{k}": np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in inputs.items()}
        entries = []
        for n in produced:
            if n not in stored:
                continue
            values, stride = sample(rec.outputs[n])
            arrays[n] = values
            entries.append({
                "name": n, "class": classes[n], "shape": list(rec.outputs[n].shape),
                "stride": stride, "count": int(values.size), "calls": rec.calls[n],
                "input": rec.resolve_input(n, stored),
            })
        # [path, class, why not stored or null], in the order the modules start
        tree = []
        for n in rec.start_order:
            why = skipped[n] if skipped[n] else (None if n in stored else "output is not a tensor")
            tree.append([n, classes[n], why])
        # the VAE's decode does not call its encoder and vice versa: only the called modules are listed
        never = sum(1 for n, _ in rec.modules if n not in rec.start_order)
    return arrays, entries, {"tree": tree, "not_called": never}


def dump_manifest(manifest: dict) -> str:
    """Indented JSON, but one line per module entry (about 700 of them): readable and diffable
    without doubling the file."""
    marker = {}

    def walk(v):
        one_line = isinstance(v, list) and len(v) == 3 and isinstance(v[0], str) and isinstance(v[1], str)
        if one_line or (isinstance(v, dict) and ("name" in v and "class" in v)):
            key = f"@@{len(marker)}@@"
            marker[key] = json.dumps(v, ensure_ascii=False, separators=(", ", ": "))
            return key
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    text = json.dumps(walk(manifest), indent=1, ensure_ascii=False)
    for key, line in marker.items():
        text = text.replace(f'"{key}"', line, 1)
    return text + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="diffusers (PyTorch) SD 1.x folder")
    ap.add_argument("--references", type=Path, required=True, help="the main reference set whose cases give the inputs")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--force", action="store_true", help="replace an existing folder")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.force:
        ap.error(f"--out {args.out} exists; pass --force to replace it")

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.use_deterministic_algorithms(True, warn_only=True)
    ref_manifest = json.loads((args.references / "manifest.json").read_text(encoding="utf-8"))
    by_id = {c["id"]: c for c in ref_manifest["cases"]}

    def source(case_id: str) -> tuple[dict[str, np.ndarray], dict]:
        c = by_id[case_id]
        f = args.references / c["file"]
        digest = sha256_file(f)
        if digest != c["sha256"]:
            raise SystemExit(f"{f}: sha256 differs from its manifest")
        return load_file(str(f)), {"references": args.references.as_posix(), "case": case_id, "file": c["file"], "sha256": digest}

    tmp = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    calls = []
    components: dict[str, dict] = {}

    def save(call_id: str, component: str, onnx_inputs: dict[str, str], src: dict, result) -> None:
        arrays, entries, tree = result
        name = call_id.replace(":", "-") + ".safetensors"
        save_file(arrays, str(tmp / name))
        # the module list is stored once per component: every call of it must record the same modules
        known = components.setdefault(component, {"modules": entries, **tree})
        if known["modules"] != entries:
            raise SystemExit(f"{call_id}: its modules differ from the first {component} call's")
        calls.append({
            "id": call_id, "component": component, "file": name, "sha256": sha256_file(tmp / name), "source": src,
            "onnx_inputs": onnx_inputs,
        })

    text = CLIPTextModel.from_pretrained(str(args.model / "text_encoder")).eval()
    t, src = source(TEXT_CALL)
    ids = torch.from_numpy(t["input_ids"].astype(np.int64))
    save(f"text_encoder:{TEXT_CALL.split(':')[1]}", "text_encoder", {"input_ids": "input:input_ids"}, src,
         record("text_encoder", text, {"input_ids": ids}, lambda: text(ids)))

    unet = UNet2DConditionModel.from_pretrained(str(args.model / "unet")).eval()
    for cid in UNET_CALLS:
        t, src = source(cid)
        x = {k: torch.from_numpy(t[k].copy()) for k in ("sample", "timestep", "encoder_hidden_states")}
        save(cid, "unet", {k: f"input:{k}" for k in x}, src,
             record("unet", unet, x, lambda: unet(x["sample"], x["timestep"], x["encoder_hidden_states"])))

    vae = AutoencoderKL.from_pretrained(str(args.model / "vae")).eval()
    sf = vae.config.scaling_factor
    t, src = source(DECODE_CALL)
    latent = torch.from_numpy(t["latents"].copy()) / sf  # what vae.decode and the ONNX decoder receive
    save(f"vae_decoder:{DECODE_CALL.split(':')[1]}", "vae_decoder", {"latent_sample": "input:latent_sample"}, src,
         record("vae_decoder", vae, {"latent_sample": latent}, lambda: vae.decode(latent)))
    t, src = source(ENCODE_CALL)
    image = torch.from_numpy(t["image"].copy())
    save(f"vae_encoder:{ENCODE_CALL.split(':')[1]}", "vae_encoder", {"sample": "input:sample"}, src,
         record("vae_encoder", vae, {"sample": image}, lambda: vae.encode(image)))

    script = Path(__file__).resolve()
    manifest = {
        "format": FORMAT,
        "model": args.model.name,
        "model_dir": args.model.as_posix(),
        "device": "cpu",
        "dtype": "float32",
        "versions": versions(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "script": {"file": "scripts/make_module_references.py", "sha256": sha256_file(script)},
        "sampling": {"max_values": MAX_VALUES, "rule": "flattened values [0::stride], stride = ceil(n / max_values)"},
        "max_depth": MAX_DEPTH,
        "skipped_classes": SKIP_CLASSES,
        "calls": calls,
        "components": components,
    }
    (tmp / "manifest.json").write_text(dump_manifest(manifest), encoding="utf-8")
    if args.out.exists():
        shutil.rmtree(args.out)
    tmp.rename(args.out)
    total = sum((args.out / c["file"]).stat().st_size for c in calls) + (args.out / "manifest.json").stat().st_size
    print(f"make_module_references: {len(calls)} calls, {sum(len(components[c['component']]['modules']) for c in calls)} module outputs, {total} bytes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
