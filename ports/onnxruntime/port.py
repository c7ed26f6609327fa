"""onnxruntime in Python as an sd-harness port: the reference adapter. It runs the ONNX files the
harness names with the session options runtime ort-node uses, so its figures are ort-node's.

    sd-harness conformance --port ".venv/bin/python ports/onnxruntime/port.py"
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import onnxruntime as ort  # noqa: E402

from sdh_port import Port, Session, io, serve  # noqa: E402

# onnxruntime's type strings -> the protocol's
TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32"}


class OrtSession(Session):
    def __init__(self, file: str, threads: int):
        so = ort.SessionOptions()
        # as src/runtime/ort-node.ts: every graph optimization, sequential, memory pattern on, arena off
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.enable_mem_pattern = True
        so.enable_cpu_mem_arena = False
        so.log_severity_level = 3
        self.s = ort.InferenceSession(file, so, providers=["CPUExecutionProvider"])
        self.inputs = [io(i.name, TYPES[i.type], i.shape) for i in self.s.get_inputs()]
        self.outputs = [io(o.name, TYPES[o.type], o.shape) for o in self.s.get_outputs()]
        self.precision = "f32"

    def run(self, feeds, outputs):
        return dict(zip(outputs, self.s.run(outputs, feeds)))


class OrtPort(Port):
    name = "onnxruntime-python"
    version = ort.__version__
    device = "cpu"
    precision = "f32"
    backend = f"onnxruntime {ort.__version__} CPUExecutionProvider"

    def load(self, component, model_dir, file, threads):
        return OrtSession(file, threads)


if __name__ == "__main__":
    serve(OrtPort())
