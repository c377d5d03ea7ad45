"""run-with-secrets masking (SPEC §14): the Masker itself, then real child processes whose
stdout and stderr pass through the CLI, against a real broker."""

from __future__ import annotations

import os
import pty
import random
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.cli import READER, Broker, cli_env, python, rws, serve_secrets, start, wait_for

from cli.run.injected import InjectedVar, variables_for
from cli.run.mask import MARKER, Masker, mask_plan

M = MARKER.decode()
TOKEN = "tok-3f9a1c2e7b5d"
PEM = (
    "-----BEGIN TEST KEY-----\nMIIBVwIBADANBgkqhkiG\n9w0BAQEFAASCAUEwggE9\n-----END TEST KEY-----\n"
)
MASKED = {"TOKEN": TOKEN, "PEM": PEM, "PIN": "123", "PORT": 8080, "DEBUG": True}


# -- the Masker (pure) --------------------------------------------------------------------------


def reference(data: bytes, secrets: list[bytes]) -> bytes:
    """Masking done the slow, obvious way on the whole stream: every occurrence found by
    trying each position, one marker per run of overlapping occurrences."""
    spans = sorted(
        (i, i + len(s)) for s in secrets for i in range(len(data)) if data.startswith(s, i)
    )
    runs: list[list[int]] = []
    for a, b in spans:
        if runs and a < runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], b)
        else:
            runs.append([a, b])
    out, pos = bytearray(), 0
    for a, b in runs:
        out += data[pos:a] + MARKER
        pos = b
    return bytes(out + data[pos:])


def mask_in_pieces(secrets: list[bytes], pieces: list[bytes]) -> bytes:
    masker = Masker(secrets)
    return b"".join(masker.feed(piece) for piece in pieces) + masker.finish()


def test_a_value_is_concealed_whole_inside_a_line_and_each_time():
    out = mask_in_pieces([b"hunter22"], [b"hunter22\nuser=bob pass=hunter22; again hunter22\n"])
    assert out == b"%s\nuser=bob pass=%s; again %s\n" % (MARKER, MARKER, MARKER)


def test_a_value_split_at_every_point_is_concealed():
    text = b"pass=hunter22!"
    for cut in range(len(text) + 1):
        assert mask_in_pieces([b"hunter22"], [text[:cut], text[cut:]]) == b"pass=%s!" % MARKER


def test_only_what_may_still_begin_a_value_is_held_back():
    masker = Masker([b"hunter22"])
    assert masker.feed(b"log: hun") == b"log: "  # "hun" may become the secret
    assert masker.held == 3
    assert masker.feed(b"gry\n") == b"hungry\n"  # it did not
    assert masker.held == 0
    assert masker.feed(b"xhunter2") == b"x"
    assert masker.finish() == b"hunter2"  # the stream ended: no secret completed


def test_overlapping_and_adjacent_values_leave_nothing_of_either():
    assert mask_in_pieces([b"abcd", b"cdef"], [b"[abcdef]"]) == b"[%s]" % MARKER
    assert mask_in_pieces([b"abcd", b"wxyz"], [b"abcdwxyz"]) == MARKER * 2
    assert mask_in_pieces([b"abcd", b"abcdef"], [b"abcd", b"ef"]) == MARKER


def test_binary_output_without_values_passes_unchanged():
    data = random.Random(7).randbytes(300_000)
    secrets = [b"\x00\x01\x02\x03\x04", b"hunter22"]
    assert all(s not in data for s in secrets)
    pieces = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    assert mask_in_pieces(secrets, pieces) == data


def test_nothing_to_conceal_is_a_pass_through():
    masker = Masker([])
    assert masker.feed(b"abc") == b"abc" and masker.held == 0


pieces_of = st.lists(st.integers(min_value=1, max_value=7), max_size=40)


