"""run-with-secrets --inject-as fifo (SPEC §14): the named pipe itself, then through the CLI
with a real broker and real child processes; and that no secret is left on disk by any
injection, however the command ends."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import READER, Broker, cli_env, python, run, rws, serve_secrets, start, wait_for
from support.repos import DEV_SECRETS

from cli.run.dotenv import render
from cli.run.fifo import FifoInjection
from cli.run.injected import InjectedVar, variables_for

SECRETS = {"DATABASE_URL": DEV_SECRETS["DATABASE_URL"], "API_KEY": "sk-fifo-3b7e91c0"}
VARIABLES = variables_for("dev", SECRETS)
CONTENT = render((var.name, var.value) for var in VARIABLES)


def read_all(path: Path, deadline: float = 30) -> str:
    """Open and read `path`, failing (not hanging) if no writer ever serves it."""
    result: list[str | BaseException] = []

    def read() -> None:
        try:
            with open(path, encoding="utf-8") as reader:
                result.append(reader.read())
        except BaseException as exc:  # handed to the test thread
            result.append(exc)

    in_thread(read).join(deadline)
    assert result, f"nobody served a reader of {path}"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def in_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


# -- the named pipe (in process) -----------------------------------------------------------------


def test_the_pipe_is_private_and_gives_the_dotenv_text(tmp_path):
    with FifoInjection(VARIABLES, parent=str(tmp_path)) as added:
        path = Path(added["VANTA_SECRETS_FILE"])
        mode = path.stat().st_mode
        assert stat.S_ISFIFO(mode) and stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert path.parent.parent == tmp_path
        assert read_all(path) == CONTENT
    assert list(tmp_path.iterdir()) == []


def test_max_reads_readers_get_it_and_the_next_finds_nothing(tmp_path):
    with FifoInjection(VARIABLES, max_reads=3, parent=str(tmp_path)) as added:
        path = Path(added["VANTA_SECRETS_FILE"])
        assert [read_all(path) for _ in range(3)] == [CONTENT] * 3
        with pytest.raises(FileNotFoundError):
            read_all(path)
    assert list(tmp_path.iterdir()) == []


def test_a_reader_that_stays_open_gets_one_copy_and_the_next_reader_its_own(tmp_path):
    with FifoInjection(VARIABLES, max_reads=2, parent=str(tmp_path)) as added:
        path = Path(added["VANTA_SECRETS_FILE"])
        with open(path, encoding="utf-8") as first:
            assert first.read() == CONTENT
            assert read_all(path) == CONTENT  # a second reader, the first still open
            assert first.read() == ""  # no second copy for the first
        assert not path.exists()


def test_the_mode_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0o277)
    try:
        with FifoInjection(VARIABLES, max_reads=2, parent=str(tmp_path)) as added:
            path = Path(added["VANTA_SECRETS_FILE"])
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert read_all(path) == CONTENT
            assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the next one too
    finally:
        os.umask(old)


def test_leaving_with_no_reader_stops_the_server_and_removes_everything(tmp_path):
    injection = FifoInjection(VARIABLES, parent=str(tmp_path))
    injection.__enter__()
    leaving = in_thread(injection.__exit__, None, None, None)
    leaving.join(30)
    assert not leaving.is_alive()
    assert list(tmp_path.iterdir()) == [] and injection.reads == 0


def test_leaving_while_a_reader_takes_nothing_does_not_wait_for_it(tmp_path):
    big = (InjectedVar("BIG", "x" * 1_000_000, "dev/BIG", "BIG"),)  # more than a pipe holds
    injection = FifoInjection(big, parent=str(tmp_path))
    path = Path(injection.__enter__()["VANTA_SECRETS_FILE"])
    with open(path, "rb") as reader:
        assert reader.read(10) == b'BIG="xxxxx'
        leaving = in_thread(injection.__exit__, None, None, None)
        leaving.join(30)
        assert not leaving.is_alive()
    assert list(tmp_path.iterdir()) == []


# -- through the CLI ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory, age_key, age_key_file) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("fifo")
    with serve_secrets(root, age_key, age_key_file, dev=SECRETS) as running:
        yield running


READ_TWICE = """
import json, os, stat, sys
from dotenv import dotenv_values
path = os.environ["VANTA_SECRETS_FILE"]
mode = os.stat(path).st_mode
first = dotenv_values(path, interpolate=False)
try:
    second = open(path).read()  # dotenv_values would say {} for a missing file
except FileNotFoundError:
    second = "gone"
