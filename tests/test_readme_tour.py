"""The README runs as written.

Every ```sh block of README.md is run, in order, in one shell, in a copy of this checkout
(so the tour's commits and rollbacks never touch it), against a broker started the way
`make run` starts it. Each command's exit status is checked (non-zero exactly when the
output shown after it has an `error:` line), and so is the shape of that output: the
`# ...` lines after a command must appear in its output, in order, where `...` (or `…`)
stands for any text, `<name>` for one word, and a run of digits for any number. A block
that cannot run here (it needs AWS, a remote, a second broker) is preceded by an HTML
comment, invisible to readers, that says why: `<!-- readme-tour: skip: REASON -->`.

The other tests here hold the README to what it promises around the tour: the
prerequisites name every program the tour runs, the package is installed from the
repository (it is not on PyPI), and `make run` checks its port before printing a token.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from support.brokers import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV = Path(sys.prefix)
SKIP = re.compile(r"<!--\s*readme-tour:\s*skip:\s*(.+?)\s*-->")
FENCE = re.compile(r"^```(\S*)\s*$")
MAKE_RUN = "make run"
COMMAND_TIMEOUT = 180  # seconds one command may take on a loaded 2-core machine
BROKER_START_TIMEOUT = 180
# What every POSIX system has, and the shell's own words: the prerequisites need not name them.
BASE_PROGRAMS = frozenset(
    "cat cd echo env export find grep mkdir printf sh sort source test true umask".split()
)
OURS = frozenset({"vanta-cli", "vanta-broker"})


# -- reading the README ------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    line: int  # the line of its opening fence
    language: str
    text: str
    skip: str | None  # why it is not run, if it is not


@dataclass(frozen=True)
class Command:
    text: str  # as written, continuation lines and here-documents included
    line: int
    expected: tuple[str, ...]  # the `# ...` lines shown after it

    @property
    def should_fail(self) -> bool:
        return any(line.lstrip().startswith("error:") for line in self.expected)

    def __str__(self) -> str:
        first = self.text.splitlines()[0]
        return f"README.md line {self.line}: {first}"


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, with the skip comment on the last non-blank line before it."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start = i
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        body = []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        skip = SKIP.search(previous)
        blocks.append(Block(start + 1, fence.group(1), "\n".join(body), skip and skip.group(1)))
        i += 1
    return blocks


def block_commands(block: Block) -> list[Command]:
    """The commands of a shell block, each with the output lines shown after it."""
    commands: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        number = block.line + 1 + i
        i += 1
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            assert commands, f"README.md line {number}: output shown before any command"
            last = commands[-1]
            shown = re.sub(r"^\s*# ?", "", line)
            commands[-1] = Command(last.text, last.line, (*last.expected, shown))
            continue
        text = [line]
        while text[-1].endswith("\\") and i < len(lines):
            text.append(lines[i])
            i += 1
        heredoc = re.search(r"<<-?\s*'?([A-Za-z_]+)'?", "\n".join(text))
        if heredoc:
            while i < len(lines):
                text.append(lines[i])
                i += 1
                if text[-1].strip() == heredoc.group(1):
                    break
        commands.append(Command("\n".join(text), number, ()))
    return commands


def tour_commands(text: str) -> list[Command]:
    return [
        command
        for block in readme_blocks(text)
        if block.language in ("sh", "bash") and block.skip is None
        for command in block_commands(block)
    ]


def shape(expected: str) -> re.Pattern[str]:
    """The output line `expected` stands for: `...`/`…` any text, `<name>` one word, digits
    any number; spaces are any run of spaces."""
    parts = []
    token = re.compile(r"(\.\.\.|…|<[a-z][a-z0-9_-]*>|\d+|\s+)")
    for piece in token.split(" ".join(expected.split())):
        if not piece:
            continue
        if piece in ("...", "…"):
            parts.append(".*")
        elif re.fullmatch(r"<[a-z][a-z0-9_-]*>", piece):
            parts.append(r"\S+")
        elif piece.isdigit():
            parts.append(r"\d+")
        elif piece.isspace():
            parts.append(r"\s+")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def missing_output(expected: tuple[str, ...], output: str) -> str | None:
    """The first expected line not found, in order, in `output` (None: all were)."""
    lines = [" ".join(line.split()) for line in output.splitlines()]
    at = 0
    for wanted in expected:
        pattern = shape(wanted)
        while at < len(lines) and not pattern.fullmatch(lines[at]):
            at += 1
        if at == len(lines):
            return wanted
        at += 1
    return None


# -- a copy of the checkout, a broker, a shell -------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True, timeout=120
    ).stdout


def copy_of_checkout(dest: Path) -> Path:
    """A clone of this checkout on branch main, with its uncommitted changes committed, no
    remote (nothing the tour does can reach this checkout), and its .venv."""
    try:
        git(ROOT, "rev-parse", "HEAD")
    except subprocess.CalledProcessError:
        pytest.skip("the README tour runs in a clone of a Git checkout")
    git(dest.parent, "clone", "--quiet", "--shared", str(ROOT), dest.name)
    changed = git(ROOT, "diff", "--name-only", "-z", "HEAD").split("\0")
    changed += git(ROOT, "ls-files", "-z", "--others", "--exclude-standard").split("\0")
    for name in filter(None, changed):
        source, target = ROOT / name, dest / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.is_file():
            target.unlink()
    if git(dest, "status", "--porcelain"):
        git(dest, "add", "-A")
        git(dest, "commit", "-q", "-m", "the checkout's uncommitted changes")
    git(dest, "checkout", "-q", "-B", "main")
    git(dest, "remote", "remove", "origin")
    (dest / ".venv").symlink_to(VENV)
    return dest


def tour_environment(home: Path) -> dict[str, str]:
    """A newcomer's shell: their own HOME and Git identity, and no vanta-cli on PATH until
    the tour activates .venv."""
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Ada Newcomer\n\temail = ada@example.com\n")
    path = [
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and not (Path(entry) / "vanta-cli").exists()
    ]
    return {
        "PATH": os.pathsep.join(path),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "GIT_CONFIG_NOSYSTEM": "1",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }


@dataclass
class MakeRun:
    process: subprocess.Popen[bytes]
    repo: Path
    log: Path
    url: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_make_run(repo: Path, env: dict[str, str], port: int, log: Path) -> MakeRun:
    """`make run PORT=...` in `repo` (its .venv counts as built), until the broker answers."""
    process = subprocess.Popen(
        ["make", "--no-print-directory", "-o", ".venv/.base", "run", f"PORT={port}"],
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    running = MakeRun(process, repo, log, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + BROKER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"make run exited {process.returncode}:\n{running.output()}")
        try:
            if requests.get(f"{running.url}/healthz", timeout=2).status_code == 200:
                return running
        except requests.RequestException:
            pass
        time.sleep(0.2)  # polling the broker's start-up
    stop_make_run(running)
    raise AssertionError(
        f"make run did not answer in {BROKER_START_TIMEOUT} s:\n{running.output()}"
    )


def stop_make_run(running: MakeRun) -> None:
    try:
        os.killpg(running.process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        running.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(running.process.pid, signal.SIGKILL)
        running.process.wait()


@dataclass(frozen=True)
class Ran:
    command: Command
    status: int
    output: str


def run_in_one_shell(
    commands: list[Command], repo: Path, env: dict[str, str], out: Path
) -> list[Ran]:
    """Run `commands` in order in one bash (so exports, `cd` and variables carry over), each
    one's output and exit status to files; stop at a command that takes too long."""
    out.mkdir()
    script = ["set -o pipefail", f"cd {shlex.quote(str(repo))}"]
    for n, command in enumerate(commands):
        script.append(
            f"{{ {command.text}\n}} >{out}/{n}.out 2>&1 </dev/null; echo $? >{out}/{n}.rc"
        )
    (out / "tour.sh").write_text("\n".join(script) + "\n")
    shell = subprocess.Popen(
        ["bash", str(out / "tour.sh")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(out / "shell.err").open("wb"),
        start_new_session=True,
    )
    try:
        for n, command in enumerate(commands):
            deadline = time.monotonic() + COMMAND_TIMEOUT
            while not (out / f"{n}.rc").exists() or not (out / f"{n}.rc").read_text():
                if shell.poll() is not None and not (out / f"{n}.rc").exists():
                    err = (out / "shell.err").read_text()
                    raise AssertionError(f"{command}: the shell ended before it ({err})")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{command}: still running after {COMMAND_TIMEOUT} s")
                time.sleep(0.05)  # polling the shell's progress file
        shell.wait(timeout=COMMAND_TIMEOUT)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
    return [
        Ran(command, int((out / f"{n}.rc").read_text()), (out / f"{n}.out").read_text("utf-8"))
        for n, command in enumerate(commands)
    ]


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Ran], MakeRun]]:
    if not (VENV / "bin" / "vanta-cli").exists():
        pytest.skip("the tour needs the package installed in the running virtual environment")
    base = tmp_path_factory.mktemp("tour")
    repo = copy_of_checkout(base / "vanta-vault")
    env = tour_environment(base / "home")
    commands = tour_commands((repo / "README.md").read_text())
    assert commands and commands[0].text == MAKE_RUN, "the tour starts with `make run`"
    assert all(c.text != MAKE_RUN for c in commands[1:])
    running = start_make_run(repo, env, free_port(), base / "make-run.log")
    try:
        yield run_in_one_shell(commands[1:], repo, env, base / "out"), running
    finally:
        stop_make_run(running)


