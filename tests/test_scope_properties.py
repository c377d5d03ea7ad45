"""Property-based tests (hypothesis) for key globs, pattern containment and name
validation (SPEC §4). Oracles here are written independently of broker/scope.py."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from broker.errors import BadRequest
from broker.scope import (
    MAX_KEY_LENGTH,
    check_environment,
    check_key,
    check_pattern,
    is_environment,
    is_key,
    is_pattern,
    pattern_contains,
    pattern_matches,
)

KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
ENV_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
ENV_REST = ENV_FIRST + "_-"
HOSTILE = "/\\.\x00\n\r\t :%*?[]{}~$'\"é\u202e\ufeff"

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Small alphabets make matches and containments common; short strings keep the
# broker's backtracking matcher fast here (its worst case is tested separately below).
small_key = st.text(alphabet="ab/", max_size=8)
small_pattern = st.text(alphabet="ab/*?", min_size=1, max_size=8)


# -- independent oracles -----------------------------------------------------------------


def glob_oracle(pattern: str, key: str) -> bool:
    """Dynamic programming over (pattern position, key position): no regex involved."""

    @cache
    def match(p: int, k: int) -> bool:
        if p == len(pattern):
            return k == len(key)
        if pattern[p] == "*":
            return match(p + 1, k) or (k < len(key) and match(p, k + 1))
        if k == len(key):
            return False
        return (pattern[p] == "?" or pattern[p] == key[k]) and match(p + 1, k + 1)

    return match(0, 0)


def environment_oracle(name: str) -> bool:
    return (
        1 <= len(name) <= 63
        and name[0] in ENV_FIRST
        and all(c in ENV_REST for c in name[1:])
        and name != "tokens"
    )


def key_oracle(key: str) -> bool:
    segments = key.split("/")
    return 0 < len(key) <= MAX_KEY_LENGTH and all(
        segment and all(c in KEY_CHARS for c in segment) and set(segment) != {"."}
        for segment in segments
    )


def pattern_oracle(pattern: str) -> bool:
    return 0 < len(pattern) <= MAX_KEY_LENGTH and all(c in KEY_CHARS + "/*?" for c in pattern)


@st.composite
def instance_of(draw, pattern: str) -> str:
    """A key the glob `pattern` matches: each '*' becomes any run, each '?' one character."""
    out = []
    for c in pattern:
        if c == "*":
            out.append(draw(st.text(alphabet="ab/", max_size=3)))
        elif c == "?":
            out.append(draw(st.sampled_from("ab/")))
        else:
            out.append(c)
    return "".join(out)


@st.composite
def narrowed(draw, pattern: str) -> str:
    """A pattern within `pattern`: a '*' may become any pattern, a '?' any one character
    (or stay '?'), literals stay."""
    out = []
    for c in pattern:
        if c == "*":
            out.append(draw(st.text(alphabet="ab/*?", max_size=3)))
        elif c == "?":
            out.append(draw(st.sampled_from("ab/?")))
        else:
            out.append(c)
    return "".join(out) or "a"


def all_keys(alphabet: str, max_length: int) -> list[str]:
    keys = [""]
    frontier = [""]
    for _ in range(max_length):
        frontier = [k + c for k in frontier for c in alphabet]
        keys.extend(frontier)
    return keys


SMALL_KEYS = all_keys("ab/", 5)


# -- glob matching -------------------------------------------------------------------------


@PROPERTY
@given(small_pattern, small_key)
@example("a*b", "a/x/b")  # '*' spans '/'
@example("a?b", "a/b")
@example("*", "")
def test_matching_agrees_with_an_independent_glob(pattern, key):
    assert pattern_matches(pattern, key) == glob_oracle(pattern, key)


@PROPERTY
@given(st.text(alphabet=KEY_CHARS + "/", min_size=1, max_size=40))
def test_star_alone_matches_every_key(key):
    assert pattern_matches("*", key)


@PROPERTY
@given(
    st.text(alphabet=KEY_CHARS, min_size=1, max_size=12),
    st.text(alphabet=KEY_CHARS, min_size=1, max_size=12),
)
def test_a_key_read_as_a_pattern_matches_only_itself(a, b):
    assert pattern_matches(a, a)
    assert pattern_matches(a, b) == (a == b)
    assert pattern_matches(a, a.swapcase()) == (a == a.swapcase())  # case-sensitive


@PROPERTY
@given(st.data(), small_pattern)
def test_a_pattern_matches_every_key_made_from_it(data, pattern):
    assert pattern_matches(pattern, data.draw(instance_of(pattern)))


@pytest.mark.parametrize(
    "pattern, key, expected",
    [
        ("DATABASE_*", "DATABASE_URL", True),
        ("DATABASE_*", "DATABASE_", True),
        ("DATABASE_*", "database_url", False),
        ("API_KEYS/*", "API_KEYS/openai", True),
        ("*/openai", "API_KEYS/openai", True),
        ("API_KEYS/?", "API_KEYS/ab", False),
        ("DATABASE_URL", "DATABASE_URL_2", False),
        ("*URL", "DATABASE_URL", True),
        ("D.TABASE_URL", "DATABASE_URL", False),  # '.' is literal, not a regex dot
        ("DATABASE_URL", "DATABASE_URL\n", False),
    ],
)
def test_glob_examples(pattern, key, expected):
    assert pattern_matches(pattern, key) is expected


# -- containment ---------------------------------------------------------------------------


@PROPERTY
@given(st.data(), small_pattern, small_pattern)
def test_a_contained_pattern_never_matches_a_key_its_parent_does_not(data, outer, inner):
    if not pattern_contains(outer, inner):
        return
    key = data.draw(instance_of(inner))
    assert pattern_matches(outer, key), (outer, inner, key)


@PROPERTY
@given(small_pattern, small_pattern)
def test_containment_is_sound_over_every_short_key(outer, inner):
    if pattern_contains(outer, inner):
        for key in SMALL_KEYS:
            if glob_oracle(inner, key):
                assert glob_oracle(outer, key), (outer, inner, key)


@PROPERTY
@given(st.data(), small_pattern)
def test_narrowing_a_pattern_stays_within_it(data, outer):
    inner = data.draw(narrowed(outer))
    assert pattern_contains(outer, inner), (outer, inner)


@PROPERTY
@given(small_pattern)
def test_containment_is_reflexive_and_star_holds_everything(pattern):
    assert pattern_contains(pattern, pattern)
    assert pattern_contains("*", pattern)
    assert pattern_contains(pattern, "*") == (set(pattern) == {"*"})


@PROPERTY
@given(small_pattern, small_pattern, small_pattern)
def test_containment_is_transitive(a, b, c):
    if pattern_contains(a, b) and pattern_contains(b, c):
        assert pattern_contains(a, c)


@PROPERTY
@given(small_pattern, small_key)
def test_a_literal_is_within_exactly_the_patterns_that_match_it(pattern, key):
    literal = key or "a"
    assert pattern_contains(pattern, literal) == pattern_matches(pattern, literal)


@pytest.mark.parametrize(
    "outer, inner, expected",
    [
        ("X?", "X*", False),  # SPEC §4's example
        ("X*", "X?", True),
        ("X*", "X*", True),
        ("DATABASE_*", "DATABASE_URL", True),
        ("DATABASE_*", "DATABASE_*_RO", True),
        ("DATABASE_*", "DATA*", False),
        ("DATABASE_?*", "DATABASE_*", False),  # '*' may be empty, '?*' may not
        ("DATABASE_?*", "DATABASE_??", True),
        ("*_URL", "DATABASE_URL", True),
        ("*_URL", "*", False),
        ("a*b*c", "a*c", False),
        ("a*c", "a*b*c", True),
        ("??", "*", False),
        ("?", "??", False),
    ],
)
def test_containment_examples(outer, inner, expected):
    assert pattern_contains(outer, inner) is expected


# -- name validation ---------------------------------------------------------------------


names = st.one_of(
    st.text(max_size=70),
    st.text(alphabet=ENV_REST + HOSTILE + "A", max_size=70),
    st.sampled_from(["tokens", "..", ".", "dev/../prod", "a" * 63, "a" * 64, "-dev", "_dev"]),
)


@PROPERTY
@given(names)
def test_environment_names_are_exactly_those_of_the_spec(name):
    assert is_environment(name) == environment_oracle(name)
    if environment_oracle(name):
        assert check_environment(name) == name
        # The file it names stays in the secrets directory.
        base = Path("/srv/secrets")
        assert (base / f"{name}.enc.yaml").resolve().parent == base
    else:
        with pytest.raises(BadRequest):
            check_environment(name)


keys = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=KEY_CHARS[:4] + "/._-" + HOSTILE, max_size=40),
    st.lists(st.text(alphabet=KEY_CHARS, min_size=1, max_size=20), min_size=1, max_size=15).map(
        "/".join
    ),
)


@PROPERTY
@given(keys)
def test_keys_are_exactly_those_of_the_spec(key):
    assert is_key(key) == key_oracle(key)
    if key_oracle(key):
        assert check_key(key) == key
        assert is_pattern(key) and "*" not in key and "?" not in key
    else:
        with pytest.raises(BadRequest):
            check_key(key)


@PROPERTY
@given(st.one_of(keys, st.text(alphabet="ab/*?[]{}!^\\", max_size=20)))
def test_patterns_are_exactly_those_of_the_spec(pattern):
    assert is_pattern(pattern) == pattern_oracle(pattern)
    if not pattern_oracle(pattern):
        with pytest.raises(BadRequest):
            check_pattern(pattern)


@PROPERTY
@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.binary(max_size=10),
        st.lists(st.text(max_size=5), max_size=3),
        st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    )
)
def test_values_that_are_not_text_are_refused_with_400(value):
    assert not is_environment(value) and not is_key(value) and not is_pattern(value)
    for check in (check_environment, check_key, check_pattern):
        with pytest.raises(BadRequest):
            check(value)


def test_length_limits_are_256_for_keys_and_patterns():
    assert is_key("K" * 256) and not is_key("K" * 257)
    assert is_pattern("*" * 256) and not is_pattern("*" * 257)
    assert is_key("/".join(["K" * 127, "K" * 128])) and not is_key("/".join(["K" * 128] * 2))


# -- matching cost -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["*?" * 40 + "Q", "*a" * 60 + "Q", "?*" * 100 + "Q"],
    ids=["star-question", "star-letter", "question-star"],
)
def test_matching_takes_linear_time_on_a_hostile_pattern(pattern):
    key = "a" * 200
    code = (
        "import sys; from broker.scope import pattern_matches, is_pattern; "
        "assert is_pattern(sys.argv[1]); assert not pattern_matches(sys.argv[1], sys.argv[2])"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, pattern, key], timeout=10, capture_output=True
        )
    except subprocess.TimeoutExpired:
        pytest.fail("matching one 200-character key took more than 10 s")
    assert proc.returncode == 0, proc.stderr
