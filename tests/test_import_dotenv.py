"""vanta-cli import dotenv (SPEC §13) on real Git repositories with real sops: the dotenv
rules, awkward values that must come back exactly, conflicts, dry runs."""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner
from support.repos import DEV_SECRETS, SOPS_BIN, git
from support.tokens import make_token

from cli.client import VaultClient
from cli.commands.import_ import import_
from cli.importers.dotenv import parse_dotenv
from cli.run.dotenv import render

AWKWARD = {
    "QUOTES": "she said \"hi\" and 'bye'",
    "BACKSLASHES": "C:\\temp\\new \\\\server\\share \\",
    "LITERAL_ESCAPES": "a backslash-n \\n is not a newline, nor is \\t a tab",
    "NEWLINES": "line one\nline two\n\nline four\n",
    "CRLF": "windows\r\nline\rand a lone CR",
    "DOLLARS": "$HOME ${PATH} $(rm -rf /) `id` $$",
    "HASHES": "# not a comment # nor this",
    "EQUALS": "a=b==c===",
    "SPACES": "  leading and trailing  ",
    "TABS": "\tindented\t",
    "UNICODE": "ünïcødé ✓ 🎉 中文",
    "EMPTY": "",
    "PEM": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg==\n-----END PRIVATE KEY-----\n",
    "JSON": '{"user": "app", "list": [1, "two"], "nested": {"q": "\\"x\\""}}',
    "NUMBER_LIKE": "0042",
    "BOOL_LIKE": "true",
}


def invoke(repo, *args: str, input: str | bytes | None = None):
    return CliRunner().invoke(import_, ["dotenv", *args, "--repo", str(repo.path)], input=input)


def decrypt(repo, environment: str) -> dict:
    out = subprocess.run(
        [SOPS_BIN, "decrypt", "--output-type", "json", f"secrets/{environment}.enc.yaml"],
        cwd=repo.path,
        capture_output=True,
        check=True,
    ).stdout
    return json.loads(out)


def head(repo) -> str:
    return git(repo.path, "rev-parse", "HEAD")


# -- round trips -------------------------------------------------------------------------------


def test_awkward_values_written_as_run_with_secrets_writes_them_come_back_exactly(
    secrets_repo, tmp_path, running_broker, config
):
    exported = tmp_path / "exported.env"
    exported.write_text(render(AWKWARD.items()))
    base = head(secrets_repo)
    result = invoke(secrets_repo, str(exported), "--environment", "qa")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert decrypt(secrets_repo, "qa") == AWKWARD
    assert git(secrets_repo.path, "rev-list", f"{base}..HEAD").split() == [head(secrets_repo)]
    message = git(secrets_repo.path, "log", "-1", "--format=%B")
    assert message.startswith(f"qa: import {len(AWKWARD)} keys from a dotenv file\n")
    assert "windows" not in message and "PRIVATE KEY" not in message
    client = VaultClient(running_broker.url, make_token(config, environment="qa"), environ={})
    assert client.get_many("qa", pattern="*") == AWKWARD  # and the broker serves them so


def test_hand_written_dotenv_syntax(secrets_repo, tmp_path):
    source = tmp_path / "app.env"
    source.write_bytes(
        b"\xef\xbb\xbf# exported by hand\r\n"
        b"\n"
        b"export DATABASE_URL=postgres://app:pw@db/app   # the primary\r\n"
        b"PLAIN=value#with-hash\n"
        b"  INDENTED = spaced value  \n"
        b"SINGLE='literal \\n $HOME \"double\" # kept'\n"
        b'DOUBLE="tab\\tstays \\"quoted\\" \\\\ $HOME" # comment after\n'
        b'MULTI="first\n'
        b"second 'line'\n"
        b'third"\n'
        b"SINGLE_MULTI='a\n"
        b"b'\n"
        b"EMPTY=\n"
        b'EMPTY_QUOTED=""\n'
        b"this line has no equals sign\n"
        b"AFTER=still read\n"
    )
    result = invoke(secrets_repo, str(source), "--environment", "qa")
    assert result.exit_code == 0, result.stderr
    assert decrypt(secrets_repo, "qa") == {
        "DATABASE_URL": "postgres://app:pw@db/app",
        "PLAIN": "value#with-hash",
        "INDENTED": "spaced value",
        "SINGLE": 'literal \\n $HOME "double" # kept',
        "DOUBLE": 'tab\\tstays "quoted" \\ $HOME',
        "MULTI": "first\nsecond 'line'\nthird",
        "SINGLE_MULTI": "a\nb",
        "EMPTY": "",
        "EMPTY_QUOTED": "",
        "AFTER": "still read",
    }
    assert result.stderr == "warning: line 15: no '=' (skipped)\n"