# -- the tour ----------------------------------------------------------------------------------


def test_every_readme_command_runs_as_written_with_the_output_shown(tour):
    ran, _ = tour
    problems = []
    for result in ran:
        command, output = result.command, result.output
        if "Traceback (most recent call last)" in output:
            problems.append(f"{command}: printed a traceback:\n{output}")
            continue
        if command.should_fail and result.status == 0:
            problems.append(f"{command}: exit 0, though the README shows an error:\n{output}")
            continue
        if not command.should_fail and result.status != 0:
            problems.append(f"{command}: exit {result.status}:\n{output}")
            continue
        missing = missing_output(command.expected, output)
        if missing is not None:
            problems.append(f"{command}: no output line like `{missing}` in:\n{output}")
    assert not problems, "\n\n".join(problems)


def test_make_run_prints_the_exports_it_writes_and_no_token_elsewhere(tour):
    ran, running = tour
    banner = running.output()
    exports = re.findall(r"^  (export \S+=\S+)$", banner, re.M)
    assert len(exports) == 2 and exports[1] == f"export VANTA_BROKER_URL={running.url}"
    written = running.repo / "state"
    assert (written / "dev.env").read_text().splitlines() == exports
    assert (written / "dev.env").stat().st_mode & 0o777 == 0o600
    token = exports[0].partition("=")[2]
    signing_key = (written / "dev-signing-key").read_text().strip()
    for result in ran:  # no command of the tour shows the admin token or the signing key
        assert token not in result.output, result.command
        assert signing_key not in result.output, result.command


