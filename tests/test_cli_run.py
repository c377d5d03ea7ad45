"""vanta-cli run-with-secrets against a real broker process and real child processes:
what is injected and how, the one batch read, signals, exit codes, clean-up, refusals."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
from pathlib import Path

import jwt
import pytest
import requests
from click.testing import CliRunner
from dotenv import dotenv_values
from hypothesis import given
from hypothesis import strategies as st
from support.brokers import free_port
from support.cli import (
    AWKWARD,
    DUMP_ENV,
    ISSUER,
    READER,
    VANTA_CLI,
    assert_no_values,
    cli_env,
    python,
    run,
    rws,
    rws_args,
    start,
    touch,
    wait_for,
)
from support.cli import broker as broker  # noqa: F401 (the module-scoped broker fixture)
from support.cli import proxy as proxy  # noqa: F401 (the fixture recording its requests)
from support.repos import DEV_SECRETS, SIGNING_KEY

from cli.main import cli
from cli.run.dotenv import quote, render
from cli.run.injected import env_name, reader_request, variables_for, yaml_scalar
from cli.run.process import HandlerRelay, InheritIO, SigwaitRelay

# -- one broker for the module (starting one per test costs seconds) -----------------------


# -- helpers ----------------------------------------------------------------------------------


# -- env injection ----------------------------------------------------------------------------


def test_env_injects_every_matching_key_and_keeps_the_rest(broker, proxy):
    issuer = broker.token(environment="dev", permissions=ISSUER)
    keys = {"VANTA_JWT_SECRET_KEY": SIGNING_KEY, "VANTA_JWT_SECRET_KEYS": f"k1:{SIGNING_KEY}"}
    env = cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=issuer, KEEP_ME="still here", **keys)
    proc = run(rws("dev", "*", python(DUMP_ENV), masking=False), env)
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout)
    # the power to mint stays with the CLI: the issuer token and the signing keys
    assert not {"VANTA_TOKEN", "VANTA_JWT_SECRET_KEY", "VANTA_JWT_SECRET_KEYS"} & set(child)
    assert child["DATABASE_URL"] == DEV_SECRETS["DATABASE_URL"]
    assert child["API_KEYS_OPENAI"] == "sk-test-openai"
    assert child["API_KEYS_STRIPE"] == "sk_test_stripe"
    assert (child["PORT"], child["DEBUG"]) == ("8080", "true")  # as YAML writes them
    assert child["KEEP_ME"] == "still here"
    assert "VANTA_SECRETS_FILE" not in child
    assert "VANTA_TOKEN" not in child  # the issuer token stays with the CLI
    # stderr names the keys and how, never a value
    assert "as environment variables" in proc.stderr
    assert "API_KEYS_OPENAI (API_KEYS/openai)" in proc.stderr and "DATABASE_URL" in proc.stderr
    assert_no_values(proc.stderr, {**DEV_SECRETS, **DEV_SECRETS["API_KEYS"]})


def test_mints_a_one_use_five_minute_reader_and_reads_in_one_batch(broker, proxy):
    issuer = broker.token(environment="dev", key_pattern="*", permissions=(*ISSUER, "audit:read"))
    env = cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=issuer)
    proc = run(rws("dev", "API_KEYS/*", python("pass")), env)
    assert proc.returncode == 0, proc.stderr
    assert proxy.paths() == [
        ("POST", "/api/v1/vault/tokens/generate"),
        ("POST", "/api/v1/vault/dev/batch"),
    ]
    mint, batch = proxy.exchanges
    assert mint.authorization == f"Bearer {issuer}"
    assert json.loads(mint.body) == {
        "subject": json.loads(mint.body)["subject"],
        "environment": "dev",
        "key_pattern": "API_KEYS/*",
        "ttl_minutes": 5,
        "usage_limit": 1,
        "permissions": ["secrets:read", "secrets:list"],
    }
    reader = json.loads(mint.answer)["access_token"]
    claims = jwt.decode(reader, SIGNING_KEY, algorithms=["HS256"], audience="vanta-vault-api")
    assert claims["usage_limit"] == 1 and claims["exp"] - claims["iat"] <= 300
    assert claims["scope"]["permissions"] == ["secrets:read", "secrets:list"]
    assert claims["sub"].startswith("run-with-secrets")
    # the reader, not VANTA_TOKEN, reads; one pattern batch; its one use is spent
    assert batch.authorization == f"Bearer {reader}"
    assert json.loads(batch.body) == {"pattern": "API_KEYS/*"}
    again = requests.get(
        f"{broker.url}/api/v1/vault/dev/API_KEYS/openai",
        headers={"Authorization": f"Bearer {reader}"},
        timeout=10,
    )
    assert again.status_code == 403 and again.json()["error"]["code"] == "usage_exhausted"


def test_reader_is_capped_at_the_issuer_expiry(broker, proxy):
    issuer = broker.token(environment="dev", permissions=ISSUER, ttl_minutes=2)
    env = cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=issuer)
    proc = run(rws("dev", "PORT", python("")), env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proxy.exchanges[0].answer)["expires_in"] <= 120


def test_given_token_reads_directly_and_vanta_token_is_not_used(broker, proxy):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN="not-even-a-token")
    code = "import os; print(os.environ['DATABASE_USER'])"
    proc = run(rws("dev", "DATABASE_*", python(code), token=reader), env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "app\n"
    assert proxy.paths() == [("POST", "/api/v1/vault/dev/batch")]
    assert proxy.exchanges[0].authorization == f"Bearer {reader}"


@pytest.mark.parametrize("text", ["{token}", "{token}\n", "  {token}\r\n\n"])
def test_token_file_reads_the_reader_from_a_file(broker, proxy, tmp_path, text):
    reader = broker.token(environment="dev", permissions=READER)
    token_file = tmp_path / "reader.jwt"
    token_file.write_text(text.format(token=reader))
    token_file.chmod(0o600)
    env = cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN="not-even-a-token")
    code = "import os; print(os.environ['DATABASE_USER'])"
    args = rws_args("--environment", "dev", "--key-pattern", "DATABASE_*",
                    "--token-file", str(token_file), command=python(code))  # fmt: skip
    proc = run(args, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "app\n"
    assert [e.authorization for e in proxy.exchanges] == [f"Bearer {reader}"]
    assert reader not in " ".join(args)  # nothing for `ps` to show


def test_token_file_dash_reads_the_reader_from_standard_input(broker, proxy):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=proxy.url)
    code = "import os, sys; print(os.environ['DATABASE_USER'], repr(sys.stdin.read()))"
    args = rws_args("--environment", "dev", "--key-pattern", "DATABASE_*",
                    "--token-file", "-", command=python(code))  # fmt: skip
    proc = subprocess.run(
        args, env=env, input=reader + "\n", capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "app ''\n"  # the token was read to the end: the command sees none
    assert [e.authorization for e in proxy.exchanges] == [f"Bearer {reader}"]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", "holds no token"),
        (b" \n\n", "holds no token"),
        (b"first-token\nsecond-token\n", "holds more than one token (one line expected)"),
        (b"token with spaces", "holds more than one token (one line expected)"),
        (b"\xff\xfe-token", "not UTF-8 text"),
    ],
)
def test_a_token_file_without_exactly_one_token_is_an_error(tmp_path, content, error):
    marker = tmp_path / "ran"
    token_file = tmp_path / "reader.jwt"
    token_file.write_bytes(content)
    args = rws_args("--environment", "dev", "--key-pattern", "*",
                    "--token-file", str(token_file), command=touch(marker))  # fmt: skip
    proc = run(args, cli_env(VANTA_BROKER_URL=f"http://127.0.0.1:{free_port()}"))
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr == f"error: --token-file {token_file}: {error}\n"


def test_no_example_puts_a_token_on_a_command_line():
    """Arguments are visible to every local user (ps): the README and --help hand tokens
    over through files and standard input."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash)\n(.*?)```", readme, flags=re.S)
    help_text = CliRunner().invoke(cli, ["run-with-secrets", "--help"]).stdout
    examples = help_text.partition("Examples:")[2]
    assert examples
    lines = [line for block in [*blocks, examples] for line in block.splitlines()]
    assert any("--token-file" in line for line in lines)
    for line in lines:
        assert not re.search(r"--token[ =]", line), line
        if "Bearer $" in line:  # only a shell builtin (no process, no argv) may hold it
            assert line.lstrip().startswith(("echo ", "printf ")), line