@given(
    secrets=st.lists(st.binary(min_size=1, max_size=9), min_size=1, max_size=3),
    data=st.lists(st.sampled_from([b"a", b"b", b"ab", b"ba", b"<x>", b"\n"]), max_size=40).map(
        b"".join
    ),
    sizes=pieces_of,
)
def test_masking_does_not_depend_on_how_the_output_was_cut(secrets, data, sizes):
    data = data + b"".join(secrets) + data  # every secret occurs at least once
    pieces, i = [], 0
    for size in sizes:
        pieces.append(data[i : i + size])
        i += size
    pieces.append(data[i:])
    whole = mask_in_pieces(secrets, [data])
    assert mask_in_pieces(secrets, pieces) == whole
    assert whole == reference(data, secrets)


def test_plan_masks_text_secrets_and_names_the_short_ones():
    variables = variables_for("dev", {"TOKEN": TOKEN, "PIN": "123", "PORT": 8080, "ON": True})
    plain = InjectedVar("LOG_LEVEL", "debug", "app.env line 1", "", secret=False)
    plan = mask_plan([*variables, plain])
    assert plan.secrets == (TOKEN.encode(),)
    assert [var.name for var in plan.too_short] == ["PIN"]


def test_plan_masks_a_multi_line_value_whole_and_line_by_line():
    plan = mask_plan(variables_for("dev", {"PEM": PEM}))
    assert plan.secrets[0] == PEM.encode()
    assert set(plan.secrets[1:]) == {line.encode() for line in PEM.splitlines()}


# -- real child processes through the CLI -------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory, age_key, age_key_file) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("masking")
    with serve_secrets(root, age_key, age_key_file, mask=MASKED) as running:
        yield running


def run_masked(broker: Broker, code: str, *, masking: bool = True) -> subprocess.CompletedProcess:
    reader = broker.token(environment="mask", permissions=READER)
    args = rws("mask", "*", python(code), token=reader, masking=masking)
    env = cli_env(VANTA_BROKER_URL=broker.url)
    return subprocess.run(args, env=env, capture_output=True, timeout=60)


def child_lines(stderr: bytes) -> bytes:
    """stderr less the CLI's own `vanta: ...` lines."""
    return b"".join(
        line for line in stderr.splitlines(keepends=True) if not line.startswith(b"vanta:")
    )


PRINT_THREE_WAYS = """
import os, sys, time
value = os.environ["TOKEN"]
half = len(value) // 2
for stream in (sys.stdout, sys.stderr):
    stream.write(value + "\\n"); stream.flush()                        # whole
    stream.write("user=bob token=" + value + " ok\\n"); stream.flush()  # inside a longer line
    stream.write("split:" + value[:half]); stream.flush()              # in two writes...
    time.sleep(0.3)                                                     # ...a pause apart
    stream.write(value[half:] + ":end\\n"); stream.flush()
"""


