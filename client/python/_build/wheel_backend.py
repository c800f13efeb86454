"""A PEP 517 build backend for opsclient that needs nothing beyond the standard library.

Why: `pip install ./client/python` must work on a machine that reaches no Python
package index (setuptools' backend needs the `wheel` package, which such a machine may
not have). opsclient is pure Python, so a wheel is a zip of the package plus three
metadata files; this module writes exactly that.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import zipfile

try:
    import tomllib  # Python 3.11+
except ImportError:  # pragma: no cover - older Pythons read the two fields by hand
    tomllib = None

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project() -> dict:
    path = os.path.join(_ROOT, "pyproject.toml")
    if tomllib is not None:
        with open(path, "rb") as f:
            return tomllib.load(f)["project"]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    section = text.split("[project]", 1)[1].split("\n[", 1)[0]
    fields = dict(re.findall(r'^([a-z-]+)\s*=\s*"([^"]*)"', section, re.M))
    return fields


def _dist_name(project: dict) -> str:
    return project["name"].replace("-", "_")


def _metadata(project: dict) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '>=3.8')}",
    ]
    return "\n".join(lines) + "\n"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def _write_wheel(wheel_directory: str) -> str:
    project = _project()
    name, version = _dist_name(project), project["version"]
    filename = f"{name}-{version}-py3-none-any.whl"
    dist_info = f"{name}-{version}.dist-info"
    files: list[tuple[str, bytes]] = []
    package_dir = os.path.join(_ROOT, "opsclient")
    for entry in sorted(os.listdir(package_dir)):
        if entry.endswith(".py") or entry == "py.typed":
            with open(os.path.join(package_dir, entry), "rb") as f:
                files.append((f"opsclient/{entry}", f.read()))
    files.append((f"{dist_info}/METADATA", _metadata(project).encode()))
    files.append((
        f"{dist_info}/WHEEL",
        b"Wheel-Version: 1.0\nGenerator: opsclient-backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    ))
    record = [_record_line(path, data) for path, data in files]
    record.append(f"{dist_info}/RECORD,,")
    files.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files:
            zf.writestr(path, data)
    return filename


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory)


# Editable installs (pip install -e) get the same wheel: the package is small and pure.
get_requires_for_build_editable = get_requires_for_build_wheel
build_editable = build_wheel
