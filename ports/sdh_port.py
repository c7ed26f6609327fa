"""The port's side of sd-harness's port protocol 1.1 (docs/port-protocol.md), so that an adapter is
a subclass of Port with a load() method and a Session with a run() method, and one call to serve().
For `conformance --localize` (1.1's optional `modules` operation), the Port lists the operations in
`modules` and its Session implements run_modules(); adapters on the ONNX files use
module_tensor_names() and pick_modules() to get the tensors the harness would take.

The harness starts the adapter, writes one JSON request per line to its stdin and reads one JSON
reply per line from its stdout; tensors travel as safetensors files in a folder the harness owns.
serve() keeps the real stdout for the protocol alone: whatever else is printed (by the adapter or a
library, from Python or from C) goes to stderr, which the harness keeps to quote when a call fails.

Needs numpy only (safetensors files are read and written here, with no safetensors package).
"""
from __future__ import annotations

import json
import os
import struct
import sys
import traceback
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

PROTOCOL = 1
#: 1.1 adds the optional `modules` operation (module outputs by name, for --localize)
PROTOCOL_MINOR = 1
#: the protocol's operations, one per component of an SD 1.x model
OPERATIONS = ("text_encoder", "unet", "vae_decode", "vae_encode")

_ST = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}
_TO_ST = {np.dtype(v).str: k for k, v in _ST.items()}
#: protocol element type names <-> numpy
TYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "int64": np.int64, "int32": np.int32}


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        begin, end = h["data_offsets"]
        out[name] = np.frombuffer(data[base + begin:base + end], dtype=_ST[h["dtype"]]).reshape(h["shape"]).copy()
    return out


def write_safetensors(path: str, tensors: Dict[str, np.ndarray]) -> None:
    header = {}
    chunks = []
    offset = 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        key = a.dtype.newbyteorder("<").str if a.dtype.byteorder == ">" else a.dtype.str
        if key not in _TO_ST:
            raise TypeError(f"output {name}: dtype {a.dtype} has no protocol type (float32, float16, float64, int64, int32)")
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _TO_ST[key], "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    text = json.dumps(header)
    text += " " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for b in chunks:
            f.write(b)


def io(name: str, type: str, shape: Sequence) -> dict:
    """One input or output as the load reply declares it: shape entries are sizes or dimension names."""
    return {"name": name, "type": type, "shape": [d if isinstance(d, int) and d >= 0 else str(d) if d is not None else "?" for d in shape]}


def canonical_io(component: str, *, hidden_layers: int = 0, hidden: int | str = "hidden", ids_type: str = "int32") -> tuple:
    """Inputs and outputs of an operation as protocol 1 names them (what the ONNX exports take).

    hidden_layers > 0 adds the text encoder's hidden_states.0..N outputs (clip skip needs them)."""
    if component == "text_encoder":
        outs = [io("last_hidden_state", "float32", ["batch", "sequence", hidden])]
        outs += [io(f"hidden_states.{i}", "float32", ["batch", "sequence", hidden]) for i in range(hidden_layers + 1)] if hidden_layers else []
        return [io("input_ids", ids_type, ["batch", "sequence"])], outs
    if component == "unet":
        return ([io("sample", "float32", ["batch", "channels", "height", "width"]), io("timestep", "float32", [1]),
                 io("encoder_hidden_states", "float32", ["batch", "sequence", hidden])],
                [io("out_sample", "float32", ["batch", 4, "height", "width"])])
    if component == "vae_decode":
        return [io("latent_sample", "float32", ["batch", 4, "h", "w"])], [io("sample", "float32", ["batch", 3, "height", "width"])]
    if component == "vae_encode":
        return [io("sample", "float32", ["batch", 3, "height", "width"])], [io("latent_parameters", "float32", ["batch", 8, "h", "w"])]
    raise ValueError(component)