def test_standard_input_and_a_prefix(secrets_repo):
    text = "PROD_DB_URL=postgres://prod\nPROD_API/key=k1\nprod_lower=no\nDEV_DB_URL=no\n"
    result = invoke(secrets_repo, "-", "--environment", "qa", "--prefix", "PROD_", input=text)
    assert result.exit_code == 0, result.stderr
    assert decrypt(secrets_repo, "qa") == {"DB_URL": "postgres://prod", "API": {"key": "k1"}}


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ('A="x\\"y"', 'x"y'),
        ("A='x\\'", "x\\"),
        ('A="\\a\\$"', "\\a\\$"),  # unknown escapes keep their backslash
        ("A = 'padded' ", "padded"),
        ("export   A=1", "1"),
        ("A=#not-a-comment", "#not-a-comment"),
        ("A=x #comment", "x"),
    ],
)
def test_the_parser_on_one_line(line, value):
    parsed = parse_dotenv(line + "\n")
    assert [(e.name, e.value) for e in parsed.entries] == [("A", value)]
    assert parsed.warnings == parsed.problems == ()


# -- what stops an import -----------------------------------------------------------------------


def test_broken_quoting_stops_the_import_and_names_the_line(secrets_repo, tmp_path):
    source = tmp_path / "broken.env"
    source.write_text('GOOD=1\nBAD="never closed\nALSO=2\nTRAIL="x" junk\n')
    base = head(secrets_repo)
    result = invoke(secrets_repo, str(source), "--environment", "dev")
    assert result.exit_code == 1
    assert 'problem: line 2 (BAD): the " closes only on line 4, with text' in result.stderr
    assert 'problem: line 4 (TRAIL): text after the closing "' in result.stderr
    assert result.stderr.strip().endswith("error: nothing written: 2 problems")
    assert head(secrets_repo) == base and git(secrets_repo.path, "status", "--porcelain") == ""


def test_existing_keys_duplicates_and_clashing_names_are_conflicts(secrets_repo, tmp_path):
    source = tmp_path / "conflicts.env"
    source.write_text("PORT=1\nNEW=a\nNEW=b\nMY.KEY=c\nMY+KEY=d\nMY KEY=e\nAPI_KEYS=f\n")
    base = head(secrets_repo)
    result = invoke(secrets_repo, str(source), "--environment", "dev", "--dry-run")
    assert result.exit_code == 1
    conflicts = [line for line in result.stderr.splitlines() if line.startswith("conflict:")]
    assert conflicts == [
        "conflict: NEW: both line 2 (NEW) and line 3 (NEW) become it",
        "conflict: MY_KEY: both line 5 (MY+KEY) and line 6 (MY KEY) become it",
        "conflict: API_KEYS: a group of keys in secrets/dev.enc.yaml (API_KEYS/openai, ...), "
        "from line 7 (API_KEYS)",
        "conflict: PORT: already in secrets/dev.enc.yaml (from line 1 (PORT); "
        "--overwrite replaces it)",
    ]
    real = invoke(secrets_repo, str(source), "--environment", "dev", "--overwrite")
    assert real.exit_code == 1 and "conflict: PORT" not in real.stderr
    assert head(secrets_repo) == base and decrypt(secrets_repo, "dev") == DEV_SECRETS


def test_dry_run_lists_names_only(secrets_repo, tmp_path):
    source = tmp_path / "dry.env"
    source.write_text("NEW_SECRET=never-shown-value\nPORT=9999\n")
    result = invoke(secrets_repo, str(source), "--environment", "dev", "--dry-run", "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert result.output.splitlines() == [
        "would import 2 key(s) into secrets/dev.enc.yaml:",
        "  + NEW_SECRET  (new; from line 1 (NEW_SECRET))",
        "  ~ PORT  (replaces the existing value; from line 2 (PORT))",
        "dry run: nothing written",
    ]
    assert "never-shown-value" not in result.output + result.stderr
    assert git(secrets_repo.path, "status", "--porcelain") == ""


def test_overwriting_with_the_same_values_commits_nothing(secrets_repo, tmp_path):
    source = tmp_path / "same.env"
    source.write_text("DATABASE_USER=app\n")
    base = head(secrets_repo)
    result = invoke(secrets_repo, str(source), "--environment", "dev", "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert result.output.startswith("unchanged: secrets/dev.enc.yaml already holds these values")
    assert head(secrets_repo) == base and git(secrets_repo.path, "status", "--porcelain") == ""


def test_a_file_that_is_not_utf8_or_not_there_is_one_line(secrets_repo, tmp_path):
    latin = tmp_path / "latin.env"
    latin.write_bytes(b"A=caf\xe9\n")
    result = invoke(secrets_repo, str(latin), "--environment", "dev")
    assert result.exit_code == 1 and result.stderr == f"error: {latin} is not UTF-8 text\n"
    result = invoke(secrets_repo, str(tmp_path / "missing.env"), "--environment", "dev")
    assert result.exit_code == 1 and "cannot be read" in result.stderr


def test_a_bad_environment_name_is_refused(secrets_repo, tmp_path):
    source = tmp_path / "a.env"
    source.write_text("A=1\n")
    result = invoke(secrets_repo, str(source), "--environment", "../etc")
    assert result.exit_code == 1 and "not an environment name" in result.stderr


def test_a_quote_that_never_closes_is_a_problem_and_reading_goes_on():
    parsed = parse_dotenv("A='open\nB=1\n")
    assert parsed.problems == ("line 1 (A): the ' never closes",)
    assert [(e.line, e.name, e.value) for e in parsed.entries] == [(2, "B", "1")]
