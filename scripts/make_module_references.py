"""Per-module PyTorch references: the output of every named module for a few chosen calls.

    .venv/bin/python scripts/make_module_references.py --model fixtures/models/tiny-sd \
        --references fixtures/references/tiny-sd/cpu --out fixtures/references/tiny-sd/modules

`sd-harness conformance --localize` compares these with the same tensors taken out of an ONNX port
(the exporter names nodes after the module scope, `/down_blocks.1/attentions.0/...`), to name the
module where drift starts. Calls recorded (inputs copied from the main reference set's cases, so
both sets describe the same calls; the source case's sha256 is recorded). Which cases, is read from
the reference set's manifest (pick_calls), so every fixture's set is made by the same command:

  text_encoder  one call: input_ids of the first batch-1 `text_encoder:*` case
  unet          two calls of one denoising run: its first and last stored step (sample, timestep,
                encoder_hidden_states as diffusers fed them). The run: a txt2img run (else any run
                but inpainting) with the most stored steps, then the smallest sample, then the first
                in the manifest (`unet:txt2img-pndm-64x64-step00` / `-step10` on tiny-sd);
                --unet-run names another
  vae_decoder   one decode: the smallest batch-1 `vae_decode:*` case's latents divided by
                scaling_factor, as vae.decode receives them (what the ONNX decoder's latent_sample is)
  vae_encoder   one encode: the smallest batch-1 `vae_encode:*` case's image; the ONNX encoder is
                encoder + quant_conv

Forward hooks record every module's output (a tuple's first tensor: the hidden states); a module
called twice in one call keeps its last output (the ONNX side takes a scope's last output too).
What is stored, to keep the fixtures small (the budget is 40 MB for all of fixtures/):

  * every module down to the leaves (to_q, conv1, fc1, norm2, ...), except those that compute
    nothing at inference or only repeat a neighbour (SKIP_CLASSES: dropout, identity,
    parameter-free activations); the manifest's `not_stored` lists those with the reason;
  * whole tensors as long as one call's module values fit --budget bytes (float32). Over it, the
    budget is shared by water-filling: the largest cap c with sum(min(n_i, c)) values within the
    budget; a tensor of n_i <= c values is stored whole, a larger one at up to c positions of a
    Latin hypercube sample of its index space (positions_for: every index of every axis no longer
    than c is sampled, so every channel / feature / row / column is seen), seeded by --seed, the
    component and the shape, shared by the component's tensors of that shape and by all its calls.
    The positions are stored with the set (positions.safetensors, int32, one tensor per
    `<component>/<shape>`, which the module's entry names), so the ONNX side reads the same elements. A random sample has no blind spot a fixed stride has (every 8th value of an
    8-wide map is column 0 only, where a 3x3 conv's left tap reads zero padding). Drift figures of a
    sampled tensor are those of the sample (relL2 and cosine estimate the whole tensor's; max abs
    can only be lower).

Each module also records where its input came from (`input`): the stored module whose output
object it received, following unstored modules (an activation) back to a stored one, or `input:<name>`
for a call input; null when its input was made by tensor ops outside any module (a residual add,
a concat). The ONNX side uses it for "drift introduced" (drift at the output / drift at the input).

Output: one safetensors file per call (the call inputs as `input:<name>`; every module's values in
one float32 tensor `modules`, each module's at its entry's `offset`), positions.safetensors when a
tensor was sampled, manifest.json with provenance (versions, device, command, sha256 of every file
and of this script) and per component the stored modules in the order their outputs come to exist
(`modules`: name, class, shape, `values` = "whole" or the positions tensor's name, offset, count,
calls, input) and the modules not stored, in the order they start (`not_stored`: [path, class, why]).
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

FORMAT = "sd-harness-module-references/2"
DEFAULT_BUDGET = 96 * 1024
DEFAULT_SEED = 0
POSITIONS_FILE = "positions.safetensors"
VALUES = "modules"  # a call file's tensor of every module's values, each at its entry's offset
SKIP_CLASSES = {
    "Dropout": "no computation at inference",
    "Identity": "no computation",
    "SiLU": "parameter-free activation (checked through the module it feeds)",
    "GELU": "parameter-free activation (checked through the module it feeds)",
    "QuickGELUActivation": "parameter-free activation (checked through the module it feeds)",
    "GELUActivation": "parameter-free activation (checked through the module it feeds)",
}


def pick_calls(cases: list[dict], unet_run: str | None = None) -> dict[str, list[str]]:
    """The reference cases whose inputs the module set records, read from the set's manifest (see
    the module docstring). Raises SystemExit naming what is missing."""
    def numel(case: dict, tensor: str) -> int:
        return math.prod(case["tensors"][tensor][1])

    def batch1(stage: str, tensor: str) -> list[dict]:
        return [c for c in cases if c["stage"] == stage and c["tensors"].get(tensor, ["", [0]])[1][0] == 1]

    text = batch1("text_encoder", "input_ids")
    decode = sorted(batch1("vae_decode", "latents"), key=lambda c: numel(c, "latents"))  # stable: manifest order on ties
    encode = sorted(batch1("vae_encode", "image"), key=lambda c: numel(c, "image"))
    runs: dict[str, list[dict]] = {}
    for c in cases:
        if c["stage"] == "unet" and c.get("meta", {}).get("run"):
            runs.setdefault(c["meta"]["run"], []).append(c)
    if unet_run is not None:
        if unet_run not in runs:
            raise SystemExit(f"--unet-run {unet_run}: no such run in the reference set; runs: {', '.join(runs)}")
        run = unet_run
    else:
        txt = [r for r in runs if r.startswith("txt2img-")] or [r for r in runs if not r.startswith("inpaint-")]
        order = list(runs)
        run = min(txt, key=lambda r: (-len(runs[r]), numel(runs[r][0], "sample"), order.index(r))) if txt else None
    missing = [what for what, got in [("a batch-1 text_encoder case", text), ("a U-Net run", run), ("a batch-1 vae_decode case", decode),
                                      ("a batch-1 vae_encode case", encode)] if not got]
    if missing:
        raise SystemExit(f"the reference set has no {', no '.join(missing)}")
    steps = sorted(runs[run], key=lambda c: c["meta"].get("call", 0))
    unet = [steps[0]["id"]] + ([steps[-1]["id"]] if len(steps) > 1 else [])
    return {"text_encoder": [text[0]["id"]], "unet": unet, "vae_decoder": [decode[0]["id"]], "vae_encoder": [encode[0]["id"]]}


def water_fill(sizes: list[int], budget_values: int) -> int | None:
    """The largest cap c with sum(min(n, c)) <= budget_values; None when everything fits whole."""
    if sum(sizes) <= budget_values:
        return None
    ordered = sorted(sizes)
    used = 0
    for k, n in enumerate(ordered):
        rest = len(ordered) - k  # tensors of n values or more, each capped at c >= n
        if used + n * rest > budget_values:
            return max(1, (budget_values - used) // rest)
        used += n
    return ordered[-1]


def positions_for(seed: int, component: str, shape: list[int], count: int) -> np.ndarray:
    """Up to `count` distinct flat positions of a tensor of `shape`, increasing: a Latin hypercube
    sample of its index space, seeded by (seed, component, shape). Along every axis of length S the
    k-th draw's index is floor((perm[k] + u_k) * S / count) for a random permutation perm of
    0..count-1 and u_k uniform in [0, 1): each axis is cut into `count` equal strata and each
    stratum is drawn once, so every index of an axis no longer than `count` is sampled (every
    channel, every feature, every row and column), whatever the layout. Repeated positions are
    dropped, so a few tensors keep fewer than `count` values."""
    key = int.from_bytes(hashlib.sha256(f"{seed}:{component}:{'x'.join(map(str, shape))}".encode()).digest()[:8], "little")
    rng = np.random.Generator(np.random.PCG64(key))
    flat = np.zeros(count, dtype=np.int64)
    for size in shape:
        axis = ((rng.permutation(count) + rng.random(count)) * size / count).astype(np.int64)
        flat = flat * size + np.minimum(axis, size - 1)
    return np.unique(flat).astype(np.int32)


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


def record(component: str, root: torch.nn.Module, inputs: dict[str, torch.Tensor], call, budget: int, seed: int,
           positions: dict[str, np.ndarray]) -> tuple[dict, list, dict]:
    """Run one call under hooks. Returns the arrays to save, the stored modules' entries in the order
    their outputs were produced, and the modules not stored. `positions` (`<component>/<size>` ->
    flat positions) is shared by every call: a component's second call reuses its first's."""
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
        chunks = []
        offset = 0
        kept = [n for n in produced if n in stored]
        cap = water_fill([rec.outputs[n].numel() for n in kept], budget // 4)
        for n in kept:
            flat = rec.outputs[n].contiguous().reshape(-1).numpy()
            whole = cap is None or flat.size <= cap
            if whole:
                values = np.ascontiguousarray(flat)
            else:
                shape = list(rec.outputs[n].shape)
                key = f"{component}/{'x'.join(map(str, shape))}"
                if key not in positions:
                    positions[key] = positions_for(seed, component, shape, cap)
                values = np.ascontiguousarray(flat[positions[key]])
            chunks.append(values)
            entries.append({
                "name": n, "class": classes[n], "shape": list(rec.outputs[n].shape),
                "values": "whole" if whole else key, "offset": offset, "count": int(values.size),
                "calls": rec.calls[n], "input": rec.resolve_input(n, stored),
            })
            offset += int(values.size)
        # one tensor for all modules (a header entry per module would cost about 100 bytes each)
        arrays[VALUES] = np.ascontiguousarray(np.concatenate(chunks).astype(np.float32))
        # [path, class, why not stored], in the order the modules start (the stored ones are `modules`)
        tree = []
        for n in rec.start_order:
            why = skipped[n] if skipped[n] else (None if n in stored else "output is not a tensor")
            if why:
                tree.append([n, classes[n], why])
        # the VAE's decode does not call its encoder and vice versa: only the called modules are listed
        never = sum(1 for n, _ in rec.modules if n not in rec.start_order)
    return arrays, entries, {"not_stored": tree, "not_called": never}


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
    ap.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                    help=f"bytes of float32 module values per call; over it tensors are sampled (default {DEFAULT_BUDGET})")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the sampled positions")
    ap.add_argument("--unet-run", help="the U-Net run whose first and last step are recorded (default: see pick_calls)")
    args = ap.parse_args(argv)
    if args.budget < 4:
        ap.error("--budget must hold at least one value")
    if args.out.exists() and not args.force:
        ap.error(f"--out {args.out} exists; pass --force to replace it")

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.use_deterministic_algorithms(True, warn_only=True)
    ref_manifest = json.loads((args.references / "manifest.json").read_text(encoding="utf-8"))
    by_id = {c["id"]: c for c in ref_manifest["cases"]}
    picked = pick_calls(ref_manifest["cases"], args.unet_run)
    positions: dict[str, np.ndarray] = {}

    def rec(component, root, inputs, call):
        return record(component, root, inputs, call, args.budget, args.seed, positions)

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
    text_call = picked["text_encoder"][0]
    t, src = source(text_call)
    ids = torch.from_numpy(t["input_ids"].astype(np.int64))
    save(f"text_encoder:{text_call.split(':', 1)[1]}", "text_encoder", {"input_ids": "input:input_ids"}, src,
         rec("text_encoder", text, {"input_ids": ids}, lambda: text(ids)))

    unet = UNet2DConditionModel.from_pretrained(str(args.model / "unet")).eval()
    for cid in picked["unet"]:
        t, src = source(cid)
        x = {k: torch.from_numpy(t[k].copy()) for k in ("sample", "timestep", "encoder_hidden_states")}
        save(cid, "unet", {k: f"input:{k}" for k in x}, src,
             rec("unet", unet, x, lambda: unet(x["sample"], x["timestep"], x["encoder_hidden_states"])))

    vae = AutoencoderKL.from_pretrained(str(args.model / "vae")).eval()
    sf = vae.config.scaling_factor
    decode_call = picked["vae_decoder"][0]
    t, src = source(decode_call)
    latent = torch.from_numpy(t["latents"].copy()) / sf  # what vae.decode and the ONNX decoder receive
    save(f"vae_decoder:{decode_call.split(':', 1)[1]}", "vae_decoder", {"latent_sample": "input:latent_sample"}, src,
         rec("vae_decoder", vae, {"latent_sample": latent}, lambda: vae.decode(latent)))
    encode_call = picked["vae_encoder"][0]
    t, src = source(encode_call)
    image = torch.from_numpy(t["image"].copy())
    save(f"vae_encoder:{encode_call.split(':', 1)[1]}", "vae_encoder", {"sample": "input:sample"}, src,
         rec("vae_encoder", vae, {"sample": image}, lambda: vae.encode(image)))

    sampling = {
        "budget_bytes": args.budget, "seed": args.seed,
        "rule": "per call: whole tensors while their float32 values fit budget_bytes; else the largest cap c with "
                "sum(min(n, c)) values within it, tensors over c values sampled at c positions (positions_for: "
                "a Latin hypercube sample of the index space, c draws, each axis cut into c strata drawn once, repeats dropped, "
                "PCG64 seeded by sha256('<seed>:<component>:<shape joined by x>'); shared by a component's tensors of one shape "
                "and all its calls; an entry's `values` names them)",
    }
    if positions:
        save_file({k: positions[k] for k in sorted(positions)}, str(tmp / POSITIONS_FILE))
        sampling.update({"file": POSITIONS_FILE, "sha256": sha256_file(tmp / POSITIONS_FILE)})

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
        "sampling": sampling,
        "skipped_classes": SKIP_CLASSES,
        "calls": calls,
        "components": components,
    }
    (tmp / "manifest.json").write_text(dump_manifest(manifest), encoding="utf-8")
    if args.out.exists():
        shutil.rmtree(args.out)
    tmp.rename(args.out)
    total = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"make_module_references: {len(calls)} calls, {sum(len(components[c['component']]['modules']) for c in calls)} module outputs, {total} bytes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
