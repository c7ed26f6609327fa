#!/usr/bin/env bash
# Make the Python virtual environment for the reference toolchain: scripts/../.venv (ignored by git).
#   scripts/setup.sh            create / update .venv
# Then rebuild the PyTorch model folders, which are not committed (make_tiny_model.py reproduces
# them bit for bit), before anything reads them:
#   scripts/make_fixtures.sh          fixtures/models/tiny-sd, tiny-sd-inpaint and the further presets
# and, for example:
#   .venv/bin/python scripts/make_references.py --model fixtures/models/tiny-sd \
#       --inpaint-model fixtures/models/tiny-sd-inpaint --out fixtures/references/tiny-sd/cpu --force
#   scripts/make_fixtures.sh --all    every fixture (models, optimum export, variants, references)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$python" -m venv "$root/.venv"
fi
"$root/.venv/bin/pip" install --quiet --upgrade pip
"$root/.venv/bin/pip" install --quiet -r "$here/requirements.txt"
"$root/.venv/bin/pip" install --quiet --no-deps -r "$here/requirements-nodeps.txt"
if "$root/.venv/bin/python" -c "import ftfy" 2>/dev/null; then
  echo "setup.sh: ftfy is installed in .venv; uninstall it (pip uninstall ftfy) so references match" >&2
  exit 1
fi
echo "ready: $root/.venv"
