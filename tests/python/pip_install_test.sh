#!/usr/bin/env bash
# `pip install ./client/python` works offline: the package builds with its in-tree,
# standard-library-only backend. Installs into a throwaway directory with --target, then
# imports it from there. Skipped (exit 77) where this Python has no pip.
set -euo pipefail
python=${1:-python3}
src=${2:?client/python directory}
"$python" -m pip --version >/dev/null 2>&1 || { echo "no pip for $python: skipped"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
PIP_NO_INDEX=1 "$python" -m pip install --quiet --disable-pip-version-check --target "$dir/site" "$src"
cd "$dir"
PYTHONPATH="$dir/site" "$python" -c 'import opsclient, sys; assert opsclient.__file__.startswith(sys.argv[1]), opsclient.__file__; print("installed", opsclient.__file__)' "$dir/site"
