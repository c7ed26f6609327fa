"""OpenVINO as an sd-harness port: the same ONNX files, compiled by OpenVINO's CPU plugin.

    sd-harness conformance --port ".venv/bin/python ports/openvino/port.py"              # OpenVINO's default precision
    sd-harness conformance --port ".venv/bin/python ports/openvino/port.py --precision f32"

The handshake and each load reply record the inference precision the compiled model actually uses
(the plugin's INFERENCE_PRECISION_HINT after compilation): by default OpenVINO picks bf16 on CPUs
with AMX / AVX512-BF16 and f32 elsewhere, so a "default" run means different numbers on different
machines, and the report says which.

--localize goes through protocol 1.1's `modules`: the model is read again with the ONNX tensors the
harness names for each module added as outputs (`Model.add_outputs`), compiled with the same
settings, and each module's output is the tensor the harness would take (sdh_port.pick_modules).

--scale-weight NAME=FACTOR (repeatable) is a fault for showing that localization works through the
port: it multiplies the ONNX initializer NAME (e.g. model.down_blocks.1.resnets.0.conv1.weight) by
FACTOR in every component that has it, and the handshake's backend says so.
"""
import argparse
import os
import platform
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import openvino as ov  # noqa: E402

from sdh_port import Port, Session, io, module_tensor_names, pick_modules, serve  # noqa: E402

TYPES = {"f32": "float32", "f16": "float16", "f64": "float64", "i64": "int64", "i32": "int32"}


def cpu_name() -> str:
    try:
        return ov.Core().get_property("CPU", "FULL_DEVICE_NAME")
    except Exception:  # an older plugin without the property
        return platform.processor() or "CPU"


def name_of(port) -> str:
    """The ONNX graph's name for a port (OpenVINO keeps several; the graph's own has no "/")."""
    names = sorted(port.get_names())
    return next((n for n in names if not n.startswith("/")), port.get_any_name())


def precision_name(t) -> str:
    return t.get_type_name() if hasattr(t, "get_type_name") else str(t)


def spec(port) -> dict:
    ps = port.get_partial_shape()
    dims = [d.get_length() if d.is_static else f"d{i}" for i, d in enumerate(ps)] if ps.rank.is_static else []
    return io(name_of(port), TYPES[port.get_element_type().get_type_name()], dims)


def read_model(core: "ov.Core", file: str, scale: dict) -> "ov.Model":
    """The ONNX file as OpenVINO reads it, with the --scale-weight faults applied."""
    model = core.read_model(file)
    if scale:
        import openvino.opset13 as ops

        for op in model.get_ops():
            if op.get_type_name() != "Constant":
                continue
            names = op.output(0).get_names()
            hit = next((n for n in scale if n in names), None)
            if hit is None:
                continue
            data = op.get_data()
            new = ops.constant((data * scale[hit]).astype(data.dtype))
            new.output(0).set_names(names)
            op.output(0).replace(new.output(0))
            print(f"openvino port: {os.path.basename(os.path.dirname(file))}: {hit} {list(data.shape)} scaled by {scale[hit]} (--scale-weight)", file=sys.stderr)
        model.validate_nodes_and_infer_types()
    return model


class OvSession(Session):
    def __init__(self, core: "ov.Core", file: str, device: str, config: dict, scale: dict):
        self.core, self.file, self.device, self.config, self.scale = core, file, device, config, scale
        self.modules_compiled = None  # (tensor names, compiled model, request, name -> output port, unknown) of the last `modules` request
        model = read_model(core, file, scale)
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        self.inputs = [spec(p) for p in self.compiled.inputs]
        self.outputs = [spec(p) for p in self.compiled.outputs]
        # what the compiled model runs in, as the plugin reports it after compilation
        self.precision = precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(self, feeds, outputs):
        result = self.request.infer(feeds)
        by_name = {name_of(p): result[p] for p in self.compiled.outputs}
        return {n: by_name[n] for n in outputs}

    def run_modules(self, feeds, modules):
        names = module_tensor_names(modules)
        if self.modules_compiled is None or self.modules_compiled[0] != names:
            self.modules_compiled = None
            model = read_model(self.core, self.file, self.scale)
            inputs = {n for p in model.inputs for n in p.get_names()}
            unknown = {}
            for n in names:
                if n in inputs:
                    unknown[n] = "a graph input"
                    continue
                try:
                    model.add_outputs(n)
                except RuntimeError:  # folded away or renamed by OpenVINO's ONNX frontend
                    unknown[n] = "not a tensor of OpenVINO's graph"
            compiled = self.core.compile_model(model, self.device, self.config)
            ports = {n: p for p in compiled.outputs for n in p.get_names()}
            self.modules_compiled = (names, compiled, compiled.create_infer_request(), ports, unknown)
        _, _, request, ports, unknown = self.modules_compiled
        result = request.infer(feeds)
        fetched = {n: result[ports[n]] for n in names if n in ports}
        return pick_modules(modules, fetched, unknown)

    def release(self):
        self.modules_compiled = None


class OvPort(Port):
    name = "openvino"
    version = ov.get_version().split("-")[0]
    backend = f"OpenVINO {ov.get_version()}"
    modules = ("text_encoder", "unet", "vae_decode", "vae_encode")

    def __init__(self, precision: str, device: str, scale: dict):
        self.core = ov.Core()
        self.scale = scale
        if scale:
            self.backend += " with a fault: " + ", ".join(f"{n} x{f}" for n, f in scale.items())
        self.device_name = device
        self.config = {} if precision == "default" else {"INFERENCE_PRECISION_HINT": precision}
        self.device = f"{device}: {cpu_name()}" if device == "CPU" else device
        # what the plugin will use, asked before any model is compiled
        actual = precision_name(self.core.get_property(device, "INFERENCE_PRECISION_HINT"))
        # the handshake says what was asked for; each load reply says what the compiled model uses
        # (a CPU without bf16 support compiles a bf16 request in f32)
        self.precision = f"default ({actual})" if precision == "default" else precision

    def load(self, component, model_dir, file, threads):
        config = dict(self.config)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        return OvSession(self.core, file, self.device_name, config, self.scale)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precision", default="default", help="INFERENCE_PRECISION_HINT: default (the plugin's choice), f32, bf16, f16")
    ap.add_argument("--device", default="CPU")
    ap.add_argument("--scale-weight", action="append", default=[], metavar="NAME=FACTOR",
                    help="a fault: multiply the ONNX initializer NAME by FACTOR (repeatable)")
    a = ap.parse_args()
    scale = {}
    for item in a.scale_weight:
        name, _, factor = item.rpartition("=")
        if not name:
            ap.error(f"--scale-weight {item!r}: expected NAME=FACTOR")
        scale[name] = float(factor)
    serve(OvPort(a.precision, a.device, scale))