def test_token_and_token_file_together_is_a_usage_error(tmp_path):
    token_file = tmp_path / "reader.jwt"
    token_file.write_text("x")
    args = rws_args("--environment", "dev", "--key-pattern", "*", "--token", "y",
                    "--token-file", str(token_file), command=["true"])  # fmt: skip
    proc = run(args, cli_env())
    assert proc.returncode == 2
    assert "give --token or --token-file, not both" in proc.stderr


@pytest.mark.parametrize(
    ("permissions", "usage_limit"),
    [(READER, None), (ISSUER, 5)],  # no tokens:issue; an issuer whose usage limit bars minting
    ids=["reader", "limited-issuer"],
)
def test_a_vanta_token_that_cannot_mint_is_the_reader_itself(
    broker, proxy, permissions, usage_limit
):
    reader = broker.token(environment="dev", permissions=permissions, usage_limit=usage_limit)
    env = cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=reader)
    proc = run(rws("dev", "*", python(DUMP_ENV), masking=False), env)
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout)
    assert child["DATABASE_URL"] == DEV_SECRETS["DATABASE_URL"]
    assert "VANTA_TOKEN" not in child and reader not in proc.stdout + proc.stderr
    assert proxy.paths() == [("POST", "/api/v1/vault/dev/batch")]  # nothing minted
    assert proxy.exchanges[0].authorization == f"Bearer {reader}"
    assert "vanta: VANTA_TOKEN cannot mint readers" in proc.stderr


