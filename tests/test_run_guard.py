"""run-with-secrets keeps its own memory to itself and leaves nothing behind (SPEC §8): the
command (or any process of the same user) cannot read the CLI's environment, where
VANTA_TOKEN is; a `kill -9` of the CLI takes the command with it and removes the secrets
file. Real CLI processes, a real broker, a real unprivileged user."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from support.cli import ISSUER, READER, cli_env, python, rws, start, wait_for
from support.cli import broker as broker  # noqa: F401 (the module-scoped broker fixture)

from cli.run.guard import LeftoverGuard, die_with_parent

DROP_TO_NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--"]

# A shell command (nobody may not reach the test's Python): prints how many VANTA_TOKEN
# entries the parent's environ holds, or "denied" when it cannot be read.
READ_PARENT_ENVIRON = [
    "sh",
    "-c",
    'if text=$(tr "\\0" "\\n" < /proc/$PPID/environ); then echo "$text" | grep -c "^VANTA_TOKEN="; '
    "else echo denied; fi",
]

needs_nobody = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run as nobody",
)


@needs_nobody
def test_a_same_user_process_reads_a_parents_environ_when_nothing_stops_it():
    """The control: on this kernel a parent's environ is readable by a child of the same
    unprivileged user, so the next test's refusal is the CLI's doing."""
    parent = ["sh", "-c", '"$@"; exit $?', "parent"]  # a parent that waits for its child
    proc = subprocess.run(
        [*DROP_TO_NOBODY, *parent, *READ_PARENT_ENVIRON],
        env={**cli_env(), "VANTA_TOKEN": "issuer-token-value"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout) == (0, "1\n"), proc.stderr


@needs_nobody
def test_the_command_cannot_read_the_clis_environment(broker):
    """Both run as nobody: the CLI with VANTA_TOKEN (an issuer) in its environment, the
    command trying to read it from /proc/$PPID/environ."""
    issuer = broker.token(environment="dev", permissions=ISSUER)
    env = cli_env(VANTA_BROKER_URL=broker.url, VANTA_TOKEN=issuer, HOME="/nonexistent")
    args = rws("dev", "PORT", READ_PARENT_ENVIRON, masking=False)
    proc = subprocess.run(
        [*DROP_TO_NOBODY, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode, proc.stdout) == (0, "denied\n"), proc.stderr
    assert "Permission denied" in proc.stderr  # the shell says why it could not open it
    assert issuer not in proc.stdout + proc.stderr


def alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


WAIT_FOREVER = """
import os, signal
ready = {ready!r}
with open(ready + ".tmp", "w") as f:
    f.write(f"{{os.getpid()}} {{os.environ.get('VANTA_SECRETS_FILE', '')}}")
os.rename(ready + ".tmp", ready)
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
while True:
    signal.pause()
"""


@pytest.mark.parametrize("inject_as", ["env", "file", "fifo"])
def test_kill_9_of_the_cli_kills_the_command_and_removes_the_secrets_file(
    broker, tmp_path, inject_as
):
    ready = tmp_path / "ready"
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    reader = broker.token(environment="dev", permissions=READER)
    env = cli_env(VANTA_BROKER_URL=broker.url, XDG_RUNTIME_DIR=str(runtime))
    command = python(WAIT_FOREVER.format(ready=str(ready)))
    cli_proc = start(rws("dev", "*", command, token=reader, inject_as=inject_as), env)
    try:
        wait_for(ready.exists, "the command to start")
        pid_text, _, secrets_path = ready.read_text().partition(" ")
        pid = int(pid_text)
        assert alive(pid)
        if inject_as != "env":
            assert Path(secrets_path).parent.parent == runtime
            assert os.path.lexists(secrets_path)
        cli_proc.kill()  # SIGKILL: nothing of the CLI runs any more
        cli_proc.wait(timeout=30)
        wait_for(lambda: not alive(pid), "the command to die with the CLI")
        wait_for(lambda: list(runtime.iterdir()) == [], "the secrets directory to go")
    finally:
        if cli_proc.poll() is None:
            cli_proc.kill()
        if ready.exists() and alive(int(ready.read_text().split()[0])):
            os.kill(int(ready.read_text().split()[0]), signal.SIGKILL)


def test_a_child_whose_parent_is_already_gone_kills_itself():
    """die_with_parent's race: if the parent died before the setting took hold, the child
    (already an orphan, so not the parent's child any more) must not run the command."""
    tied = subprocess.Popen(["true"], preexec_fn=die_with_parent(os.getpid()))
    assert tied.wait(timeout=30) == 0
    not_my_parent = subprocess.Popen(["true"], preexec_fn=die_with_parent(os.getppid()))
    assert not_my_parent.wait(timeout=30) == -signal.SIGKILL


def test_the_guard_removes_the_directory_once_released(tmp_path):
    directory = tmp_path / "private"
    directory.mkdir()
    (directory / "secrets.env").write_text("A=1\n")
    guard = LeftoverGuard(directory)
    assert directory.exists()  # it waits for end-of-file
    guard.release()
    assert guard.process.returncode == 0 and not directory.exists()
