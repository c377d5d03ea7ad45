"""Which secrets files are served: a name that is `<environment>.enc.yaml`, YAML
without anchors or aliases, and a decrypted document of at most 16 MiB.

An alias lets a few hundred bytes of YAML stand for billions of nodes, in sops (measured:
2 GB in 20 s for a 3 KB file), in a YAML parser, or in anything that walks the parsed tree.
sops never writes one, so a file holding any anchor or alias is refused before anything
parses it: reads, history, rotation, the dashboard and the CLI all ask `refusal()` first.
That costs two byte searches for a file with no `&` and no `*` (every file sops writes,
unless a plaintext value or a metadata regex has one) and, otherwise, one pass of libyaml's
event parser (the C library whose Go port sops reads YAML with), which builds no tree.
"""

from __future__ import annotations

from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from broker.scope import is_environment

SUFFIX = ".enc.yaml"
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # decrypted (sops' output)
# Read no file larger than this (ciphertext is a third larger than its plaintext, plus
# ~100 bytes a value), so no pusher makes a worker hold a gigabyte to find out.
MAX_FILE_BYTES = 4 * MAX_DOCUMENT_BYTES

HAS_ANCHORS = "its YAML holds anchors or aliases"
DOCUMENT_TOO_LARGE = "its decrypted document is over 16 MiB"
FILE_TOO_LARGE = "the file is over 64 MiB"
MISNAMED = "its name is not <environment>.enc.yaml with a valid environment name"

_EVENT_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C when PyYAML has libyaml


class YAMLRefused(YAMLError):
    """A YAML document refused unparsed: it holds an anchor or an alias."""


def environment_of(file_name: str) -> str | None:
    """The environment a file directly in the secrets directory holds: None when the name
    is not `<environment>.enc.yaml` with a valid environment (such a file is not served)."""
    if not file_name.endswith(SUFFIX):
        return None
    name = file_name[: -len(SUFFIX)]
    return name if is_environment(name) else None


def refusal(data: bytes) -> str | None:
    """Why a secrets file with these bytes is not served, or None when nothing refuses it
    yet (its decrypted size is known only once decrypted: `DOCUMENT_TOO_LARGE`)."""
    if len(data) > MAX_FILE_BYTES:
        return FILE_TOO_LARGE
    if has_anchors(data):
        return HAS_ANCHORS
    return None


def has_anchors(data: bytes | str) -> bool:
    """Whether the YAML holds an anchor (`&a`) or an alias (`*a`), found without building
    any tree. YAML that libyaml cannot read is asked of ruamel's parser (the one the broker
    loads with); YAML neither can read holds none: whoever loads it gets a YAML error."""
    raw = data.encode() if isinstance(data, str) else data
    if b"&" not in raw and b"*" not in raw:  # bytes of UTF-16 and -32 text hold them too
        return False
    try:
        return _any_anchor(yaml.parse(raw, Loader=_EVENT_LOADER))
    except yaml.YAMLError:
        pass
    try:
        return _any_anchor(YAML(typ="safe", pure=True).parse(raw))
    except YAMLError:
        return False


def _any_anchor(events: Any) -> bool:
    # Both parsers put an anchor's name, or the name an alias refers to, in `anchor`.
    return any(getattr(event, "anchor", None) is not None for event in events)


def load_yaml(data: bytes | str) -> Any:
    """A YAML document loaded with ruamel's safe loader (YAML 1.2), refused unparsed when it
    holds anchors or aliases. Raises YAMLError (YAMLRefused for anchors; nesting too deep
    for the parser is a YAMLError too, not a RecursionError)."""
    if has_anchors(data):
        raise YAMLRefused("anchors and aliases are not allowed")
    try:
        return YAML(typ="safe").load(data)
    except RecursionError:
        raise YAMLError("nested too deeply") from None
