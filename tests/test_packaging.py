"""`pip install` of this repository: a wheel that holds every package and data file the
console scripts need, built without a setuptools warning, and no stray top-level package
(above all no `secrets`, which would shadow the standard library module)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "build", "dist", "*.egg-info",
    ".pytest_cache", ".ruff_cache", ".hypothesis", "__pycache__",
)  # fmt: skip


def NOT_SOURCES(directory: str, names: list[str]) -> set[str]:
    """What the copy leaves out: build litter anywhere, and the run-time state and audit
    folders at the top (broker/state and broker/audit are packages)."""
    ignored = set(_NOT_SOURCES(directory, names))
    if Path(directory) == ROOT:
        ignored |= {"state", "audit"} & set(names)
    return ignored


SETUPTOOLS_WARNING = re.compile(r"BackendWarning|DeprecationWarning|absent from|SetuptoolsWarning")


def test_the_wheel_builds_without_warnings_and_holds_every_package_and_data_file(tmp_path):
    source = tmp_path / "src"  # a copy: an in-tree build would write build/ and egg-info here
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not SETUPTOOLS_WARNING.search(proc.stdout + proc.stderr), proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("vanta_vault-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {
        name.rsplit("/", 1)[0].replace("/", ".") for name in names if name.endswith("/__init__.py")
    }
    expected = {
        path.parent.relative_to(ROOT).as_posix().replace("/", ".")
        for top in ("broker", "cli")
        for path in (ROOT / top).rglob("__init__.py")
    }
    assert packages == expected  # every package of broker and cli (broker.serving was missing)
    assert {"broker/ui/static/ui.css", "broker/ui/templates/ui/base.html"} <= names
    tops = {name.split("/", 1)[0] for name in names if not name.startswith("vanta_vault-")}
    assert tops == {"broker", "cli"}  # no secrets/, tests/, bench/, scripts/, examples/
