#!/usr/bin/env bash
# Rebuild every fixture from scratch in a temporary folder (models, optimum export, fp16 / int8
# variants, reference sets) and compare each committed file's sha256, and each symlink's target,
# with the rebuild. Exit 0 when all match.
#   scripts/check_reproducible.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$root/.venv/bin/python"
[ -x "$py" ] || { echo "check_reproducible: run scripts/setup.sh first" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
new="$tmp/fixtures/models"
# files by sha256 and symlinks by target, relative to the folder
listing() { (cd "$1" && find . -type f ! -name manifest.json | sort | xargs -r sha256sum && find . -type l -printf '%p -> %l\n' | sort); }
compare() {  # label, committed folder, rebuilt folder
  listing "$2" >"$tmp/a"; listing "$3" >"$tmp/b"
  if diff -q "$tmp/a" "$tmp/b" >/dev/null; then echo "same  $1 ($(wc -l <"$tmp/a") entries)"; else echo "DIFF  $1"; diff "$tmp/a" "$tmp/b" | head; exit 1; fi
}
"$py" "$root/scripts/make_tiny_model.py" --out "$new" --models all >/dev/null 2>&1
for m in tiny-sd-onnx tiny-sd-inpaint-onnx tiny-sd-3block-linear-onnx tiny-sd-2block-euler-onnx tiny-sd-legacy-pndm-onnx; do
  compare "models/$m" "$root/fixtures/models/$m" "$new/$m"
done
# the PyTorch folders are not committed; compare them with local copies where there are some
for m in tiny-sd tiny-sd-inpaint tiny-sd-wide tiny-sd-3block-linear tiny-sd-2block-euler tiny-sd-legacy-pndm; do
  if [ -d "$root/fixtures/models/$m" ]; then compare "models/$m (local, not committed)" "$root/fixtures/models/$m" "$new/$m"; fi
done
"$root/scripts/export_optimum.sh" "$tmp" tiny-sd-wide >/dev/null 2>&1
compare "models/tiny-sd-wide-optimum-onnx" "$root/fixtures/models/tiny-sd-wide-optimum-onnx" "$new/tiny-sd-wide-optimum-onnx"
for v in fp16:fp16 int8:int8-dynamic; do
  name="${v%%:*}"; mode="${v#*:}"
  "$py" "$root/scripts/quantize.py" "$new/tiny-sd-onnx" "$new/tiny-sd-$name-onnx" --mode "$mode" --compact-names --overwrite >/dev/null 2>&1
  compare "models/tiny-sd-$name-onnx" "$root/fixtures/models/tiny-sd-$name-onnx" "$new/tiny-sd-$name-onnx"
done
# manifest.json: equal but for the command line and the --model paths
strip='import json,sys; m=json.load(open(sys.argv[1])); [m.pop(k, None) for k in ("command","model_dir")]; print(json.dumps(m,sort_keys=True))'
refs() {  # name, make_references.py arguments...
  local name="$1"; shift
  "$py" "$root/scripts/make_references.py" "$@" --out "$tmp/refs/$name" >/dev/null 2>&1
  compare "references/$name/cpu" "$root/fixtures/references/$name/cpu" "$tmp/refs/$name"
  "$py" -c "$strip" "$root/fixtures/references/$name/cpu/manifest.json" >"$tmp/a"
  "$py" -c "$strip" "$tmp/refs/$name/manifest.json" >"$tmp/b"
  if diff -q "$tmp/a" "$tmp/b" >/dev/null; then echo "same  references/$name/cpu/manifest.json (but for its command line and --model path)"; else echo "DIFF  references/$name/cpu/manifest.json"; exit 1; fi
}
refs tiny-sd --model "$new/tiny-sd" --inpaint-model "$new/tiny-sd-inpaint"
for m in tiny-sd-wide tiny-sd-3block-linear tiny-sd-2block-euler tiny-sd-legacy-pndm; do
  refs "$m" --model "$new/$m" --preset small
done
