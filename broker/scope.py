"""Names, key globs and scope containment: pure functions, no I/O.

Every name that reaches a file, a Git object or a token passes through here first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker.errors import BadRequest

ENVIRONMENT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
KEY_SEGMENT_RE = re.compile(r"[A-Za-z0-9_.-]+")
PATTERN_RE = re.compile(r"[A-Za-z0-9_./*?-]+")
MAX_KEY_LENGTH = 256
RESERVED_ENVIRONMENTS = frozenset({"tokens"})
ALL = "*"

PERMISSIONS = ("secrets:read", "secrets:list", "tokens:issue", "audit:read")


@dataclass(frozen=True)
class Scope:
    environment: str  # an environment name or "*"
    key_pattern: str
    permissions: tuple[str, ...]

    def covers_environment(self, environment: str) -> bool:
        return self.environment == ALL or self.environment == environment

    def covers_key(self, key: str) -> bool:
        return pattern_matches(self.key_pattern, key)


def is_environment(name: object) -> bool:
    return (
        isinstance(name, str)
        and ENVIRONMENT_RE.fullmatch(name) is not None
        and name not in RESERVED_ENVIRONMENTS
    )


def is_key(key: object) -> bool:
    return (
        isinstance(key, str)
        and 0 < len(key) <= MAX_KEY_LENGTH
        and all(
            KEY_SEGMENT_RE.fullmatch(segment) and segment.strip(".")  # no "." or ".." segment
            for segment in key.split("/")
        )
    )


def is_pattern(pattern: object) -> bool:
    return (
        isinstance(pattern, str)
        and 0 < len(pattern) <= MAX_KEY_LENGTH
        and PATTERN_RE.fullmatch(pattern) is not None
    )


def check_environment(name: object, field: str = "environment") -> str:
    """Return `name` if it is a valid environment name; raise BadRequest naming `field`."""
    if not is_environment(name):
        raise BadRequest(f"{field} must match ^[a-z0-9][a-z0-9_-]{{0,62}}$ and not be 'tokens'")
    return name  # type: ignore[return-value]


def check_key(key: object, field: str = "key") -> str:
    if not is_key(key):
        raise BadRequest(
            f"{field} must be 1-{MAX_KEY_LENGTH} characters of '/'-separated "
            "[A-Za-z0-9_.-] segments, none of them only dots"
        )
    return key  # type: ignore[return-value]


def check_pattern(pattern: object, field: str = "key_pattern") -> str:
    if not is_pattern(pattern):
        raise BadRequest(
            f"{field} must be 1-{MAX_KEY_LENGTH} characters of [A-Za-z0-9_.-/] with '*' and '?'"
        )
    return pattern  # type: ignore[return-value]


def pattern_matches(pattern: str, key: str) -> bool:
    """True when the glob `pattern` matches the whole of `key` ('*' spans '/').

    Linear-time per star (no backtracking regex): a hostile pattern cannot stall a worker.
    """
    if pattern == ALL:
        return True
    if "*" not in pattern and "?" not in pattern:
        return pattern == key
    if "?" not in pattern and pattern.count("*") == 1:
        head, tail = pattern.split("*")
        return len(key) >= len(head) + len(tail) and key.startswith(head) and key.endswith(tail)
    # Greedy wildcard matching: on a mismatch, retry from the last '*' one character later.
    p = k = 0
    star, star_k = -1, 0
    while k < len(key):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == key[k]):
            p += 1
            k += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, star_k = p, k
            p += 1
        elif star >= 0:
            p = star + 1
            star_k += 1
            k = star_k
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def pattern_contains(outer: str, inner: str) -> bool:
    """True when every key `inner` can match is also matched by `outer`.

    `outer` is read as a glob over the text of `inner`, where a '*' of `inner` can only be
    absorbed by a '*' of `outer`, and a '?' of `inner` by a '?' or '*' of `outer`.
    """
    if outer == ALL:
        return True
    # reachable[j]: outer[:i] can absorb inner[:j]
    reachable = [True] + [False] * len(inner)
    for o in outer:
        nxt = [False] * (len(inner) + 1)
        if o == "*":
            seen = False
            for j in range(len(inner) + 1):
                seen = seen or reachable[j]
                nxt[j] = seen
        else:
            for j, c in enumerate(inner):
                if not reachable[j]:
                    continue
                if (o == "?" and c != "*") or (o == c and c not in "*?"):
                    nxt[j + 1] = True
        reachable = nxt
    return reachable[len(inner)]


def environment_contains(outer: str, inner: str) -> bool:
    return outer == ALL or outer == inner