json.dump({"first": first, "second": second, "fifo": stat.S_ISFIFO(mode),
           "mode": stat.S_IMODE(mode), "path": path}, sys.stdout)
"""


def test_a_fifo_read_twice_with_max_reads_1_gives_the_secrets_once(broker, tmp_path):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url, XDG_RUNTIME_DIR=str(tmp_path))
    args = rws("dev", "*", python(READ_TWICE), token=reader, inject_as="fifo", masking=False)
    args[args.index("--") : args.index("--")] = ["--max-reads", "1"]
    proc = run(args, env)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["first"] == SECRETS and seen["second"] == "gone"
    assert seen["fifo"] and seen["mode"] == 0o600
    assert Path(seen["path"]).parent.parent == tmp_path
    assert list(tmp_path.iterdir()) == []
    assert "through a named pipe at $VANTA_SECRETS_FILE (1 read)" in proc.stderr


def test_max_reads_lets_that_many_readers_in(broker, tmp_path):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url, XDG_RUNTIME_DIR=str(tmp_path))
    code = (
        "import os, subprocess\n"
        "path = os.environ['VANTA_SECRETS_FILE']\n"
        "for _ in range(3):\n"
        "    print(subprocess.run(['cat', path], capture_output=True).returncode)\n"
    )
    args = rws("dev", "*", python(code), token=reader, inject_as="fifo")
    args[args.index("--") : args.index("--")] = ["--max-reads", "2"]
    proc = run(args, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "0\n0\n1\n"  # cat: the third finds no such file


def test_an_unread_fifo_does_not_keep_the_cli(broker, tmp_path):
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url, XDG_RUNTIME_DIR=str(tmp_path))
    proc = run(rws("dev", "*", python("raise SystemExit(4)"), token=reader, inject_as="fifo"), env)
    assert proc.returncode == 4, proc.stderr
    assert list(tmp_path.iterdir()) == []


# -- nothing left behind, however it ends ---------------------------------------------------


def files_holding_secrets(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(value.encode() in data for value in SECRETS.values()):
                found.append(path)
    return found


ENDINGS = {
    # the command reads what it was given (env: prints nothing), then ends as told
    "exit": "sys.exit(0)",
    "crash": "os.kill(os.getpid(), signal.SIGSEGV)",
    "sigterm": "open({ready!r}, 'w').close()\nwhile True: signal.pause()",
}
STATUS = {"exit": 0, "crash": 128 + signal.SIGSEGV, "sigterm": 128 + signal.SIGTERM}


@pytest.mark.parametrize("inject_as", ["env", "file", "fifo"])
@pytest.mark.parametrize("ending", ["exit", "crash", "sigterm"])
def test_no_secret_is_left_in_the_temp_dir(broker, tmp_path, inject_as, ending):
    temp, ready = tmp_path / "temp", tmp_path / "ready"
    temp.mkdir()
    reader = broker.token(environment="dev", permissions=READER)
    # both places a secrets file may go: the runtime dir, else TMPDIR
    env = cli_env(VANTA_BROKER_URL=broker.url, XDG_RUNTIME_DIR=str(temp), TMPDIR=str(temp))
    code = (
        "import os, signal, sys\n"
        "path = os.environ.get('VANTA_SECRETS_FILE')\n"
        "if path: open(path).read()\n" + ENDINGS[ending].format(ready=str(ready))
    )
    cli_proc = start(rws("dev", "*", python(code), token=reader, inject_as=inject_as), env)
    try:
        if ending == "sigterm":
            wait_for(ready.exists, "the command to start")
            cli_proc.send_signal(signal.SIGTERM)
        _, stderr = cli_proc.communicate(timeout=30)
    finally:
        if cli_proc.poll() is None:
            cli_proc.kill()
    assert cli_proc.returncode == STATUS[ending], stderr
    assert list(temp.iterdir()) == []
    assert files_holding_secrets(tmp_path) == []


def test_a_secret_file_is_still_there_while_the_command_runs(broker, tmp_path):
    """The check above would pass if nothing were ever written: see it written first."""
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url, XDG_RUNTIME_DIR=str(tmp_path))
    code = (
        "import os, subprocess, sys; sys.exit(subprocess.run(['ls', '-R', sys.argv[1]]).returncode)"
    )
    proc = run(rws("dev", "*", [*python(code), str(tmp_path)], token=reader, inject_as="file"), env)
    assert proc.returncode == 0, proc.stderr
    assert "secrets.env" in proc.stdout
    assert subprocess.run(["ls", "-A", str(tmp_path)], capture_output=True, text=True).stdout == ""
