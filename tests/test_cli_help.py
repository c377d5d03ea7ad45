"""vanta-cli's help pages: `-h` and `--version`, examples kept exactly as written, no word
broken at a hyphen, and no reference to the project's internal contract."""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from cli import client as sdk
from cli.main import ALIASES, cli

WIDTHS = (60, 80)


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name)


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def help_page(path: tuple[str, ...], width: int) -> str:
    result = CliRunner().invoke(cli, [*path, "-h"], terminal_width=width, prog_name="vanta-cli")
    assert result.exit_code == 0, result.output
    return result.output


def verbatim_lines(text: str | None) -> list[str]:
    """The lines of the `\\b` paragraphs of a help text: Click must print them as written."""
    lines: list[str] = []
    for paragraph in re.split(r"\n\s*\n", textwrap.dedent(text or "")):
        body = paragraph.strip("\n").splitlines()
        if body and body[0].strip() == "\b":
            lines.extend(line.strip() for line in body[1:] if line.strip())
    return lines


ALL = sorted(commands())


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "vanta-cli")
@pytest.mark.parametrize("width", WIDTHS)
def test_help_keeps_examples_whole_and_never_breaks_a_hyphenated_word(path, width):
    page = help_page(path, width)
    assert "SPEC" not in page
    lines = [line.strip() for line in page.splitlines()]
    for line in lines:
        assert not re.search(r"\w-$", line), f"a word broken at a hyphen: {line!r}"
    command = command_at(path)
    for example in verbatim_lines(command.help) + verbatim_lines(command.epilog):
        assert example in lines, f"{example!r} was rewrapped"


def test_every_command_group_and_alias_answers_h():
    for path in ALL:
        assert help_page(path, 80).startswith("Usage: vanta-cli")
    for alias, name in ALIASES.items():
        usage, _, page = help_page((alias,), 80).partition("\n")
        assert usage.startswith(f"Usage: vanta-cli {alias} ")
        assert page == help_page((name,), 80).partition("\n")[2]


def test_version_is_the_programs_at_the_top_and_a_commit_after_get():
    top = CliRunner().invoke(cli, ["--version"], prog_name="vanta-cli")
    assert (top.exit_code, top.output) == (0, "vanta-cli 0.1.0\n")
    get_help = help_page(("get",), 80)
    assert re.search(r"--version COMMIT\s+Read the value as of this commit", get_help)


def test_the_sdk_docs_a_service_reads_do_not_cite_the_internal_contract():
    documented = [sdk, sdk.VaultClient]
    documented += [m for _, m in inspect.getmembers(sdk.VaultClient, inspect.isfunction)]
    for thing in documented:
        assert "SPEC" not in (inspect.getdoc(thing) or ""), thing
