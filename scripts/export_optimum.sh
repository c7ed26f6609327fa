#!/usr/bin/env bash
# Export a tiny PyTorch fixture model with optimum's own exporter, exactly as users export an
# SD 1.x checkpoint, into fixtures/models/<MODEL>-optimum-onnx (a fixture that is not shipped):
#   scripts/export_optimum.sh [TREE] [MODEL]      MODEL: tiny-sd-wide (default) or another preset
# Needs .venv (scripts/setup.sh) and TREE/fixtures/models/<MODEL> (TREE: the repository root by
# default; scripts/make_fixtures.sh rebuilds it). Runs in TREE with relative paths, because
# optimum records the source path in model_index.json ("_name_or_path").
# The exporter's output is kept as written, with one change: tokenizer files byte-identical to
# tiny-sd-onnx's (SD 1.x's 1.6 MB vocabulary) become relative symlinks to them. The other
# tokenizer files stay optimum's own (its special_tokens_map.json spells pad_token out in full).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cli="$root/.venv/bin/optimum-cli"
[ -x "$cli" ] || { echo "export_optimum: run scripts/setup.sh first" >&2; exit 2; }
cd "${1:-$root}"
model="${2:-tiny-sd-wide}"
out="fixtures/models/$model-optimum-onnx"
src="fixtures/models/$model"
[ -f "$src/model_index.json" ] || { echo "export_optimum: $src is missing; run scripts/make_fixtures.sh" >&2; exit 2; }
rm -rf "$out"
"$cli" export onnx --model "$src" --task text-to-image "$out"
shared="$(realpath --relative-to="$out/tokenizer" fixtures/models/tiny-sd-onnx/tokenizer)"
for f in vocab.json merges.txt; do
  if cmp -s "$out/tokenizer/$f" "fixtures/models/tiny-sd-onnx/tokenizer/$f"; then
    rm "$out/tokenizer/$f"
    ln -s "$shared/$f" "$out/tokenizer/$f"
  fi
done
echo "wrote $out"
