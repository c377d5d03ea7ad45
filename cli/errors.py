"""The one error type commands raise: printed as `error: ...` on one line, exit 1."""

from __future__ import annotations

from typing import IO, Any

import click


class CliError(click.ClickException):
    """A one-line failure for the user. `show()` prints `error: <message>` (no 'Error:')."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)