def test_the_tour_runs_a_good_part_of_the_readme():
    """A guard against a README whose blocks are all skipped or not `sh`."""
    blocks = readme_blocks(README.read_text())
    shell = [b for b in blocks if b.language in ("sh", "bash")]
    run = [b for b in shell if b.skip is None]
    assert len(run) >= 25 and len(run) >= 3 * (len(shell) - len(run))
    assert len(tour_commands(README.read_text())) >= 50


# -- what the README promises around the tour --------------------------------------------------


def programs_run(command: str) -> set[str]:
    """The first word of each simple command in `command` (pipelines, $(...), &&, ;)."""
    found = set()
    command = re.sub(r"\s#.*$", "", command, flags=re.M)  # comments
    command = re.sub(r"'[^']*'", "''", command)  # single-quoted text is not run here
    for segment in re.split(r"\|\|?|&&|;|\$\(|\(|\n", command):
        words = segment.strip().split()
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
            words = words[1:]  # VAR=value before a command
        if words and re.fullmatch(r"[a-z][a-z0-9.-]*", words[0]):
            found.add(words[0])
    return found


def prerequisites(text: str) -> str:
    paragraph = re.search(r"^You need .*?(?=\n\n)", text, flags=re.M | re.S)
    assert paragraph, "README: no `You need ...` paragraph"
    return " ".join(paragraph.group(0).split())


def test_the_prerequisites_name_every_program_the_tour_runs():
    text = README.read_text()
    needed = prerequisites(text).lower()
    programs = set().union(*(programs_run(c.text) for c in tour_commands(text)))
    assert {"curl", "jq", "git", "make"} <= programs
    unnamed = sorted(p for p in programs - BASE_PROGRAMS - OURS if p not in needed)
    assert not unnamed, f"the README's prerequisites do not name {unnamed}"
    assert "node.js 18" in needed and "npm" in needed  # the Node.js SDK section builds with npm


def test_the_readme_installs_from_the_repository_not_from_pypi():
    text = README.read_text()
    # `vanta-vault[cli] @ git+https://...` names the repository; a bare name would be PyPI's
    bare = re.findall(
        r"pip install\s+[\"']?vanta-vault(?:\[[^\]]*\])?[\"']?(?=[\s`]|$)(?!\s*@)", text
    )
    assert not bare, "vanta-vault is not on PyPI: install it from the repository"
    assert "git+https://github.com/<org>/vanta-vault.git" in text


def test_the_readme_says_how_long_after_exp_a_token_still_reads():
    text = " ".join(README.read_text().split())
    assert re.search(r"read is accepted until 30 s after `exp`", text)


def test_each_example_file_the_tour_uses_is_shipped():
    used = set(re.findall(r"examples/[\w./-]+", README.read_text()))
    assert {"examples/app.env", "examples/fallbacks.env", "examples/app.py"} <= used
    for name in used:
        assert (ROOT / name.rstrip(".")).exists(), name


def test_make_run_refuses_a_taken_port_before_printing_a_token(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for how in ([f"PORT={port}"], []):
            env = {**os.environ, "VANTA_PORT": str(port)} if not how else dict(os.environ)
            proc = subprocess.run(
                ["make", "--no-print-directory", "-o", ".venv/.base", "run", *how],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode != 0 and proc.stdout == ""  # no banner, no token
            errors = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
            assert errors == [
                f"error: cannot listen on 127.0.0.1:{port}: Address already in use (another "
                f"broker? choose another port: make run PORT={port + 100})"
            ]
