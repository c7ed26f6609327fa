"""diffusers' PyTorch components as an sd-harness port, in bfloat16 (or float16 / float32) on CPU.

    sd-harness conformance --profile bf16 \\
      --port ".venv/bin/python ports/diffusers/port.py --model fixtures/models/tiny-sd --inpaint-model fixtures/models/tiny-sd-inpaint"

The ONNX files the harness names are ignored: each component is loaded from the diffusers folder
(--model; --inpaint-model for the 9-channel U-Net, chosen when the harness's model folder has one),
cast to --dtype, fed the harness's float32 inputs cast to that dtype, and its outputs returned as
float32. The harness's --model stays the ONNX export of the same model (tokenizer, configs).

--localize goes through protocol 1.1's `modules` by forward hooks on the named modules (the ONNX
tensor names in the request are not needed): each module's output as scripts/make_module_references.py
records it (a tuple's first tensor; the last call's, for a module called more than once), in float32.
--scale-weight NAME=FACTOR (repeatable), a fault for showing it works, multiplies the parameter NAME
of a component (its state_dict name, e.g. down_blocks.1.resnets.0.conv1.weight) by FACTOR.
"""
import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextModel  # noqa: E402

from sdh_port import Port, Session, canonical_io, serve  # noqa: E402

DTYPES = {"bfloat16": (torch.bfloat16, "bf16"), "float16": (torch.float16, "f16"), "float32": (torch.float32, "f32")}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


class TorchSession(Session):
    def __init__(self, component, folder, dtype, tag, onnx_io, scale=None):
        self.component, self.dtype, self.precision = component, dtype, tag
        self.inputs, self.outputs = onnx_io
        if component == "text_encoder":
            self.model = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), torch_dtype=dtype)
        elif component == "unet":
            self.model = UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet"), torch_dtype=dtype)
        else:
            self.model = AutoencoderKL.from_pretrained(os.path.join(folder, "vae"), torch_dtype=dtype)
        self.model.eval()
        params = dict(self.model.named_parameters())
        for name, factor in (scale or {}).items():
            if name in params:
                with torch.no_grad():
                    params[name].mul_(factor)
                print(f"diffusers port: {component}: {name} {list(params[name].shape)} scaled by {factor} (--scale-weight)", file=sys.stderr)

    def run_modules(self, feeds, modules):
        named = dict(self.model.named_modules())
        got, missing, handles = {}, {}, []

        def hook(name):
            def record(_module, _args, output):
                y = first_tensor(output)
                if y is not None:
                    got[name] = y.detach().float().numpy().copy()
            return record

        for m in modules:
            if m["name"] in named:
                handles.append(named[m["name"]].register_forward_hook(hook(m["name"])))
            else:
                missing[m["name"]] = f"{type(self.model).__name__} has no module of that name"
        try:
            self.run(feeds, [o["name"] for o in self.outputs[:1]])
        finally:
            for h in handles:
                h.remove()
        values = {}
        for m in modules:
            n = m["name"]
            if n in missing:
                continue
            if n not in got:
                missing[n] = "its forward hook did not fire (not called in this component's forward)"
            elif list(got[n].shape) != list(m["shape"]):
                missing[n] = f"its output has shape {list(got[n].shape)}, the reference's {list(m['shape'])}"
            else:
                values[n] = got[n]
        return values, missing

    @torch.no_grad()
    def run(self, feeds, outputs):
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        f = lambda a: t(a).to(self.dtype)  # noqa: E731
        out = lambda x: x.float().numpy()  # noqa: E731
        if self.component == "text_encoder":
            r = self.model(t(feeds["input_ids"]).long(), output_hidden_states=True)
            got = {"last_hidden_state": out(r.last_hidden_state), "pooler_output": out(r.pooler_output)}
            got.update({f"hidden_states.{i}": out(h) for i, h in enumerate(r.hidden_states)})
            return {n: got[n] for n in outputs}
        if self.component == "unet":
            ts = t(feeds["timestep"]).float()
            r = self.model(f(feeds["sample"]), ts, encoder_hidden_states=f(feeds["encoder_hidden_states"])).sample
            return {outputs[0]: out(r)}
        if self.component == "vae_decode":
            return {outputs[0]: out(self.model.decode(f(feeds["latent_sample"])).sample)}
        # vae_encode: the latent distribution's parameters, mean and log-variance (as the ONNX export gives)
        return {outputs[0]: out(self.model.encode(f(feeds["sample"])).latent_dist.parameters)}


def first_tensor(value):
    """The hidden states of a module's output, as the module references take them: the tensor, a
    tuple's first tensor, or a ModelOutput's first field."""
    if torch.is_tensor(value):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if torch.is_tensor(v)), None)
    if hasattr(value, "to_tuple"):
        return first_tensor(value.to_tuple())
    return None


def onnx_io(component, model_dir):
    """The ONNX folder's input and output names for this component, so the harness sees the export's."""
    if component == "text_encoder":
        cfg = json.load(open(os.path.join(model_dir, "text_encoder", "config.json")))
        ins, outs = canonical_io("text_encoder", hidden_layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"])
        outs.insert(1, {"name": "pooler_output", "type": "float32", "shape": ["batch", cfg["hidden_size"]]})
        return ins, outs
    return canonical_io(component)


class DiffusersPort(Port):
    name = "diffusers-torch"
    version = f"diffusers {diffusers.__version__}, torch {torch.__version__}"
    backend = f"PyTorch {torch.__version__} CPU"
    modules = ("text_encoder", "unet", "vae_decode", "vae_encode")

    def __init__(self, model, inpaint_model, dtype, scale=None):
        self.model, self.inpaint_model, self.scale = model, inpaint_model, scale or {}
        if self.scale:
            self.backend += " with a fault: " + ", ".join(f"{n} x{f}" for n, f in self.scale.items())
        self.dtype, self.precision = DTYPES[dtype]
        self.device = f"cpu: {cpu_name()}"

    def folder_for(self, model_dir):
        # the harness's folder has a 9-channel U-Net: the inpainting model
        try:
            inpaint = json.load(open(os.path.join(model_dir, "unet", "config.json"))).get("in_channels") == 9
        except OSError:
            inpaint = False
        if inpaint and not self.inpaint_model:
            raise ValueError(f"{model_dir} is an inpainting model; give its diffusers folder with --inpaint-model")
        return self.inpaint_model if inpaint else self.model

    def load(self, component, model_dir, file, threads):
        if threads:
            torch.set_num_threads(threads)
        return TorchSession(component, self.folder_for(model_dir), self.dtype, self.precision, onnx_io(component, model_dir), self.scale)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="diffusers folder of the model (text_encoder/, unet/, vae/)")
    ap.add_argument("--inpaint-model", help="diffusers folder of the inpainting model")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    ap.add_argument("--scale-weight", action="append", default=[], metavar="NAME=FACTOR",
                    help="a fault: multiply the parameter NAME by FACTOR (repeatable)")
    a = ap.parse_args()
    scale = {}
    for item in a.scale_weight:
        name, _, factor = item.rpartition("=")
        if not name:
            ap.error(f"--scale-weight {item!r}: expected NAME=FACTOR")
        scale[name] = float(factor)
    serve(DiffusersPort(a.model, a.inpaint_model, a.dtype, scale))
