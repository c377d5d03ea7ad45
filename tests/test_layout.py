"""Imports run one way: the SDK imports neither the broker nor the CLI's other parts nor
Flask; the CLI never imports Flask or the broker's HTTP layer; the broker's domain never
imports its HTTP layer. Each is checked in a fresh interpreter, by what it loaded."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

_LOADED = "import json, sys\n{imports}\nprint(json.dumps(sorted(sys.modules)))"
HTTP_LAYER = ("broker.web", "broker.ui", "broker.serving")
FLASK = ("flask", "werkzeug", "jinja2")


def loaded_after(*modules: str) -> set[str]:
    imports = "\n".join(f"import {module}" for module in modules)
    proc = subprocess.run(
        [sys.executable, "-c", _LOADED.format(imports=imports)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(proc.stdout))


def under(names: set[str], *prefixes: str) -> set[str]:
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)}


def test_the_sdk_imports_neither_the_broker_nor_the_cli_nor_a_web_framework():
    loaded = loaded_after("cli.client")
    assert under(loaded, "broker", *FLASK, "click", "git", "ruamel", "yaml", "boto3") == set()
    cli_parts = under(loaded, "cli") - {"cli", "cli.caching"}
    assert cli_parts == under(loaded, "cli.client")


def test_the_cli_never_imports_flask_or_the_brokers_http_layer():
    assert under(loaded_after("cli.main"), *FLASK, *HTTP_LAYER, "granian", "gunicorn") == set()


@pytest.mark.parametrize(
    "package", ["broker.config", "broker.tokens", "broker.store", "broker.state", "broker.audit"]
)
def test_the_domain_never_imports_the_http_layer(package):
    import importlib
    import pkgutil

    found = importlib.import_module(package)
    modules = [package]
    if hasattr(found, "__path__"):
        modules += [f"{package}.{m.name}" for m in pkgutil.iter_modules(found.__path__)]
    assert under(loaded_after(*modules), *FLASK, *HTTP_LAYER) == set()


def test_tests_share_helpers_through_the_support_package_only():
    """A test module imports shared helpers from tests/support, never from conftest (which
    holds fixtures) or from another test module."""
    crossing = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                source = node.module
            elif isinstance(node, ast.Import):
                source = node.names[0].name
            else:
                continue
            if source == "conftest" or source.startswith("test_"):
                crossing.append(f"{path.name}:{node.lineno} imports {source}")
    assert crossing == []