def test_a_reader_vanta_token_is_never_revoked_when_an_optional_key_is_missing(
    broker, proxy, tmp_path
):
    reader = broker.token(environment="dev", permissions=READER)
    template = tmp_path / "app.env"
    template.write_text(
        "DB=secretref://dev/DATABASE_URL\nREPLICA=secretref://dev/NO_SUCH_KEY?optional\n"
    )
    env = cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=reader)
    proc = run(rws_args("--env-file", str(template), command=python(DUMP_ENV)), env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["DB"] == "<concealed by vanta>"
    assert ("POST", "/api/v1/vault/tokens/revoke-self") not in proxy.paths()
    still = requests.get(
        f"{broker.url}/api/v1/vault/dev/PORT", headers={"Authorization": f"Bearer {reader}"}
    )
    assert still.status_code == 200


def test_options_after_the_command_belong_to_the_command(broker):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url)
    command = python("import sys; print(sys.argv[1:])") + ["--token", "x", "--environment"]
    without_dashes = [a for a in rws("dev", "PORT", command, token=reader) if a != "--"]
    proc = run(without_dashes, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "['--token', 'x', '--environment']\n"


def test_two_keys_with_one_name_are_an_error_before_anything_runs(broker, tmp_path):
    marker = tmp_path / "ran"
    reader = broker.token(environment="clash", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url)
    proc = run(rws("clash", "*", touch(marker), token=reader), env)
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr == (
        "error: keys 'API_KEYS/openai' and 'API_KEYS_OPENAI' both become API_KEYS_OPENAI: "
        "narrow --key-pattern so only one of them is injected\n"
    )


def test_awkward_values_survive_env_injection(broker):
    reader = broker.token(environment="awkward", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url)
    proc = run(rws("awkward", "*", python(DUMP_ENV), token=reader, masking=False), env)
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout)
    assert {k: child[k] for k in AWKWARD} == AWKWARD


# -- file injection ---------------------------------------------------------------------------

READ_FILE = """
import json, os, stat, sys
from dotenv import dotenv_values
path = os.environ["VANTA_SECRETS_FILE"]
json.dump({
    "path": path,
    "file_mode": stat.S_IMODE(os.stat(path).st_mode),
    "dir_mode": stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode),
    "raw": dotenv_values(path, interpolate=False),
    "interpolated": dotenv_values(path),
    "in_env": sorted(k for k in os.environ if k in ("MULTILINE", "QUOTES", "TAB")),
}, sys.stdout)
"""


