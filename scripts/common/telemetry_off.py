"""onnxruntime (Python too) has telemetry on by default: it reads /etc/machine-id and writes under
~/.cache/Microsoft and $TMPDIR from the first import on. Off unless the user chose otherwise, as in
sd-harness itself (src/util/telemetry-off.ts). Import this module before anything that imports
onnxruntime, optimum or onnxruntime.transformers:

    import common.telemetry_off  # noqa: F401  (before onnxruntime)
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
