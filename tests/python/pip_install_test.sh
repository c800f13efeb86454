#!/usr/bin/env bash
# The Python client installs the documented way on Debian 12 (docs/CLIENT.md): python3
# refuses `pip install` outside a virtual environment (PEP 668), so into a venv, and with
# --no-build-isolation so that the build uses Debian's setuptools and wheel
# (python3-setuptools, python3-wheel) instead of fetching them: no package index needed.
# Builds from a copy of client/python, so the source tree gets no build/ or egg-info.
# Skipped (exit 77) where this Python has no venv, pip, setuptools or wheel.
#   pip_install_test.sh PYTHON CLIENT_PYTHON_DIR
set -euo pipefail
python=${1:?python interpreter}
src=${2:?client/python directory}
"$python" -c 'import venv, setuptools, wheel' 2>/dev/null ||
  { echo "$python lacks venv, setuptools or wheel (python3-venv python3-setuptools python3-wheel): skipped"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp -r "$src" "$dir/src"
rm -rf "$dir/src/build" "$dir/src"/*.egg-info

# Debian's Python marks itself externally managed: a plain `pip install` is refused.
marker=$("$python" -c 'import sysconfig, os; print(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))')
if [ -f "$marker" ]; then
  if "$python" -m pip install --quiet --dry-run --no-index --no-build-isolation "$dir/src" 2>"$dir/refused.txt"; then
    echo "FAIL: pip installed outside a venv although $marker exists" >&2
    exit 1
  fi
  grep -q "externally-managed-environment" "$dir/refused.txt" ||
    { echo "FAIL: pip refused for another reason:"; cat "$dir/refused.txt"; exit 1; } >&2
  echo "outside a venv: refused (externally-managed-environment), as documented"
fi

# The documented route: a venv that sees the system's setuptools and wheel. Without a
# pip of its own (ensurepip takes half a minute): the venv's python runs Debian's pip
# (python3-pip), which installs into the venv all the same.
"$python" -m pip --version >/dev/null 2>&1 || { echo "no pip for $python: skipped"; exit 77; }
"$python" -m venv --system-site-packages --without-pip "$dir/venv"
PIP_NO_INDEX=1 "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-build-isolation "$dir/src"
rm -rf "$dir/src"   # the installed copy must not need the sources
cd "$dir"
"$dir/venv/bin/python" - "$dir/venv" <<'PY'
import importlib.metadata, sys
import opsclient
assert opsclient.__file__.startswith(sys.argv[1]), opsclient.__file__
assert importlib.metadata.version("opsclient") == "0.1.0"
files = {str(f) for f in importlib.metadata.files("opsclient")}
assert "opsclient/py.typed" in files, sorted(files)
assert hasattr(opsclient, "Client")
print("installed", opsclient.__file__)
PY
