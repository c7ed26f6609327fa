"""onnxruntime in Python as an sd-harness port: the reference adapter. It runs the ONNX files the
harness names with the session options runtime ort-node uses, so its figures are ort-node's.

    sd-harness conformance --port ".venv/bin/python ports/onnxruntime/port.py" [--localize]

--localize goes through protocol 1.1's `modules`: a copy of the graph that also returns the module
tensors the harness names (appended as outputs carrying only a name, as src/onnx/graph-outputs.ts
does for runtime ort-node), run with the same options, so its figures are ort-node's --localize ones.
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import onnxruntime as ort  # noqa: E402

from sdh_port import Port, Session, io, module_tensor_names, pick_modules, serve  # noqa: E402

# onnxruntime's type strings -> the protocol's
TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def session_options(threads: int) -> "ort.SessionOptions":
    so = ort.SessionOptions()
    # as src/runtime/ort-node.ts: every graph optimization, sequential, memory pattern on, arena off
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_mem_pattern = True
    so.enable_cpu_mem_arena = False
    so.log_severity_level = 3
    return so


def with_extra_outputs(file: str, names, folder: str) -> str:
    """A copy of the model in folder that also returns the named tensors; its external data files
    are linked, not copied. The model's own outputs keep their place, the extra ones follow."""
    import onnx

    model = onnx.load(file, load_external_data=False)
    own = {v.name for v in model.graph.output} | {v.name for v in model.graph.input}
    for n in names:
        if n not in own:
            model.graph.output.append(onnx.ValueInfoProto(name=n))
    src = os.path.dirname(os.path.abspath(file))
    for init in model.graph.initializer:
        for e in init.external_data:
            if e.key == "location" and not os.path.exists(os.path.join(folder, e.value)):
                os.makedirs(os.path.dirname(os.path.join(folder, e.value)) or folder, exist_ok=True)
                os.symlink(os.path.join(src, e.value), os.path.join(folder, e.value))
    out = os.path.join(folder, "model.onnx")
    with open(out, "wb") as f:
        f.write(model.SerializeToString())
    return out


class OrtSession(Session):
    def __init__(self, file: str, threads: int):
        self.file, self.threads = file, threads
        self.modules_session = None  # (tensor names, session, folder) of the last `modules` request
        self.s = ort.InferenceSession(file, session_options(threads), providers=["CPUExecutionProvider"])
        self.inputs = [io(i.name, TYPES[i.type], i.shape) for i in self.s.get_inputs()]
        self.outputs = [io(o.name, TYPES[o.type], o.shape) for o in self.s.get_outputs()]
        self.precision = "f32"

    def run(self, feeds, outputs):
        return dict(zip(outputs, self.s.run(outputs, feeds)))

    def run_modules(self, feeds, modules):
        names = module_tensor_names(modules)
        if self.modules_session is None or self.modules_session[0] != names:
            self.drop_modules_session()
            folder = tempfile.mkdtemp(prefix="sdh-ort-modules-")
            try:
                s = ort.InferenceSession(with_extra_outputs(self.file, names, folder), session_options(self.threads), providers=["CPUExecutionProvider"])
            except Exception:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            self.modules_session = (names, s, folder)
        s = self.modules_session[1]
        inputs = {i.name for i in s.get_inputs()}
        fetch = [n for n in names if n not in inputs]
        fetched = dict(zip(fetch, s.run(fetch, feeds)))
        return pick_modules(modules, fetched)

    def drop_modules_session(self):
        if self.modules_session is not None:
            shutil.rmtree(self.modules_session[2], ignore_errors=True)
            self.modules_session = None

    def release(self):
        self.drop_modules_session()


class OrtPort(Port):
    name = "onnxruntime-python"
    version = ort.__version__
    device = "cpu"
    precision = "f32"
    backend = f"onnxruntime {ort.__version__} CPUExecutionProvider"
    modules = ("text_encoder", "unet", "vae_decode", "vae_encode")

    def load(self, component, model_dir, file, threads):
        return OrtSession(file, threads)


if __name__ == "__main__":
    serve(OrtPort())
