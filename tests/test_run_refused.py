"""Keys that would take over the command (SPEC §8, §9): a committed `hostile` environment
whose keys are PATH, LD_PRELOAD, BASH_ENV and VANTA_TOKEN, each pointing at something that
announces itself when it runs. run-with-secrets refuses them unless allowed by name, the
command is looked up on the caller's PATH, and `secrets check` flags the keys."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.cli import READER, Broker, cli_env, python, run, rws, rws_args, serve_secrets

from cli.commands.secrets import secrets
from cli.run.variables import REFUSED_NAMES, env_name, is_refused, refused_keys

VANTA_CLI = str(Path(sys.executable).parent / "vanta-cli")
CHILD = ["sh", "-c", "echo child ran"]
HOSTILE_KEYS = ("PATH", "LD_PRELOAD", "BASH_ENV", "VANTA_TOKEN")

HIJACK_C = """
#include <stdio.h>
__attribute__((constructor)) static void hijack(void) {
    fputs("HIJACKED: LD_PRELOAD constructor ran\\n", stderr);
}
"""


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, age_key, age_key_file) -> Iterator[Broker]:
    """A broker serving `hostile`: PATH leads to a fake `sh`, LD_PRELOAD to a library with
    a constructor (when a C compiler is at hand), BASH_ENV to a script; all say HIJACKED."""
    root = tmp_path_factory.mktemp("hostile")
    fake_bin = root / "fake-bin"
    fake_bin.mkdir()
    fake_sh = fake_bin / "sh"
    fake_sh.write_text("#!/bin/dash\necho 'HIJACKED: fake sh from secret PATH ran'\n")
    fake_sh.chmod(0o755)
    bash_env = root / "bash_env.sh"
    bash_env.write_text("echo 'HIJACKED: BASH_ENV sourced'\n")
    library = root / "hijack.so"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is not None:
        source = root / "hijack.c"
        source.write_text(HIJACK_C)
        subprocess.run([compiler, "-shared", "-fPIC", "-o", library, source], check=True)
    keys = {
        "PATH": str(fake_bin),
        "LD_PRELOAD": str(library),
        "BASH_ENV": str(bash_env),
        "VANTA_TOKEN": "a-token-the-command-should-not-get",
        "GREETING": "hello from hostile",
    }
    with serve_secrets(root, age_key, age_key_file, hostile=keys) as running:
        yield running


def hostile_root(broker: Broker) -> Path:
    """Where the fixture put the fake programs (the repository's parent)."""
    assert broker.repo is not None
    return broker.repo.path.parent


def reader_env(broker: Broker) -> tuple[str, dict[str, str]]:
    return broker.token(environment="hostile", permissions=READER), cli_env(
        VANTA_BROKER_URL=broker.url
    )


def test_every_hostile_key_is_refused_and_nothing_runs(hostile, tmp_path):
    marker = tmp_path / "ran"
    token, env = reader_env(hostile)
    command = ["sh", "-c", f"echo child ran; touch {marker}"]
    proc = run(rws("hostile", "*", command, token=token), env)
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stdout == "" and "HIJACKED" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("error: key 'BASH_ENV' would set BASH_ENV, ")
    for key in HOSTILE_KEYS:
        assert f"key {key!r} would set {key}" in proc.stderr
        assert f"--allow-variable {key}" in proc.stderr
    assert "GREETING" not in proc.stderr  # an ordinary key is not a problem
    assert "a-token-the-command" not in proc.stderr  # names, never values


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_each_hostile_key_alone_is_refused_naming_key_variable_and_option(hostile, key):
    token, env = reader_env(hostile)
    proc = run(rws("hostile", key, CHILD, token=token), env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (
        f"error: key {key!r} would set {key}: run-with-secrets does not set a variable that "
        "changes how a program starts from a key name; narrow --key-pattern, or allow it "
        f"with --allow-variable {key}\n"
    )


def test_a_refused_key_is_refused_in_every_injection_mode(hostile):
    token, env = reader_env(hostile)
    for mode in ("file", "fifo"):
        proc = run(rws("hostile", "LD_PRELOAD", CHILD, token=token, inject_as=mode), env)
        assert proc.returncode == 1 and proc.stdout == ""
        assert "--allow-variable LD_PRELOAD" in proc.stderr


def test_keys_the_pattern_does_not_select_do_not_matter(hostile):
    token, env = reader_env(hostile)
    code = "import os; print(os.environ['GREETING'])"
    proc = run(rws("hostile", "GREET*", python(code), token=token, masking=False), env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello from hostile\n"


def test_allowing_one_variable_leaves_the_others_refused(hostile):
    token, env = reader_env(hostile)
    args = rws_args("--environment", "hostile", "--key-pattern", "*", "--token", token,
                    "--allow-variable", "PATH", command=CHILD)  # fmt: skip
    proc = run(args, env)
    assert proc.returncode == 1
    assert "would set PATH" not in proc.stderr
    assert proc.stderr.endswith(
        "allow them with --allow-variable BASH_ENV --allow-variable LD_PRELOAD "
        "--allow-variable VANTA_TOKEN\n"
    )


def test_an_allowed_bash_env_is_injected(hostile):
    """Allowing works, and shows what the refusal prevents."""
    token, env = reader_env(hostile)
    args = rws_args("--environment", "hostile", "--key-pattern", "BASH_ENV", "--token", token,
                    "--allow-variable", "BASH_ENV", "--no-masking",
                    command=["bash", "-c", "echo child ran"])  # fmt: skip
    proc = run(args, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "HIJACKED: BASH_ENV sourced\nchild ran\n"


def test_an_allowed_ld_preload_is_injected(hostile):
    if not (hostile_root(hostile) / "hijack.so").exists():
        pytest.skip("no C compiler to build the preloaded library")
    token, env = reader_env(hostile)
    args = rws_args("--environment", "hostile", "--key-pattern", "LD_PRELOAD", "--token", token,
                    "--allow-variable", "LD_PRELOAD", "--no-masking", command=CHILD)  # fmt: skip
    proc = run(args, env)
    assert proc.returncode == 0, proc.stderr
    assert "HIJACKED: LD_PRELOAD constructor ran" in proc.stderr
    assert proc.stdout == "child ran\n"


def test_the_command_is_found_on_the_callers_path_not_an_injected_one(hostile):
    token, env = reader_env(hostile)
    command = ["sh", "-c", 'echo "child ran with PATH=$PATH"']
    args = rws_args("--environment", "hostile", "--key-pattern", "PATH", "--token", token,
                    "--allow-variable", "PATH", "--no-masking", command=command)  # fmt: skip
    proc = run(args, env)
    assert proc.returncode == 0, proc.stderr
    fake_bin = hostile_root(hostile) / "fake-bin"
    # the real sh ran (the caller's PATH found it); the command itself sees the secret PATH
    assert proc.stdout == f"child ran with PATH={fake_bin}\n"
    assert "HIJACKED" not in proc.stdout + proc.stderr


def test_a_variable_the_caller_writes_in_a_template_is_allowed(hostile, tmp_path):
    token, env = reader_env(hostile)
    template = tmp_path / "app.env"
    template.write_text("BASH_ENV=secretref://hostile/BASH_ENV\nVANTA_GREETING=hi there\n")
    code = 'echo "child ran, VANTA_GREETING=$VANTA_GREETING"'
    args = rws_args("--env-file", str(template), "--token", token, "--no-masking",
                    command=["bash", "-c", code])  # fmt: skip
    proc = run(args, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "HIJACKED: BASH_ENV sourced\nchild ran, VANTA_GREETING=hi there\n"


# -- secrets check ------------------------------------------------------------------------------


def test_secrets_check_flags_each_hostile_key_naming_file_and_key(hostile):
    assert hostile.repo is not None
    proc = subprocess.run(
        [VANTA_CLI, "secrets", "check", "--repo", str(hostile.repo.path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    for key in HOSTILE_KEYS:
        assert (
            f"secrets/hostile.enc.yaml: {key}: becomes {key}, a variable that changes how a "
            "program starts, which run-with-secrets refuses to set: rename the key, or allow "
            f"it with --allow-variable {key}"
        ) in lines
    assert len(lines) == len(HOSTILE_KEYS)
    assert proc.stderr == "error: 4 problem(s) in 1 of 1 file(s)\n"


def test_secrets_check_passes_what_is_allowed_by_name(hostile):
    assert hostile.repo is not None
    allow = [arg for key in HOSTILE_KEYS for arg in ("--allow-variable", key)]
    result = CliRunner().invoke(secrets, ["check", "--repo", str(hostile.repo.path), *allow])
    assert result.exit_code == 0, result.output
    partly = CliRunner().invoke(secrets, ["check", "--repo", str(hostile.repo.path), *allow[:6]])
    assert partly.exit_code == 1
    assert partly.stdout.splitlines() == [
        "secrets/hostile.enc.yaml: VANTA_TOKEN: becomes VANTA_TOKEN, a variable that changes "
        "how a program starts, which run-with-secrets refuses to set: rename the key, or "
        "allow it with --allow-variable VANTA_TOKEN"
    ]


def test_secrets_check_names_a_nested_key_by_its_path(secrets_repo):
    secrets_repo.write_and_commit("qa", {"ld": {"preload": "x"}, "node": {"options": "y"}}, "qa")
    result = CliRunner().invoke(secrets, ["check", "--repo", str(secrets_repo.path)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "secrets/qa.enc.yaml: ld/preload: becomes LD_PRELOAD, a variable that changes how a "
        "program starts, which run-with-secrets refuses to set: rename the key, or allow it "
        "with --allow-variable LD_PRELOAD",
        "secrets/qa.enc.yaml: node/options: becomes NODE_OPTIONS, a variable that changes "
        "how a program starts, which run-with-secrets refuses to set: rename the key, or "
        "allow it with --allow-variable NODE_OPTIONS",
    ]


# -- the one list (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        *sorted(REFUSED_NAMES),
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "DYLD_INSERT_LIBRARIES",
        "VANTA_TOKEN",
        "VANTA_SECRETS_FILE",
    ],
)
def test_refused_names(name):
    assert is_refused(name)


@pytest.mark.parametrize(
    "name", ["PATHS", "MY_PATH", "DATABASE_URL", "LDAP_URL", "VANTA", "NODE_ENV", "ENVIRONMENT"]
)
def test_names_that_are_not_refused(name):
    assert not is_refused(name)


def test_refused_keys_go_by_the_variable_a_key_becomes():
    keys = ["ld.preload", "api/PATH", "path", "Vanta-Token", "DB_URL"]
    assert [(r.key, r.name) for r in refused_keys(keys)] == [
        ("ld.preload", "LD_PRELOAD"),
        ("path", "PATH"),
        ("Vanta-Token", "VANTA_TOKEN"),
    ]
    assert [r.key for r in refused_keys(keys, allowed={"PATH", "VANTA_TOKEN"})] == ["ld.preload"]
    assert env_name("api/PATH") == "API_PATH"
