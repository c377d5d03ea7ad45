"""The text a secrets file or named pipe holds: `--format dotenv|json|yaml`.

Each format maps every injected variable name to its text, exactly as the variable would
hold it (numbers and booleans as YAML writes them, `"8080"`, `"true"`), in injection
order, and gives it back byte for byte to a standard reader (python-dotenv with
`interpolate=False`, `json.load`, any YAML 1.2 loader).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable

from ruamel.yaml import YAML

from cli.run.dotenv import render as render_dotenv

FORMATS = ("dotenv", "json", "yaml")
FILE_NAMES = {"dotenv": "secrets.env", "json": "secrets.json", "yaml": "secrets.yaml"}


def render(pairs: Iterable[tuple[str, str]], fmt: str = "dotenv") -> str:
    """The text of `(name, value)` pairs in format `fmt`."""
    if fmt == "dotenv":
        return render_dotenv(pairs)
    mapping = dict(pairs)
    if fmt == "json":
        return json.dumps(mapping, ensure_ascii=False, indent=2) + "\n"
    if fmt == "yaml":
        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # in order
        yaml.allow_unicode = True
        yaml.width = 1 << 30  # one line per variable (long values are not folded)
        out = io.StringIO()
        yaml.dump(mapping, out)
        return out.getvalue() if mapping else "{}\n"
    raise ValueError(f"unknown format {fmt!r}")
