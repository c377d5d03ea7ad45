"""The one error type commands raise: printed as `error: ...` on one line, exit 1."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import IO, Any, TypeVar

import click


class CliError(click.ClickException):
    """A one-line failure for the user. `show()` prints `error: <message>` (no 'Error:')."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # Click declares it on the class

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(*failures: type[Exception]) -> Callable[[F], F]:
    """Turn a library's `failures` into `error: <one line>` and exit 1."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except failures as exc:
                raise CliError(str(exc)) from None

        return wrapper  # type: ignore[return-value]

    return decorate