def test_file_is_private_round_trips_through_python_dotenv_and_is_removed(broker, tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    reader = broker.token(environment="awkward", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url, XDG_RUNTIME_DIR=str(runtime), HOME="/home/x")
    args = rws("awkward", "*", python(READ_FILE), token=reader, inject_as="file", masking=False)
    proc = run(args, env)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["file_mode"] == 0o600 and seen["dir_mode"] == 0o700
    assert seen["raw"] == AWKWARD
    assert seen["in_env"] == []  # only the file, no variables
    # python-dotenv's default ${NAME} interpolation is the one thing quoting cannot stop
    plain = {k: v for k, v in AWKWARD.items() if "${" not in v}
    assert {k: seen["interpolated"][k] for k in plain} == plain
    path = Path(seen["path"])
    assert path.parent.parent == runtime and path.parent.name.startswith("vanta-run-")
    assert not path.exists() and not path.parent.exists()
    assert "into a dotenv file at $VANTA_SECRETS_FILE" in proc.stderr
    assert_no_values(proc.stderr, AWKWARD)


def test_file_falls_back_to_the_temp_dir_without_a_runtime_dir(broker, tmp_path):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(
        VANTA_BROKER_URL=broker.url,
        XDG_RUNTIME_DIR=str(tmp_path / "missing"),
        TMPDIR=str(tmp_path),
    )
    code = "import os; print(os.environ['VANTA_SECRETS_FILE'])"
    proc = run(rws("dev", "PORT", python(code), token=reader, inject_as="file"), env)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).parent.parent == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_file_is_removed_when_the_command_fails(broker, tmp_path):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url, XDG_RUNTIME_DIR=str(tmp_path))
    code = "import os, sys; print(os.environ['VANTA_SECRETS_FILE']); sys.exit(3)"
    proc = run(rws("dev", "*", python(code), token=reader, inject_as="file"), env)
    assert proc.returncode == 3
    assert not Path(proc.stdout.strip()).exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_to_the_cli_ends_the_command_and_removes_the_file(broker, tmp_path, sig):
    ready = tmp_path / "ready"
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url, XDG_RUNTIME_DIR=str(tmp_path))
    code = (
        "import os, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
        f"open({str(ready)!r} + '.tmp', 'w').write(os.environ['VANTA_SECRETS_FILE'])\n"
        f"os.rename({str(ready)!r} + '.tmp', {str(ready)!r})\n"
        "while True: signal.pause()\n"
    )
    cli_proc = start(rws("dev", "*", python(code), token=reader, inject_as="file"), env)
    try:
        wait_for(ready.exists, "the command to start")
        secrets_file = Path(ready.read_text())
        assert secrets_file.exists()
        cli_proc.send_signal(sig)
        _, stderr = cli_proc.communicate(timeout=30)
    finally:
        if cli_proc.poll() is None:
            cli_proc.kill()
    assert cli_proc.returncode == 128 + sig, stderr
    assert not secrets_file.exists() and not secrets_file.parent.exists()


# -- signals and exit codes -------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 3, 42])
def test_exit_code_is_the_commands(broker, code):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url)
    proc = run(rws("dev", "PORT", python(f"import sys; sys.exit({code})"), token=reader), env)
    assert proc.returncode == code, proc.stderr


def test_exit_code_survives_a_parent_that_ignores_sigchld(broker):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url)
    args = rws("dev", "PORT", python("import sys; sys.exit(7)"), token=reader)
    ignoring = python(
        "import os, signal, sys\n"
        "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"  # inherited across exec
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    proc = run([*ignoring, *args], env)
    assert proc.returncode == 7, proc.stderr


def test_command_killed_by_a_signal_gives_128_plus_n(broker):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url)
    suicide = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    proc = run(rws("dev", "PORT", python(suicide), token=reader), env)
    assert proc.returncode == 128 + signal.SIGKILL


def handler_child(ready: Path, log: Path, exit_on: signal.Signals) -> list[str]:
    """A command that logs each signal it gets and exits 40 on `exit_on`."""
    return python(
        "import os, signal, sys\n"
        f"log = open({str(log)!r}, 'a', buffering=1)\n"
        "def on(n, f):\n"
        "    log.write(signal.Signals(n).name + '\\n')\n"
        f"    if n == {int(exit_on)}: sys.exit(40)\n"
        "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n"
        "    signal.signal(s, on)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "while True: signal.pause()\n"
    )


@pytest.mark.parametrize("masking", [True, False])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_are_forwarded_to_the_command(broker, tmp_path, sig, masking):
    ready, log = tmp_path / "ready", tmp_path / "log"
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url)
    command = handler_child(ready, log, sig)
    cli_proc = start(rws("dev", "PORT", command, token=reader, masking=masking), env)
    try:
        wait_for(ready.exists, "the command to start")
        cli_proc.send_signal(sig)
        cli_proc.communicate(timeout=30)
    finally:
        if cli_proc.poll() is None:
            cli_proc.kill()
    assert cli_proc.returncode == 40  # the command handled it and chose its exit code
    assert log.read_text() == f"{sig.name}\n"


