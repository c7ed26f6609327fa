#!/usr/bin/env bash
# Rebuild the fixtures from scratch with the pinned toolchain (.venv: scripts/setup.sh).
#   scripts/make_fixtures.sh         the PyTorch model folders (fixtures/models/tiny-sd, -inpaint and
#                                    the further presets): not committed, because make_tiny_model.py
#                                    rebuilds them bit for bit; make_references.py and
#                                    export_optimum.sh read them
#   scripts/make_fixtures.sh --all   everything under fixtures/: the tiny models (PyTorch and ONNX),
#                                    the optimum export, the fp16 / int8 variants, the reference sets
#                                    and the module reference sets
# Every step is deterministic on a given toolchain; scripts/check_reproducible.sh rebuilds into a
# temporary folder and compares with the committed files.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py=.venv/bin/python
[ -x "$py" ] || { echo "make_fixtures: run scripts/setup.sh first" >&2; exit 2; }
models=fixtures/models
if [ "${1:-}" != "--all" ]; then
  "$py" scripts/make_tiny_model.py --out "$models" --models all --no-onnx
  exit 0
fi
"$py" scripts/make_tiny_model.py --out "$models" --models all
scripts/export_optimum.sh "$root" tiny-sd-wide
"$py" scripts/quantize.py "$models/tiny-sd-onnx" "$models/tiny-sd-fp16-onnx" --mode fp16 --compact-names --overwrite
"$py" scripts/quantize.py "$models/tiny-sd-onnx" "$models/tiny-sd-int8-onnx" --mode int8-dynamic --compact-names --overwrite
"$py" scripts/make_references.py --model "$models/tiny-sd" --inpaint-model "$models/tiny-sd-inpaint" \
  --out fixtures/references/tiny-sd/cpu --force
for m in tiny-sd-wide tiny-sd-3block-linear tiny-sd-2block-euler tiny-sd-legacy-pndm; do
  "$py" scripts/make_references.py --model "$models/$m" --preset small --out "fixtures/references/$m/cpu" --force
done
# module reference sets (--localize); not for tiny-sd-legacy-pndm, whose components are tiny-sd's
# (conformance/README.md, "Where drift starts")
for m in tiny-sd tiny-sd-wide; do
  "$py" scripts/make_module_references.py --model "$models/$m" --references "fixtures/references/$m/cpu" \
    --out "fixtures/references/$m/modules" --force
done
# the two further geometries sample a third of the default 96 KiB per call: room in the 40 MB for
# the trained shapes-sd (fixtures/README.md, "Budget")
for m in tiny-sd-3block-linear tiny-sd-2block-euler; do
  "$py" scripts/make_module_references.py --model "$models/$m" --references "fixtures/references/$m/cpu" \
    --out "fixtures/references/$m/modules" --force --budget 32768
done
