"""Reading dotenv files for `vanta-cli import dotenv`: Doppler, Infisical and
`.env` exports, and the files `run-with-secrets --inject-as file` writes.

- `NAME=value`; an `export ` before the name is ignored, as are blank lines and lines
  starting with `#`. A line without `=` is skipped with a warning.
- Unquoted values lose surrounding blanks and a ` # comment` after them.
- Double quotes take `\\n`, `\\"` and `\\\\` escapes (and `\\r`, which run-with-secrets
  writes); any other backslash is kept as it is. Single quotes are literal. Either may
  span lines. Nothing is expanded: `$VAR` stays `$VAR`.
- Values are strings; a name becomes a key like an AWS secret name does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cli.importers.plan import Candidate, Collected, candidate, collected, key_from_name

_EXPORT = re.compile(r"export[ \t]+")
_ESCAPES = {"n": "\n", "r": "\r", '"': '"', "\\": "\\"}
_TRAILER = re.compile(r"[ \t]*(#.*)?")


@dataclass(frozen=True)
class Entry:
    line: int
    name: str
    value: str = field(repr=False)


@dataclass
class _Scan:
    """A cursor over the text, counting lines."""

    text: str
    pos: int = 0
    line: int = 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def rest_of_line(self) -> str:
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end
        taken = self.text[self.pos : end]
        self.pos = end + 1
        self.line += 1
        return taken


@dataclass(frozen=True)
class Parsed:
    entries: tuple[Entry, ...]
    warnings: tuple[str, ...]  # lines skipped
    problems: tuple[str, ...]  # quoting gone wrong: the file is not what it seems


def parse_dotenv(text: str) -> Parsed:
    """The entries of a dotenv text, in order; warnings for lines skipped; problems for
    broken quoting (a value whose quote never closes, or text after the closing quote),
    after which reading goes on at the next line, only to report what else is wrong."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    scan = _Scan(text)
    entries: list[Entry] = []
    warnings: list[str] = []
    problems: list[str] = []
    while not scan.at_end():
        start = scan.line
        head = scan.text[scan.pos : _line_end(scan)].lstrip(" \t")
        if not head.strip() or head.startswith("#"):
            scan.rest_of_line()
            continue
        head = _EXPORT.sub("", head, count=1) if _EXPORT.match(head) else head
        name, equals, _ = head.partition("=")
        name = name.strip()
        if not equals or not name:
            scan.rest_of_line()
            what = "no '='" if not equals else "no name before '='"
            warnings.append(f"line {start}: {what} (skipped)")
            continue
        line_end = _line_end(scan)
        scan.pos = scan.text.index("=", scan.pos) + 1
        value, problem = _value(scan)
        if problem:
            problems.append(f"line {start} ({name}): {problem}")
            scan.pos, scan.line = line_end + 1, start + 1
        else:
            entries.append(Entry(start, name, value))
    return Parsed(tuple(entries), tuple(warnings), tuple(problems))


def collect_dotenv(text: str, prefix: str = "") -> Collected:
    """Candidates for the variables whose names start with `prefix` (which they lose)."""
    parsed = parse_dotenv(text)
    items: list[Candidate | str] = [
        candidate(key_from_name(e.name[len(prefix) :]), e.value, f"line {e.line} ({e.name})")
        for e in parsed.entries
        if e.name.startswith(prefix)
    ]
    return collected([*items, *parsed.problems], parsed.warnings)


def _line_end(scan: _Scan) -> int:
    end = scan.text.find("\n", scan.pos)
    return len(scan.text) if end < 0 else end


def _value(scan: _Scan) -> tuple[str, str | None]:
    """The value after `=`, leaving the cursor at the next line; or a problem."""
    while scan.pos < len(scan.text) and scan.text[scan.pos] in " \t":
        scan.pos += 1
    quote = scan.text[scan.pos] if scan.pos < len(scan.text) else ""
    if quote not in ("'", '"'):
        raw = scan.rest_of_line()
        return re.split(r"[ \t]+#", raw, maxsplit=1)[0].rstrip(" \t"), None
    scan.pos += 1
    value = _double_quoted(scan) if quote == '"' else _single_quoted(scan)
    if value is None:
        return "", f"the {quote} never closes"
    closed_on = scan.line
    trailer = scan.rest_of_line()
    if not _TRAILER.fullmatch(trailer):
        if "\n" in value:  # most likely a quote missing at its end, and this one is another's
            return "", f"the {quote} closes only on line {closed_on}, with text after it"
        return "", f"text after the closing {quote}"
    return value, None


def _single_quoted(scan: _Scan) -> str | None:
    end = scan.text.find("'", scan.pos)
    if end < 0:
        return None
    value = scan.text[scan.pos : end]
    scan.line += value.count("\n")
    scan.pos = end + 1
    return value


def _double_quoted(scan: _Scan) -> str | None:
    out: list[str] = []
    text = scan.text
    while scan.pos < len(text):
        char = text[scan.pos]
        if char == '"':
            scan.pos += 1
            return "".join(out)
        if char == "\\" and scan.pos + 1 < len(text) and text[scan.pos + 1] in _ESCAPES:
            out.append(_ESCAPES[text[scan.pos + 1]])
            scan.pos += 2
            continue
        if char == "\n":
            scan.line += 1
        out.append(char)
        scan.pos += 1
    return None