def test_ctrl_c_at_a_terminal_reaches_the_command_once(broker, tmp_path):
    """The terminal sends SIGINT to the whole foreground group: the CLI must not add one."""
    ready, log = tmp_path / "ready", tmp_path / "log"
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url)
    argv = rws("dev", "PORT", handler_child(ready, log, signal.SIGTERM), token=reader)
    pid, master = pty.fork()
    if pid == 0:  # the CLI: session leader on the pty, in its foreground process group
        os.execve(VANTA_CLI, argv, env)
    try:
        wait_for(ready.exists, "the command to start")
        os.write(master, b"\x03")  # Ctrl-C
        wait_for(lambda: log.exists() and log.read_text(), "the command to see SIGINT")
        os.kill(pid, signal.SIGTERM)  # forwarded: the command exits 40
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 40
    assert log.read_text() == "SIGINT\nSIGTERM\n"


RELAY_SCRIPT = """
import os, sys
from cli.run.process import {relay}, InheritIO
with {relay}() as relay:
    sys.exit(relay.run(sys.argv[1:], os.environ, InheritIO()))
"""


@pytest.mark.parametrize("relay", ["HandlerRelay", "SigwaitRelay"])
def test_each_relay_forwards_and_returns_the_status(tmp_path, relay):
    ready, log = tmp_path / "ready", tmp_path / "log"
    proc = subprocess.Popen(
        [
            *python(RELAY_SCRIPT.format(relay=relay)),
            *handler_child(ready, log, exit_on=signal.SIGHUP),
        ],
        cwd=Path(__file__).parent.parent,
    )
    try:
        wait_for(ready.exists, "the command to start")
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: log.exists() and log.read_text(), "SIGINT to arrive")
        proc.send_signal(signal.SIGHUP)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 40
    assert log.read_text() == "SIGINT\nSIGHUP\n"


@pytest.mark.parametrize("relay_class", [SigwaitRelay, HandlerRelay])
def test_a_signal_before_the_start_means_the_command_never_runs(relay_class):
    with relay_class() as relay:
        signal.raise_signal(signal.SIGTERM)  # held by the relay, not fatal
        # not even attempted: starting this would raise FileNotFoundError
        status = relay.run(["/nonexistent/vanta-test-command"], os.environ, InheritIO())
    assert status == 128 + signal.SIGTERM


# -- refusals: the command never runs ----------------------------------------------------------


def test_denied_read_is_one_line_and_the_command_never_runs(broker, tmp_path):
    marker = tmp_path / "ran"
    issuer = broker.token(environment="dev", key_pattern="DATABASE_*", permissions=ISSUER)
    env = cli_env(VANTA_BROKER_URL=broker.url, VANTA_TOKEN=issuer)
    proc = run(rws("dev", "*", touch(marker)), env)
    assert proc.returncode == 1 and not marker.exists() and proc.stdout == ""
    assert proc.stderr.startswith(
        "error: 403 scope_denied: the key pattern is outside the issuer's pattern"
    )
    assert len(proc.stderr.splitlines()) == 1 and issuer not in proc.stderr


def test_reader_without_list_permission_is_refused(broker, tmp_path):
    marker = tmp_path / "ran"
    reader = broker.token(environment="dev", permissions=("secrets:read",))
    env = cli_env(VANTA_BROKER_URL=broker.url)
    proc = run(rws("dev", "*", touch(marker), token=reader), env)
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.startswith("error: 403 permission_denied: a pattern batch needs")


def test_unreachable_broker_is_one_line_and_the_command_never_runs(tmp_path):
    marker = tmp_path / "ran"
    url = f"http://127.0.0.1:{free_port()}"
    env = cli_env(VANTA_BROKER_URL=url, VANTA_TOKEN="issuer-token-value")
    proc = run(rws("dev", "*", touch(marker)), env)
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr == f"error: cannot reach the broker at {url}: connection refused\n"


