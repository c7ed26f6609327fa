#!/usr/bin/env bash
# Export the bundled tiny PyTorch model with optimum's own exporter, exactly as users export an
# SD 1.x checkpoint, into fixtures/models/tiny-sd-optimum-onnx (a fixture that is not shipped):
#   scripts/export_optimum.sh [TREE]
# Needs .venv (scripts/setup.sh) and TREE/fixtures/models/tiny-sd and tiny-sd-onnx (TREE: the
# repository root by default; scripts/make_fixtures.sh rebuilds them). Runs in TREE with relative
# paths, because optimum records the source path in model_index.json ("_name_or_path").
# The exporter's output is kept as written, with one change: the tokenizer's vocab.json and
# merges.txt, byte-identical to tiny-sd-onnx's, become relative symlinks to them (1.6 MB). The
# other tokenizer files stay optimum's own (its special_tokens_map.json spells pad_token out in full).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cli="$root/.venv/bin/optimum-cli"
[ -x "$cli" ] || { echo "export_optimum: run scripts/setup.sh first" >&2; exit 2; }
cd "${1:-$root}"
out=fixtures/models/tiny-sd-optimum-onnx
src=fixtures/models/tiny-sd
[ -f "$src/model_index.json" ] || { echo "export_optimum: $src is missing; run scripts/make_fixtures.sh" >&2; exit 2; }
rm -rf "$out"
"$cli" export onnx --model "$src" --task text-to-image "$out"
shared="$(realpath --relative-to="$out/tokenizer" fixtures/models/tiny-sd-onnx/tokenizer)"
for f in vocab.json merges.txt; do
  cmp -s "$out/tokenizer/$f" "fixtures/models/tiny-sd-onnx/tokenizer/$f" || { echo "export_optimum: $f differs from tiny-sd-onnx's" >&2; exit 1; }
  rm "$out/tokenizer/$f"
  ln -s "$shared/$f" "$out/tokenizer/$f"
done
echo "wrote $out"
