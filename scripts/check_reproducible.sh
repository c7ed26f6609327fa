#!/usr/bin/env bash
# Rebuild the tiny models and the CPU reference set into a temporary folder and compare every
# file's sha256 with the committed fixtures. Exit 0 when all match.
#   scripts/check_reproducible.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$root/.venv/bin/python"
[ -x "$py" ] || { echo "check_reproducible: run scripts/setup.sh first" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$py" "$root/scripts/make_tiny_model.py" --out "$tmp/models" >/dev/null 2>&1
for m in tiny-sd tiny-sd-onnx tiny-sd-inpaint tiny-sd-inpaint-onnx; do
  (cd "$root/fixtures/models/$m" && find . -type f | sort | xargs sha256sum) >"$tmp/a"
  (cd "$tmp/models/$m" && find . -type f | sort | xargs sha256sum) >"$tmp/b"
  if diff -q "$tmp/a" "$tmp/b" >/dev/null; then echo "same  models/$m"; else echo "DIFF  models/$m"; diff "$tmp/a" "$tmp/b" | head; exit 1; fi
done
for v in fp16:fp16 int8:int8-dynamic; do
  name="${v%%:*}"; mode="${v#*:}"
  # the variants symlink their shared parts to ../tiny-sd-onnx, so build them beside a copy of it
  "$py" "$root/scripts/quantize.py" "$root/fixtures/models/tiny-sd-onnx" "$tmp/models/tiny-sd-$name-onnx" --mode "$mode" --compact-names >/dev/null 2>&1
  (cd "$root/fixtures/models/tiny-sd-$name-onnx" && find . -name '*.onnx' | sort | xargs sha256sum) >"$tmp/a"
  (cd "$tmp/models/tiny-sd-$name-onnx" && find . -name '*.onnx' | sort | xargs sha256sum) >"$tmp/b"
  if diff -q "$tmp/a" "$tmp/b" >/dev/null; then echo "same  models/tiny-sd-$name-onnx (ONNX files)"; else echo "DIFF  models/tiny-sd-$name-onnx"; diff "$tmp/a" "$tmp/b" | head; exit 1; fi
done
"$py" "$root/scripts/make_references.py" --model "$root/fixtures/models/tiny-sd" \
  --inpaint-model "$root/fixtures/models/tiny-sd-inpaint" --out "$tmp/refs" >/dev/null 2>&1
(cd "$root/fixtures/references/tiny-sd/cpu" && find . -type f ! -name manifest.json | sort | xargs sha256sum) >"$tmp/a"
(cd "$tmp/refs" && find . -type f ! -name manifest.json | sort | xargs sha256sum) >"$tmp/b"
strip='import json,sys; m=json.load(open(sys.argv[1])); [m.pop(k) for k in ("command","model_dir")]; print(json.dumps(m,sort_keys=True))'
"$py" -c "$strip" "$root/fixtures/references/tiny-sd/cpu/manifest.json" >>"$tmp/a"
"$py" -c "$strip" "$tmp/refs/manifest.json" >>"$tmp/b"
if diff -q "$tmp/a" "$tmp/b" >/dev/null; then
  echo "same  references/tiny-sd/cpu ($(wc -l <"$tmp/a") files; manifest.json equal but for its command line and --model path)"
else
  echo "DIFF  references/tiny-sd/cpu"; diff "$tmp/a" "$tmp/b" | head; exit 1
fi
