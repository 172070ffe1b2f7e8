#!/usr/bin/env bash
# Run a command inside the project's virtualenv, creating or updating it first.
#
#   bash tools/env.sh python -m pytest
#
# The virtualenv lives in .venv/ (override with LT_KERAS_VENV). It is
# (re)installed from setup.cfg whenever setup.cfg changes, so a fresh clone
# needs nothing but Python >= 3.10 and access to the package index.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LT_KERAS_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[lt_keras] creating virtualenv $venv" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.lt_keras_installed"
want="$(cat "$root/setup.cfg" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[lt_keras] installing lt_keras and its dependencies into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet -e "$root[test]" >&2
  echo "$want" > "$stamp"
fi
cd "$root"
export PATH="$venv/bin:$PATH"
exec "$@"
