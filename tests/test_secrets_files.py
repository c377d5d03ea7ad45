"""Which secrets files are served (SPEC §4): the shared checks every reader asks first, and
the bounds on what one file can cost (sops' output, the bytes read, parser recursion)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml.error import YAMLError
from support.repos import SecretsRepo

from broker.errors import FileRefused
from broker.store import history
from broker.store.files import (
    HAS_ANCHORS,
    YAMLRefused,
    environment_of,
    has_anchors,
    load_yaml,
    refusal,
)
from broker.store.rotation import PolicyError, parse_policy
from broker.store.sops import flatten, run_bounded
from broker.store.tree import DiskTree, open_tree

MIB = 1024 * 1024
ENC = (
    "ENC[AES256_GCM,data:CPw=,iv:8XDlNHlwNusAt2xmVabo30Ro2dlKwCQsEk0BtETaEPY=,tag:7Gjw==,type:str]"
)


@pytest.mark.parametrize(
    ("text", "anchored"),
    [
        (f"A: {ENC}\nsops:\n    mac: {ENC}\n", False),
        ("a: &x 1\nb: 2\n", True),
        ("a: 1\nb: *x\n", True),  # an alias with no anchor is still an alias
        ("base: &b {x: 1}\nuse:\n  <<: *b\n", True),
        (f"A: {ENC}\nsops:\n    extra: &m [1]\n    more: *m\n", True),  # in the metadata
        ("? &k key\n: 1\n", True),
        ("a: !!str &x 1\n", True),
        ("%YAML 1.2\n---\na: &x 1\n", True),  # libyaml refuses 1.2: ruamel's parser decides
        ("a: '*not an alias &nor an anchor'\n", False),
        ('a: "&x *y"\n', False),
        ("a: |\n  *x &y in a block\n", False),
        ("regex: ^.*_secret$\n", False),
        ("a: [unclosed *x", False),  # not YAML: whoever loads it gets the error
    ],
)
def test_anchors_and_aliases_are_found_without_building_a_tree(text, anchored):
    assert has_anchors(text.encode()) is anchored
    assert has_anchors(text) is anchored


def test_anchors_are_found_in_utf16_text_too():
    assert has_anchors("a: &x 1\nb: *x\n".encode("utf-16"))


@pytest.mark.parametrize(
    ("name", "environment"),
    [
        ("prod.enc.yaml", "prod"),
        ("eu-west_2.enc.yaml", "eu-west_2"),
        ("Bad Name.enc.yaml", None),
        ("UPPER.enc.yaml", None),
        ("tokens.enc.yaml", None),  # reserved
        (".enc.yaml", None),
        ("-dash.enc.yaml", None),
        ("prod.yaml", None),
        ("a" * 64 + ".enc.yaml", None),
    ],
)
def test_only_environment_names_make_a_served_file(name, environment):
    assert environment_of(name) == environment


def test_refusal_says_why():
    assert refusal(b"a: &x 1\n") == HAS_ANCHORS
    assert refusal(b"a: 1\n") is None
    assert refusal(b"#" * (64 * MIB + 1)) == "the file is over 64 MiB"


def test_load_yaml_refuses_anchors_and_deep_nesting_is_a_yaml_error():
    with pytest.raises(YAMLRefused):
        load_yaml("a: &x [1]\nb: *x\n")
    with pytest.raises(YAMLError):
        load_yaml("a: " + "[" * 600 + "]" * 600 + "\n")  # ruamel's composer recurses
    assert load_yaml("a: [1, 2]\n") == {"a": [1, 2]}


def test_a_policy_with_anchors_or_over_a_mebibyte_is_refused():
    with pytest.raises(PolicyError, match="anchors and aliases are not allowed"):
        parse_policy("rotation:\n  default_max_age_days: &d 30\n  warn_days: *d\n")
    with pytest.raises(PolicyError, match="over 1 MiB"):
        parse_policy(b"#" * (MIB + 1))


# -- what one file can cost ---------------------------------------------------------------------


def test_sops_output_is_cut_off_at_its_bound():
    started = time.monotonic()
    run = run_bounded(
        [sys.executable, "-c", "import sys\nwhile True: sys.stdout.buffer.write(b'x' * 65536)"],
        b"",
        None,
        MIB,
        30,
    )
    assert run.overflowed and not run.timed_out and run.returncode != 0
    assert MIB < len(run.stdout) <= MIB + 65536
    assert time.monotonic() - started < 10


def test_a_bounded_run_passes_large_input_and_output_through_and_times_out():
    data = bytes(range(256)) * 16384  # 4 MiB: far more than a pipe holds
    run = run_bounded(["cat"], data, None, 8 * MIB, 30)
    assert run.returncode == 0 and bytes(run.stdout) == data and not run.overflowed
    failed = run_bounded(["sh", "-c", "echo oops >&2; exit 3"], b"", None, MIB, 30)
    assert failed.returncode == 3 and failed.stderr == b"oops\n"
    started = time.monotonic()
    slow = run_bounded(["sleep", "30"], b"", None, MIB, 0.5)
    assert slow.timed_out and time.monotonic() - started < 5


def test_flatten_and_history_do_not_recurse_past_any_key():
    deep: dict = {"leaf": "v"}
    for _ in range(5000):
        deep = {"a": deep}
    assert flatten(deep) == {}
    nested = "a:\n" + "".join("  " * i + " b:\n" for i in range(1, 700)) + "  " * 700 + " c: 1\n"
    assert history.ciphertext_leaves(nested.encode()) == {}
    assert history.ciphertext_leaves(("a: " + "[" * 600 + "]" * 600 + "\n").encode()) == {}


def test_history_refuses_a_document_whose_values_alone_pass_16_mib():
    big = (
        "A: ENC[AES256_GCM,data:" + "x" * (16 * MIB // 3 * 4 + 8) + ",iv:aa==,tag:bb==,type:str]\n"
    )
    with pytest.raises(FileRefused, match="over 16 MiB"):
        history.ciphertext_leaves(big.encode())
    small = "A: ENC[AES256_GCM,data:" + "x" * 1000 + ",iv:aa==,tag:bb==,type:str]\n"
    assert list(history.ciphertext_leaves(small.encode())) == ["A"]


def test_a_disk_file_over_64_mib_is_refused_unread(tmp_path: Path):
    with (tmp_path / "huge.enc.yaml").open("wb") as f:
        f.truncate(64 * MIB + 1)  # sparse: nothing is written, and nothing must be read
    tree = DiskTree(tmp_path)
    with pytest.raises(FileRefused, match="over 64 MiB"):
        tree.blob(tree.served(), "huge")


def test_listing_keeps_misnamed_files_apart(secrets_repo: SecretsRepo, tmp_path: Path):
    for name in ("Bad Name", "UPPER", "tokens"):
        secrets_repo.write(name, {"A": "1"})
    (secrets_repo.secrets_dir / "README.md").write_text("not a secrets file\n")
    secrets_repo.commit("misnamed files")
    for tree in (open_tree(secrets_repo.secrets_dir, "HEAD"), DiskTree(secrets_repo.secrets_dir)):
        listing = tree.listing(tree.served())
        assert listing.environments == ("dev", "prod")
        assert listing.misnamed == ("Bad Name.enc.yaml", "UPPER.enc.yaml", "tokens.enc.yaml")


def test_the_event_scan_is_cheap_for_a_big_file_with_a_star():
    body = "".join(f"K{i}: {ENC}\n" for i in range(20_000))  # ~2 MiB
    text = body + "sops:\n    unencrypted_regex: ^.*_public$\n"
    started = time.monotonic()
    assert not has_anchors(text.encode())
    assert time.monotonic() - started < 2  # libyaml: ~0.1 s; ruamel's pure parser: ~3 s


def test_sops_is_never_run_for_a_refused_file(secrets_repo: SecretsRepo, age_key_file: Path):
    from broker.config import default_sops_bin
    from broker.store.sops import Decryptor

    decryptor = Decryptor(default_sops_bin(), age_key_file=str(age_key_file))
    data = (secrets_repo.secrets_dir / "dev.enc.yaml").read_bytes()
    bomb = data.replace(b"API_KEYS:\n", b"API_KEYS: &k\n", 1) + b"again: *k\n"
    for _ in range(2):
        with pytest.raises(FileRefused, match="anchors or aliases"):
            decryptor.document("bomb-id", lambda: bomb)
    assert decryptor.decrypt_count == 0
    assert decryptor.document("dev-id", lambda: data)["PORT"] == 8080
