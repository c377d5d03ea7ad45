"""Help pages whose words stay whole.

Click wraps help text with Python's textwrap, which breaks lines after any hyphen:
`run-with-secrets` became `run-with-` / `secrets`, and `--key-pattern` could split the
same way. This formatter wraps at spaces only. Examples are kept exactly as written by
Click's `\\b` paragraphs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import click

_JOINING_HYPHEN = re.compile(r"(?<=\S)-")  # a hyphen textwrap could break after
_NO_BREAK_HYPHEN = "\u2011"  # looks the same width to textwrap, and is never broken after


def _protect(text: str) -> str:
    return _JOINING_HYPHEN.sub(_NO_BREAK_HYPHEN, text)


class WholeWordsFormatter(click.HelpFormatter):
    """click.HelpFormatter that never breaks a line inside a hyphenated word."""

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        super().write_usage(_protect(prog), _protect(args), prefix)

    def write_text(self, text: str) -> None:
        super().write_text(_protect(text))

    def write_dl(self, rows: Iterable[tuple[str, str]], *args: Any, **kwargs: Any) -> None:
        super().write_dl([(_protect(a), _protect(b)) for a, b in rows], *args, **kwargs)

    def getvalue(self) -> str:
        return super().getvalue().replace(_NO_BREAK_HYPHEN, "-")


class VantaContext(click.Context):
    formatter_class = WholeWordsFormatter


HELP_OPTIONS = ["-h", "--help"]


def apply_help_style(command: click.Command) -> None:
    """Give `command` and every command under it the whole-words help formatter and `-h`
    (also when a command is invoked on its own, as tests do: Click keeps the help option
    a command first made)."""
    command.context_class = VantaContext
    command.context_settings.setdefault("help_option_names", HELP_OPTIONS)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            apply_help_style(sub)
