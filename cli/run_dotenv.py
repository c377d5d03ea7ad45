"""Dotenv text: writing it so readers give it back byte for byte, and reading it as
SPEC §13 describes.

Writing: every value is double-quoted. Inside the quotes `\\` and `"` are escaped, and
line breaks are written as `\\n` / `\\r` so the file stays one variable per line (and no
reader's universal-newline translation can turn `\\r\\n` into `\\n`). python-dotenv
decodes exactly these escapes; `$`, `#`, `'`, tabs and any other character are literal
inside double quotes. The one thing no quoting can protect is python-dotenv's `${NAME}`
interpolation, on by default: readers of values that may hold `${` should load with
`interpolate=False`.

Reading (`parse`): `export ` prefixes, comments and blank lines are ignored; double
quotes take `\\n`, `\\r`, `\\t`, `\\"` and `\\\\` escapes (any other backslash is kept) and
may span lines; single quotes are literal and may span lines; an unquoted value ends at
the line's end or at a ` #` comment, without surrounding blanks; no `$VAR` expansion; a
line without `=` is skipped with a warning. Messages name line numbers, never contents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})
_UNESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_EXPORT = re.compile(r"export[ \t]+")
_INLINE_COMMENT = re.compile(r"[ \t]#")


def quote(value: str) -> str:
    """`value` as a double-quoted dotenv value."""
    return '"' + value.translate(_ESCAPES) + '"'


def render(pairs: Iterable[tuple[str, str]]) -> str:
    """`NAME="value"` lines, one per pair, in the order given."""
    return "".join(f"{name}={quote(value)}\n" for name, value in pairs)


class DotenvError(ValueError):
    """Text that is not dotenv: `line N: what is wrong` (never the line itself)."""


@dataclass(frozen=True)
class DotenvEntry:
    name: str
    value: str = field(repr=False)
    line: int  # where the entry starts, from 1
    quoted: bool


@dataclass(frozen=True)
class Dotenv:
    entries: tuple[DotenvEntry, ...]
    warnings: tuple[str, ...]  # "line N: ..." for lines skipped


def parse(text: str) -> Dotenv:
    """The entries of a dotenv text, in order (a name may repeat: the caller decides).

    Raises DotenvError for a bad name, an unclosed quote, or text after a closing quote."""
    # only \n ends a line (and a \r before it goes): str.splitlines would also split at
    # \v, \f, \x1c or U+2028 inside a value
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    entries: list[DotenvEntry] = []
    warnings: list[str] = []
    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index].lstrip(" \t")
        index += 1
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            warnings.append(f"line {number}: no '=', skipped")
            continue
        name, rest = line.split("=", 1)
        name = _EXPORT.sub("", name, count=1) if _EXPORT.match(name) else name
        name = name.strip(" \t")
        if not _NAME.match(name):
            raise DotenvError(f"line {number}: {name!r} is not a variable name")
        rest = rest.lstrip(" \t")
        if rest[:1] in ('"', "'"):
            value, after, index = _quoted(rest, lines, index, number)
            after = after.strip(" \t")
            if after and not after.startswith("#"):
                raise DotenvError(f"line {number}: text after the closing quote")
            entries.append(DotenvEntry(name, value, number, quoted=True))
        else:
            comment = _INLINE_COMMENT.search(rest)
            value = rest[: comment.start()] if comment else rest
            entries.append(DotenvEntry(name, value.strip(" \t"), number, quoted=False))
    return Dotenv(tuple(entries), tuple(warnings))


def _quoted(rest: str, lines: list[str], index: int, number: int) -> tuple[str, str, int]:
    """The value of a quoted value beginning `rest` (continuing on lines[index:] if the
    quote stays open): (value, text after the closing quote, index of the next line)."""
    quote_char, text, out = rest[0], rest[1:], []
    while True:
        i = 0
        while i < len(text):
            char = text[i]
            if char == quote_char:
                return "".join(out), text[i + 1 :], index
            if char == "\\" and quote_char == '"' and i + 1 < len(text):
                nxt = text[i + 1]
                out.append(_UNESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            out.append(char)
            i += 1
        if index >= len(lines):
            raise DotenvError(f"line {number}: the {quote_char} quote is never closed")
        out.append("\n")
        text = lines[index]
        index += 1