def test_values_are_concealed_on_stdout_and_stderr_whole_in_a_line_and_split(broker):
    proc = run_masked(broker, PRINT_THREE_WAYS)
    assert proc.returncode == 0, proc.stderr
    expected = f"{M}\nuser=bob token={M} ok\nsplit:{M}:end\n".encode()
    assert proc.stdout == expected
    assert child_lines(proc.stderr) == expected
    assert TOKEN[: len(TOKEN) // 2].encode() not in proc.stdout + proc.stderr


def test_no_masking_prints_the_value(broker):
    proc = run_masked(broker, PRINT_THREE_WAYS, masking=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{TOKEN}\nuser=bob token={TOKEN} ok\nsplit:{TOKEN}:end\n".encode()
    assert MARKER not in proc.stdout + proc.stderr


def test_a_multi_line_value_is_concealed_whole_and_line_by_line(broker):
    code = (
        "import os, sys\n"
        "pem = os.environ['PEM']\n"
        "sys.stdout.write('key:\\n' + pem)\n"
        "for line in pem.splitlines():\n"
        "    sys.stdout.write('> ' + line + '\\r\\n')\n"
    )
    proc = run_masked(broker, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"key:\n{M}".encode() + f"> {M}\r\n".encode() * 4


def test_short_values_are_shown_with_a_warning_numbers_and_booleans_silently(broker):
    code = "import os; print(os.environ['PIN'], os.environ['PORT'], os.environ['DEBUG'])"
    proc = run_masked(broker, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"123 8080 true\n"
    warnings = [line for line in proc.stderr.decode().splitlines() if "warning" in line]
    assert warnings == [
        "vanta: warning: PIN (mask/PIN) is shorter than 4 characters and is not masked "
        "in the output"
    ]


def test_binary_output_passes_unharmed_around_a_concealed_value(broker):
    code = (
        "import os, random, sys\n"
        "noise = random.Random(11).randbytes(1 << 20)\n"
        "sys.stdout.buffer.write(noise + os.environ['TOKEN'].encode() + noise[::-1])\n"
    )
    proc = run_masked(broker, code)
    assert proc.returncode == 0, proc.stderr
    noise = random.Random(11).randbytes(1 << 20)
    assert proc.stdout == noise + MARKER + noise[::-1]


def test_large_output_with_values_across_every_pipe_read(broker):
    """Megabytes in one write: the pipe hands them over in pieces cut anywhere."""
    code = (
        "import os, sys\n"
        "v = os.environ['TOKEN']\n"
        "sys.stdout.write(''.join(f'{i:07d} ' + 'x' * (i % 97) + v + '\\n' for i in range(60000)))"
    )
    proc = run_masked(broker, code)
    assert proc.returncode == 0, proc.stderr
    expected = "".join(f"{i:07d} " + "x" * (i % 97) + M + "\n" for i in range(60000))
    assert proc.stdout == expected.encode()


def test_a_reader_that_goes_away_gives_the_command_sigpipe(broker):
    reader = broker.token(environment="mask", permissions=READER)
    code = (
        "import itertools, signal\n"
        "signal.signal(signal.SIGPIPE, signal.SIG_DFL)\n"  # as a C program has it
        "for i in itertools.count(): print('line', i, flush=True)\n"
    )
    args = rws("mask", "*", python(code), token=reader)
    cli_proc = subprocess.Popen(
        args, env=cli_env(VANTA_BROKER_URL=broker.url), stdout=subprocess.PIPE
    )
    try:
        assert cli_proc.stdout.readline() == b"line 0\n"
        cli_proc.stdout.close()  # like `| head -1`
        assert cli_proc.wait(timeout=30) == 128 + signal.SIGPIPE
    finally:
        if cli_proc.poll() is None:
            cli_proc.kill()


def read_pty(master: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            return out
        if not chunk:
            return out
        out += chunk


@pytest.mark.parametrize("masking", [True, False])
def test_no_masking_hands_the_command_the_terminal(broker, masking):
    reader = broker.token(environment="mask", permissions=READER)
    code = "import os; print(os.isatty(1), os.isatty(2), os.environ['TOKEN'])"
    argv = rws("mask", "*", python(code), token=reader, masking=masking)
    env = cli_env(VANTA_BROKER_URL=broker.url)
    pid, master = pty.fork()
    if pid == 0:
        os.execve(argv[0], argv, env)
    try:
        output = read_pty(master)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0, output
    line = output.splitlines()[-1]
    if masking:
        assert line == f"False False {M}".encode()
    else:
        assert line == f"True True {TOKEN}".encode()


LEAVES_A_WRITER = """
import os, subprocess, sys
grandchild = (
    "import os, signal, sys, time\\n"
    "sys.stdout.write('late ' + os.environ['TOKEN'] + '\\\\n'); sys.stdout.flush()\\n"
    "open({go!r} + '.pid', 'w').write(str(os.getpid()))\\n"
    "while not os.path.exists({go!r}): time.sleep(0.01)\\n"
    "sys.stdout.write('bye\\\\n')\\n"
)
subprocess.Popen([sys.executable, "-c", grandchild])
open({go!r} + '.child', 'w').write(str(os.getpid()))
sys.exit(3)
"""


def wait_for_text(path: Path) -> str:
    """What a child wrote to `path` (it may exist a moment before its text is in)."""
    wait_for(lambda: path.exists() and path.read_text(), f"{path.name} to be written")
    return path.read_text()


def test_output_of_what_the_command_leaves_running_is_still_masked(broker, tmp_path):
    go = tmp_path / "go"
    reader = broker.token(environment="mask", permissions=READER)
    code = LEAVES_A_WRITER.format(go=str(go))
    cli_proc = start(
        rws("mask", "*", python(code), token=reader), cli_env(VANTA_BROKER_URL=broker.url)
    )
    try:
        wait_for_text(Path(f"{go}.pid"))
        assert cli_proc.poll() is None  # its output pipe is still open: the CLI waits
        go.touch()
        stdout, stderr = cli_proc.communicate(timeout=30)
    finally:
        if cli_proc.poll() is None:
            cli_proc.kill()
    assert cli_proc.returncode == 3, stderr
    assert stdout == f"late {M}\nbye\n"


def test_a_signal_ends_the_wait_for_what_the_command_left_running(broker, tmp_path):
    go = tmp_path / "never"
    reader = broker.token(environment="mask", permissions=READER)
    code = LEAVES_A_WRITER.format(go=str(go))
    cli_proc = start(
        rws("mask", "*", python(code), token=reader), cli_env(VANTA_BROKER_URL=broker.url)
    )
    grandchild = None
    try:
        grandchild = int(wait_for_text(Path(f"{go}.pid")))
        child = Path(f"/proc/{wait_for_text(Path(f'{go}.child'))}")
        wait_for(lambda: not child.exists(), "the command to exit and be reaped")
        cli_proc.send_signal(signal.SIGTERM)
        stdout, _ = cli_proc.communicate(timeout=30)
    finally:
        if cli_proc.poll() is None:
            cli_proc.kill()
        if grandchild is not None:
            os.kill(grandchild, signal.SIGKILL)
    assert cli_proc.returncode == 3  # the command's own status: it had exited
    assert stdout == f"late {M}\n"


RELAY_MASKED = """
import os, sys
from cli.run.pump import MaskedIO
from cli.run.process import {relay}
with {relay}() as relay:
    sys.exit(relay.run(sys.argv[1:], os.environ, MaskedIO([b"hunter22"])))
"""


@pytest.mark.parametrize("relay", ["HandlerRelay", "SigwaitRelay"])
def test_each_relay_passes_masked_output_on_and_returns_the_status(relay):
    child = python("import sys; print('pw=hunter22'); sys.stderr.write('hunter22!'); sys.exit(5)")
    proc = subprocess.run(
        [*python(RELAY_MASKED.format(relay=relay)), *child],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 5
    assert (proc.stdout, proc.stderr) == (b"pw=%s\n" % MARKER, MARKER + b"!")


RELAY_CANNOT_START = """
import os, sys
from cli.run.pump import MaskedIO
from cli.run.process import {relay}
before = sorted(os.listdir("/proc/self/fd"))
try:
    with {relay}() as relay:
        relay.run([sys.argv[1]], os.environ, MaskedIO([b"hunter22"]))
except FileNotFoundError:
    print(sorted(os.listdir("/proc/self/fd")) == before)
"""


@pytest.mark.parametrize("relay", ["HandlerRelay", "SigwaitRelay"])
def test_masked_io_leaves_no_pipe_open_when_the_command_cannot_start(tmp_path, relay):
    # In a process of its own: in the test process other tests' threads open pipes too.
    proc = subprocess.run(
        [*python(RELAY_CANNOT_START.format(relay=relay)), str(tmp_path / "missing")],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        timeout=60,
    )
    assert (proc.stdout, proc.stderr) == (b"True\n", b"")
