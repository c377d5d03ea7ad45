"""Which environment variable a key becomes, and which variables a key may not become.

A key's variable name is the key upper-cased with every character outside [A-Za-z0-9_]
turned into `_`. Some variables change how a program starts (the loader's
`LD_PRELOAD`, the shell's `BASH_ENV`, where commands are found, an interpreter's start-up
code): whoever could get such a key merged would run code on every host that runs the
command. run-with-secrets refuses to set them from a key name, and `vanta-cli secrets
check` flags the keys in the pull request, both from this one list, unless the caller
names the variable with `--allow-variable NAME`. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

REFUSED_NAMES = frozenset(
    {
        "PATH",
        "IFS",
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "PROMPT_COMMAND",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "NODE_OPTIONS",
        "NODE_PATH",
        "PERL5LIB",
        "PERL5OPT",
        "RUBYLIB",
        "RUBYOPT",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "GCONV_PATH",
    }
)
REFUSED_PREFIXES = ("LD_", "DYLD_", "VANTA_")
ALLOW_OPTION = "--allow-variable"

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_]")


def env_name(key: str) -> str:
    """`API_KEYS/openai` -> `API_KEYS_OPENAI`: upper-cased, anything outside [A-Za-z0-9_] -> _."""
    return _NOT_IN_NAME.sub("_", key.upper())


def is_refused(name: str) -> bool:
    """Whether `name` is a variable that changes how a program starts (the refused list)."""
    return name in REFUSED_NAMES or name.startswith(REFUSED_PREFIXES)


@dataclass(frozen=True)
class RefusedKey:
    key: str
    name: str  # the variable it would set


def refused_keys(keys: Iterable[str], allowed: Collection[str] = ()) -> list[RefusedKey]:
    """The keys whose variable is refused and not in `allowed`, in the order given."""
    found = []
    for key in keys:
        name = env_name(key)
        if is_refused(name) and name not in allowed:
            found.append(RefusedKey(key, name))
    return found


def allow_hint(refused: Iterable[RefusedKey]) -> str:
    """`--allow-variable PATH --allow-variable LD_PRELOAD`: what would let them through."""
    names = dict.fromkeys(r.name for r in refused)
    return " ".join(f"{ALLOW_OPTION} {name}" for name in names)
