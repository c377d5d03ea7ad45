"""How secrets reach the child: as environment variables, or as a private dotenv file.

An injection is a context manager: entering it prepares whatever the child needs and
returns the variables to add to the child's environment; leaving it removes everything
it made, however the block ends. The `fifo` injection (a named pipe served by a thread,
`cli.run.fifo.FifoInjection`) is one more class of this shape.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Protocol

from cli.run.formats import FILE_NAMES, render
from cli.run.guard import LeftoverGuard
from cli.run.injected import InjectedVar

SECRETS_FILE_VAR = "VANTA_SECRETS_FILE"
FORMAT_NAMES = {"dotenv": "dotenv", "json": "JSON", "yaml": "YAML"}


class InjectionError(Exception):
    """The secrets cannot be handed over this way (said in one line, never a value)."""


class Injection(Protocol):
    how: str  # for the stderr report: "as environment variables", ...

    def __enter__(self) -> dict[str, str]: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class PrivateDirectory:
    """A fresh 0700 directory for the secrets file. `remove()` removes it; if this process
    dies first, even by SIGKILL, a guard process removes it (cli.run.guard)."""

    def __init__(self, parent: str | None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="vanta-run-", dir=parent))
        try:
            os.chmod(self.path, 0o700)
            self._guard = LeftoverGuard(self.path)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._guard.release()


class EnvInjection:
    """Each variable becomes an environment variable of the child."""

    how = "as environment variables"

    def __init__(self, variables: tuple[InjectedVar, ...]) -> None:
        for var in variables:
            if "\0" in var.value:
                raise InjectionError(
                    f"{var.source} holds a NUL character, which an environment variable "
                    "cannot carry: use --inject-as file"
                )
        self.variables = variables

    def __enter__(self) -> dict[str, str]:
        return {var.name: var.value for var in self.variables}

    def __exit__(self, *exc_info: object) -> None:
        return None


class FileInjection:
    """A file (0600) in a private directory (0700), in `fmt` (dotenv, json or yaml:
    cli.run.formats); VANTA_SECRETS_FILE names it."""

    def __init__(
        self,
        variables: tuple[InjectedVar, ...],
        parent: str | None = None,
        fmt: str = "dotenv",
    ) -> None:
        self.variables = variables
        self.parent = parent  # where the private directory goes; None: the system default
        self.fmt = fmt
        self.file_name = FILE_NAMES[fmt]
        self.how = f"into a {FORMAT_NAMES[fmt]} file at ${SECRETS_FILE_VAR}"
        self.directory: PrivateDirectory | None = None

    @property
    def path(self) -> Path | None:
        return None if self.directory is None else self.directory.path / self.file_name

    def __enter__(self) -> dict[str, str]:
        try:
            self.directory = PrivateDirectory(self.parent)
            path = self.directory.path / self.file_name
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)  # a umask can only narrow 0600
            with open(fd, "w", encoding="utf-8", newline="") as out:
                out.write(render(((var.name, var.value) for var in self.variables), self.fmt))
        except OSError as exc:
            self._remove()
            raise InjectionError(f"cannot write the secrets file: {exc.strerror}") from None
        except BaseException:
            self._remove()
            raise
        return {SECRETS_FILE_VAR: str(path)}

    def __exit__(self, *exc_info: object) -> None:
        self._remove()

    def _remove(self) -> None:
        if self.directory is not None:
            self.directory.remove()
            self.directory = None