def test_no_matching_key_is_an_error(broker):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url)
    proc = run(rws("dev", "NOPE_*", ["true"], token=reader), env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no key in dev matches 'NOPE_*'")


def test_no_token_at_all_says_what_to_set(tmp_path):
    proc = run(rws("dev", "*", ["true"]), cli_env())
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no token: set VANTA_TOKEN (an issuer with tokens:issue")
    assert "--token-file FILE" in proc.stderr


def test_missing_command_is_127_and_the_file_is_gone(broker, tmp_path):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url, XDG_RUNTIME_DIR=str(tmp_path))
    proc = run(rws("dev", "PORT", ["no-such-command-xyz"], token=reader, inject_as="file"), env)
    assert proc.returncode == 127
    assert proc.stderr.endswith("error: no-such-command-xyz: command not found\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["--environment", "dev", "--key-pattern", "*"],  # no command
        ["--environment", "dev", "--key-pattern", "*", "--inject-as", "pipe", "--", "true"],
        ["--key-pattern", "*", "--", "true"],  # one without the other
        ["--environment", "dev", "--", "true"],
        ["--", "true"],  # neither a pattern nor a template
        ["--environment", "dev", "--key-pattern", "*", "--max-reads", "2", "--", "true"],
        ["--environment", "dev", "--key-pattern", "*", "--inject-as", "file", "--max-reads", "2"]
        + ["--", "true"],
        ["--environment", "dev", "--key-pattern", "*", "--inject-as", "fifo", "--max-reads", "0"]
        + ["--", "true"],
        ["--env-file", "/nonexistent/vanta-template.env", "--", "true"],
        ["--environment", "dev", "--key-pattern", "*", "--token-file", "/nonexistent/t", "--"]
        + ["true"],
    ],
)
def test_usage_errors_exit_2(args):
    result = CliRunner().invoke(cli, ["run-with-secrets", *args])
    assert result.exit_code == 2, result.output


def test_help_explains_options_with_an_example():
    result = CliRunner().invoke(cli, ["run-with-secrets", "--help"])
    assert result.exit_code == 0
    for text in (
        "--environment",
        "--key-pattern",
        "--env-file",
        "--inject-as",
        "--max-reads",
        "--no-masking",
        "--token",
        "--token-file",
        "--allow-variable",
        "Examples:",
        "secretref://",
    ):
        assert text in result.stdout
    assert "vanta-cli run-with-secrets --environment dev" in result.stdout


# -- naming and formatting (pure) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("API_KEYS/openai", "API_KEYS_OPENAI"),
        ("DATABASE_URL", "DATABASE_URL"),
        ("db.primary-host", "DB_PRIMARY_HOST"),
        ("a/b/c", "A_B_C"),
    ],
)
def test_env_name(key, name):
    assert env_name(key) == name


@pytest.mark.parametrize(
    ("value", "text"),
    [(42, "42"), (True, "true"), (False, "false"), (1.5, "1.5"), (1e20, "1e+20"), ("x", "x")],
)
def test_values_are_written_as_yaml_writes_them(value, text):
    assert yaml_scalar(value) == text


def test_reader_request_is_read_and_list_one_use_five_minutes():
    request = reader_request("dev", "DB_*", "me")
    assert request.permissions == ("secrets:read", "secrets:list")
    assert (request.usage_limit, request.ttl_minutes) == (1, 5)


def test_variables_keep_their_source_and_hide_values():
    (var,) = variables_for("dev", {"API_KEYS/openai": "sk-123"})
    assert (var.name, var.value, var.source) == ("API_KEYS_OPENAI", "sk-123", "dev/API_KEYS/openai")
    assert "sk-123" not in repr(var)


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")))
def test_any_text_round_trips_through_python_dotenv(value):
    import io

    parsed = dotenv_values(stream=io.StringIO(render([("K", value)])), interpolate=False)
    assert parsed == {"K": value}


def test_quote_escapes_only_what_python_dotenv_decodes():
    assert quote('a"b\\c\nd\re$f#g') == '"a\\"b\\\\c\\nd\\re$f#g"'


def test_file_mode_does_not_depend_on_the_umask(broker, tmp_path):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url, XDG_RUNTIME_DIR=str(tmp_path))
    mode = "stat.S_IMODE(os.stat(os.environ['VANTA_SECRETS_FILE']).st_mode)"
    command = python(f"import os, stat; print(oct({mode}))")
    umask_000 = ["sh", "-c", 'umask 000 && exec "$@"', "sh"]
    proc = run([*umask_000, *rws("dev", "PORT", command, token=reader, inject_as="file")], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "0o600\n"
