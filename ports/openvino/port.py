"""OpenVINO as an sd-harness port: the same ONNX files, compiled by OpenVINO's CPU plugin.

    sd-harness conformance --port ".venv/bin/python ports/openvino/port.py"              # OpenVINO's default precision
    sd-harness conformance --port ".venv/bin/python ports/openvino/port.py --precision f32"

The handshake and each load reply record the inference precision the compiled model actually uses
(the plugin's INFERENCE_PRECISION_HINT after compilation): by default OpenVINO picks bf16 on CPUs
with AMX / AVX512-BF16 and f32 elsewhere, so a "default" run means different numbers on different
machines, and the report says which.
"""
import argparse
import os
import platform
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import openvino as ov  # noqa: E402

from sdh_port import Port, Session, io, serve  # noqa: E402

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


class OvSession(Session):
    def __init__(self, core: "ov.Core", file: str, device: str, config: dict):
        model = core.read_model(file)
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


class OvPort(Port):
    name = "openvino"
    version = ov.get_version().split("-")[0]
    backend = f"OpenVINO {ov.get_version()}"

    def __init__(self, precision: str, device: str):
        self.core = ov.Core()
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
        return OvSession(self.core, file, self.device_name, config)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precision", default="default", help="INFERENCE_PRECISION_HINT: default (the plugin's choice), f32, bf16, f16")
    ap.add_argument("--device", default="CPU")
    a = ap.parse_args()
    serve(OvPort(a.precision, a.device))
