"""Writing dotenv text that readers give back byte for byte.

Every value is double-quoted. Inside the quotes `\\` and `"` are escaped, and line breaks
are written as `\\n` / `\\r` so the file stays one variable per line (and no reader's
universal-newline translation can turn `\\r\\n` into `\\n`). python-dotenv decodes
exactly these escapes; `$`, `#`, `'`, tabs and any other character are literal inside
double quotes. The one thing no quoting can protect is python-dotenv's `${NAME}`
interpolation, on by default: readers of values that may hold `${` should load with
`interpolate=False`.
"""

from __future__ import annotations

from collections.abc import Iterable

_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def quote(value: str) -> str:
    """`value` as a double-quoted dotenv value."""
    return '"' + value.translate(_ESCAPES) + '"'


def render(pairs: Iterable[tuple[str, str]]) -> str:
    """`NAME="value"` lines, one per pair, in the order given."""
    return "".join(f"{name}={quote(value)}\n" for name, value in pairs)