class Session:
    """One loaded component. Set inputs / outputs (lists of io(...)) and, where known, the precision
    it actually computes in; run() returns numpy arrays, cast by serve() to the declared types."""

    inputs: List[dict] = []
    outputs: List[dict] = []
    precision: Optional[str] = None

    def run(self, feeds: Dict[str, np.ndarray], outputs: List[str]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def run_modules(self, feeds: Dict[str, np.ndarray], modules: List[dict]) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
        """Protocol 1.1 `modules`: run on feeds and return (values by module name, reason by module
        name for each module not returned). Each entry of modules has "name" (the PyTorch module
        path), "shape" (its output's shape) and, where the harness found them in the component's
        model.onnx, "tensors" (the candidates; pick_modules() takes the harness's choice)."""
        raise NotImplementedError

    def release(self) -> None:
        pass


def module_tensor_names(modules: List[dict]) -> List[str]:
    """Every ONNX tensor a `modules` request names, once each, in request order."""
    return list(dict.fromkeys(t for m in modules for t in m.get("tensors") or ()))


def pick_modules(modules: List[dict], fetched: Dict[str, np.ndarray], unknown: Optional[Dict[str, str]] = None) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """The harness's rule for an ONNX graph's module tensors (src/onnx/graph-outputs.ts): a module's
    output is the last of its tensors (graph order) that is float and of the module's shape.
    fetched holds the tensors computed by name; unknown says why a tensor could not be fetched."""
    values: Dict[str, np.ndarray] = {}
    missing: Dict[str, str] = {}
    for m in modules:
        tensors = m.get("tensors") or []
        if not tensors:
            missing[m["name"]] = "the harness names no ONNX tensor for it"
            continue
        shape = tuple(m["shape"])
        pick = next((t for t in reversed(tensors) if t in fetched and np.asarray(fetched[t]).dtype.kind == "f" and tuple(np.shape(fetched[t])) == shape), None)
        if pick is None:
            seen = ", ".join(f"{t}: {np.asarray(fetched[t]).dtype} {list(np.shape(fetched[t]))}" if t in fetched else f"{t}: {(unknown or {}).get(t, 'not computed')}" for t in tensors)
            missing[m["name"]] = f"none of its tensors is float of shape {list(shape)} ({seen})"[:300]
            continue
        values[m["name"]] = np.asarray(fetched[pick])
    return values, missing


class Port:
    """The adapter: its name, version, device and precision for the handshake, what it runs, and load()."""

    name = "port"
    version = "0"
    device = "cpu"
    precision = "f32"
    backend = "python"
    #: protocol 1.1: the operations whose sessions implement run_modules() (--localize through the port)
    modules: Sequence[str] = ()

    def components(self) -> Dict[str, Optional[str]]:
        """Per operation: None when supported, else the reason it is not (reported as not covered)."""
        return {op: None for op in OPERATIONS}

    def load(self, component: str, model_dir: str, file: str, threads: int) -> Session:
        raise NotImplementedError


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".replace("\n", " ")[:500]


def serve(port: Port) -> None:
    """Answer the harness's requests until shutdown or the end of stdin."""
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    # from here on, anything printed to fd 1 (Python or a C library) lands on stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(msg: dict) -> None:
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    sessions: Dict[str, Session] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        rid, op = req.get("id"), req.get("op")
        try:
            if op == "hello":
                if req.get("protocol") != PROTOCOL:
                    raise ValueError(f"this adapter speaks protocol {PROTOCOL}, the harness {req.get('protocol')}")
                comps = port.components()
                reply({"id": rid, "ok": True, "protocol": PROTOCOL, "minor": PROTOCOL_MINOR,
                       "port": {"name": port.name, "version": str(port.version), "device": port.device,
                                "precision": port.precision, "backend": port.backend},
                       "components": {c: ({"supported": True} if comps.get(c) is None else {"supported": False, "reason": comps[c]}) for c in OPERATIONS},
                       "modules": [c for c in port.modules if c in OPERATIONS and comps.get(c) is None]})
            elif op == "load":
                s = port.load(req["component"], req["model_dir"], req["file"], int(req.get("threads") or 0))
                sid = f"{req['component']}-{len(sessions) + 1}"
                while sid in sessions:
                    sid += "+"
                sessions[sid] = s
                r = {"id": rid, "ok": True, "session": sid, "inputs": s.inputs, "outputs": s.outputs}
                if s.precision:
                    r["precision"] = s.precision
                reply(r)
            elif op == "run":
                s = sessions[req["session"]]
                feeds = read_safetensors(req["inputs"])
                wanted = list(req["outputs"])
                got = s.run(feeds, wanted)
                types = {o["name"]: TYPES[o["type"]] for o in s.outputs}
                write_safetensors(req["output"], {n: np.asarray(got[n]).astype(types[n], copy=False) for n in wanted})
                reply({"id": rid, "ok": True})
            elif op == "modules":
                s = sessions[req["session"]]
                values, missing = s.run_modules(read_safetensors(req["inputs"]), list(req["modules"]))
                # module outputs travel as float32 (float16 / float64 as they are)
                write_safetensors(req["output"], {n: (a if a.dtype in (np.float16, np.float32, np.float64) else a.astype(np.float32))
                                                  for n, a in ((n, np.asarray(v)) for n, v in values.items())})
                reply({"id": rid, "ok": True, "missing": {n: str(w).replace("\n", " ")[:300] for n, w in missing.items()}})
            elif op == "release":
                s = sessions.pop(req["session"], None)
                if s is not None:
                    s.release()
                reply({"id": rid, "ok": True})
            elif op == "shutdown":
                reply({"id": rid, "ok": True})
                return
            else:
                reply({"id": rid, "ok": False, "error": f"unknown op {op!r}"})
        except Exception as e:  # the harness reports the refusal in one line; the trace goes to stderr
            traceback.print_exc(file=sys.stderr)
            reply({"id": rid, "ok": False, "error": _one_line(e)})
