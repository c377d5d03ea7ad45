"""Where a command's token comes from: `--token-file FILE|-`, `--token T`, or VANTA_TOKEN.

A token on a command line can be read by every local user (`ps`), so `--token-file` is
the way to hand one over; `--token` stays for scripts that already use it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cli.errors import CliError
from cli.tokens.hints import TokenSource

F = TypeVar("F", bound=Callable[..., Any])


def read_token_file(path: str) -> str:
    """The one token in `path` ('-': standard input), surrounding whitespace dropped.
    Raises CliError (never showing the content) when there is not exactly one."""
    shown = "standard input" if path == "-" else path
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        text = data.decode("utf-8")
    except OSError as exc:
        raise CliError(f"--token-file {shown}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"--token-file {shown}: not UTF-8 text") from None
    token = text.strip()
    if not token:
        raise CliError(f"--token-file {shown}: holds no token")
    if any(c.isspace() for c in token):
        raise CliError(f"--token-file {shown}: holds more than one token (one line expected)")
    return token


def token_options(what: str) -> Callable[[F], F]:
    """`--token` and `--token-file` for a command that uses VANTA_TOKEN by default; `what`
    names the token (`the reader token (secrets:read)`), for the help."""

    def decorate(command: F) -> F:
        command = click.option(
            "--token-file",
            type=click.Path(exists=True, dir_okay=False, allow_dash=True),
            help=f"Read {what} from FILE ('-': standard input) instead of VANTA_TOKEN.",
        )(command)
        return click.option(
            "--token",
            "token",
            metavar="TOKEN",
            help=f"{what[0].upper()}{what[1:]} on the command line, instead of VANTA_TOKEN "
            "(other local users can see it with ps: prefer --token-file).",
        )(command)

    return decorate


def chosen_token(token: str | None, token_file: str | None) -> TokenSource:
    """The token given by `--token`, `--token-file` or VANTA_TOKEN, and how it was given.
    The token is None when there is none at all."""
    if token is not None and token_file is not None:
        raise click.UsageError("give --token or --token-file, not both")
    if token_file is not None:
        shown = "standard input" if token_file == "-" else token_file
        return TokenSource(f"the token of --token-file {shown}", read_token_file(token_file))
    if token is not None:
        return TokenSource("--token", token.strip() or None)
    value = (os.environ.get("VANTA_TOKEN") or "").strip() or None
    return TokenSource("VANTA_TOKEN", value)
