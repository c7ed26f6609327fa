"""Time one U-Net call of several SD 1.x ONNX folders side by side, in one process (Python onnxruntime, CPU).

    .venv/bin/python scripts/time_unet.py fixtures/models/tiny-sd-onnx=fp32 fixtures/models/tiny-sd-int8-onnx=int8 DIR=LABEL ...

One call = the pipeline's U-Net call with classifier-free guidance (batch 2) at --size (default 64,
the 8x8 latents of the 64x64 reference cases), `--threads` intra-op threads (default 1). The
models are called in turn, round after round (--rounds, after 3 warm-up calls each), so load
from other work on the machine falls on all of them alike; the median and the spread (min–max) of
each are printed with the CPU model (lscpu) and the onnxruntime version. Session options as
sd-harness's: graph optimisation all, CPU arena off.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import common.telemetry_off  # noqa: F401  (before onnxruntime)
import onnxruntime as ort


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no lscpu)"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="DIR or DIR=LABEL (an SD 1.x ONNX folder)")
    ap.add_argument("--size", type=int, default=64, help="image size in pixels (latents size/8)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args(argv)

    runs = []
    for spec in args.models:
        d, _, label = spec.partition("=")
        folder = Path(d)
        cfg = json.loads((folder / "unet" / "config.json").read_text())
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.enable_cpu_mem_arena = False
        so.log_severity_level = 3
        s = ort.InferenceSession(str(folder / "unet" / "model.onnx"), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        lat = args.size // 8
        feeds = {
            "sample": rng.standard_normal((2, cfg["in_channels"], lat, lat)).astype(np.float32),
            "timestep": np.array([500.0], dtype=np.float32),
            "encoder_hidden_states": rng.standard_normal((2, 77, cfg["cross_attention_dim"])).astype(np.float32),
        }
        for _ in range(3):
            s.run(None, feeds)
        size = (folder / "unet" / "model.onnx").stat().st_size
        runs.append({"label": label or d, "session": s, "feeds": feeds, "times": [], "size": size})
    for _ in range(args.rounds):
        for r in runs:
            t = time.perf_counter()
            r["session"].run(None, r["feeds"])
            r["times"].append(time.perf_counter() - t)
    print(
        f"CPU: {cpu_model()}; onnxruntime {ort.__version__}; {args.threads} thread(s); U-Net call at {args.size}x{args.size}, batch 2; "
        f"{args.rounds} rounds, models interleaved"
    )
    for r in runs:
        ms = np.array(r["times"]) * 1e3
        print(
            f"{r['label']:>24}  unet/model.onnx {r['size']:>11,d} B  median {np.median(ms):8.3f} ms  (min {ms.min():.3f}, max {ms.max():.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
