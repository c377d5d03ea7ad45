"""vanta-cli secrets (SPEC §9) on real Git repositories with real sops: set, unset, list,
history, rollback, check, their one-line errors, and the pre-commit hook."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML
from support.agekeys import generate_age_key
from support.repos import DEV_SECRETS, PROD_SECRETS, SOPS_BIN, git
from support.tokens import bearer, make_token

import cli
from broker.store import history
from cli.commands.secrets import secrets

ROOT = Path(cli.__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from cli.main import main; main()"]
SECRET_VALUES = ["postgres://rotated-secret", "branch-secret-value", "never-shown-value"]


@pytest.fixture(autouse=True)
def _cold_caches():
    history.clear_caches()


def invoke(repo, *args: str, input: str | None = None):
    result = CliRunner().invoke(secrets, [*args, "--repo", str(repo.path)], input=input)
    for value in SECRET_VALUES:
        assert value not in result.output and value not in result.stderr
    return result


def run_cli(*args: str, input: bytes = b"", env: dict[str, str] | None = None):
    return subprocess.run(
        [*CLI, *args],
        input=input,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=120,
    )


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


def commits_since(repo, base: str) -> list[str]:
    return git(repo.path, "rev-list", f"{base}..HEAD").split()


def changed_lines(repo, base: str, rel: str) -> list[str]:
    diff = git(repo.path, "diff", "-U0", base, "HEAD", "--", rel)
    return [
        line
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def line_of(repo, revision: str, environment: str, key: str) -> str:
    text = git(repo.path, "show", f"{revision}:secrets/{environment}.enc.yaml")
    return next(line for line in text.splitlines() if line.startswith(f"{key}: "))


# -- set -------------------------------------------------------------------------------------------


def test_set_from_stdin_is_one_commit_changing_one_value_line(secrets_repo):
    base = head(secrets_repo)
    result = invoke(secrets_repo, "set", "dev", "DATABASE_URL", input="postgres://rotated-secret\n")
    assert result.exit_code == 0, result.stderr
    assert commits_since(secrets_repo, base) == [head(secrets_repo)]
    message = git(secrets_repo.path, "log", "-1", "--format=%B")
    assert message == "dev: set DATABASE_URL"
    lines = changed_lines(secrets_repo, base, "secrets/dev.enc.yaml")
    values = [line for line in lines if not line[1:].startswith("    ")]  # not sops metadata
    assert [line[:15] for line in values] == ["-DATABASE_URL: ", "+DATABASE_URL: "]
    names = {line[1:].split(":")[0].strip() for line in lines}
    assert "mac" in names and names <= {"DATABASE_URL", "lastmodified", "mac"}
    assert "rotated-secret" not in git(secrets_repo.path, "show", "HEAD")
    assert decrypt(secrets_repo, "dev") == {
        **DEV_SECRETS,
        "DATABASE_URL": "postgres://rotated-secret",
    }


def test_set_takes_a_file_verbatim_and_types_numbers_and_booleans(secrets_repo, tmp_path):
    pem = tmp_path / "cert.pem"
    pem.write_text('-----BEGIN X-----\nline "two"\n-----END X-----\n')
    assert invoke(secrets_repo, "set", "dev", "TLS/cert", "--from-file", str(pem)).exit_code == 0
    assert (
        invoke(secrets_repo, "set", "dev", "PORT", "--value", "9090", "--type", "number").exit_code
        == 0
    )
    assert (
        invoke(secrets_repo, "set", "dev", "DEBUG", "--value", "false", "--type", "bool").exit_code
        == 0
    )
    assert (
        invoke(secrets_repo, "set", "dev", "RATIO", "--value", "0.5", "--type", "number").exit_code
        == 0
    )
    assert invoke(secrets_repo, "set", "dev", "LABEL", "--value", "8080").exit_code == 0
    document = decrypt(secrets_repo, "dev")
    assert document["TLS"] == {"cert": pem.read_text()}
    assert document["PORT"] == 9090 and document["DEBUG"] is False and document["RATIO"] == 0.5
    assert document["LABEL"] == "8080"
    bad = invoke(secrets_repo, "set", "dev", "PORT", "--value", "many", "--type", "number")
    assert bad.exit_code == 1 and "--type number" in bad.stderr


def test_set_on_a_new_environment_starts_it_and_names_those_there_are(secrets_repo):
    """The contract: `secrets set` creates a new environment's file. A typo would start
    one too, so stderr names the environments there are (and the closest)."""
    result = invoke(secrets_repo, "set", "dve", "API_TOKEN", "--value", "never-shown-value")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(
        "vanta-cli: starting a new environment 'dve': secrets/dve.enc.yaml is created under "
        f"the .sops.yaml rule (the environments in {secrets_repo.path} are dev, prod (did "
        "you mean dev?))\n"
    )
    assert "never-shown-value" not in result.stderr + result.stdout
    assert decrypt(secrets_repo, "dve") == {"API_TOKEN": "never-shown-value"}
    again = invoke(secrets_repo, "set", "dve", "OTHER", "--value", "x")
    assert again.exit_code == 0 and "starting a new environment" not in again.stderr


def test_set_with_create_starts_a_new_environment_file_under_the_sops_yaml_rule(secrets_repo):
    result = invoke(
        secrets_repo, "set", "qa", "API_TOKEN", "--value", "never-shown-value", "--create"
    )
    assert result.exit_code == 0, result.stderr
    created = secrets_repo.secrets_dir / "qa.enc.yaml"
    assert secrets_repo.recipient in created.read_text()
    assert git(secrets_repo.path, "log", "-1", "--format=%s") == "qa: set API_TOKEN"
    assert git(secrets_repo.path, "ls-files", "secrets/qa.enc.yaml") == "secrets/qa.enc.yaml"
    assert decrypt(secrets_repo, "qa") == {"API_TOKEN": "never-shown-value"}


def test_no_commit_stages_the_change_and_a_later_set_may_add_to_it(secrets_repo):
    base = head(secrets_repo)
    result = invoke(secrets_repo, "set", "dev", "A", "--value", "1", "--no-commit")
    assert result.exit_code == 0 and "staged" in result.output
    assert invoke(secrets_repo, "set", "dev", "B", "--value", "2", "--no-commit").exit_code == 0
    assert head(secrets_repo) == base
    assert git(secrets_repo.path, "diff", "--cached", "--name-only") == "secrets/dev.enc.yaml"
    refused = invoke(secrets_repo, "set", "dev", "C", "--value", "3")
    assert refused.exit_code == 1 and "uncommitted changes" in refused.stderr
    assert head(secrets_repo) == base


def test_setting_the_same_value_again_changes_nothing(secrets_repo):
    base = head(secrets_repo)
    result = invoke(secrets_repo, "set", "dev", "DATABASE_USER", "--value", "app")
    assert result.exit_code == 0 and result.output.startswith("unchanged")
    assert head(secrets_repo) == base and not git(secrets_repo.path, "status", "--porcelain")


def test_a_key_cannot_be_both_a_value_and_a_group(secrets_repo):
    group = invoke(secrets_repo, "set", "dev", "API_KEYS", "--value", "x")
    assert group.exit_code == 1 and "is a group of keys" in group.stderr
    under = invoke(secrets_repo, "set", "dev", "PORT/inner", "--value", "x")
    assert under.exit_code == 1 and "'PORT' is a value" in under.stderr


def test_an_empty_stdin_and_bad_names_are_refused(secrets_repo):
    empty = invoke(secrets_repo, "set", "dev", "X", input="")
    assert empty.exit_code == 1 and "no value on standard input" in empty.stderr
    assert invoke(secrets_repo, "set", "Dev", "X", "--value", "v").exit_code == 1
    assert invoke(secrets_repo, "set", "dev", "a b", "--value", "v").exit_code == 1
    both = invoke(secrets_repo, "set", "dev", "X", "--value", "v", "--from-file", __file__)
    assert both.exit_code == 2


# -- unset -----------------------------------------------------------------------------------------


def test_unset_is_one_commit_and_drops_a_group_left_empty(secrets_repo):
    assert invoke(secrets_repo, "unset", "dev", "API_KEYS/openai").exit_code == 0
    assert "API_KEYS:" in (secrets_repo.secrets_dir / "dev.enc.yaml").read_text()
    base = head(secrets_repo)
    assert invoke(secrets_repo, "unset", "dev", "API_KEYS/stripe").exit_code == 0
    assert commits_since(secrets_repo, base) == [head(secrets_repo)]
    assert git(secrets_repo.path, "log", "-1", "--format=%s") == "dev: unset API_KEYS/stripe"
    assert "API_KEYS" not in (secrets_repo.secrets_dir / "dev.enc.yaml").read_text()
    assert "API_KEYS" not in decrypt(secrets_repo, "dev")


# -- list and history ------------------------------------------------------------------------------


def test_list_names_each_key_with_its_last_commit_and_never_a_value(secrets_repo):
    first = head(secrets_repo)
    invoke(secrets_repo, "set", "dev", "PORT", "--value", "never-shown-value")
    port = head(secrets_repo)
    result = invoke(secrets_repo, "list", "dev")
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert set(rows) == {"DATABASE_URL", "DATABASE_USER", "PORT", "DEBUG"} | {
        "API_KEYS/openai",
        "API_KEYS/stripe",
    }
    assert rows["PORT"][2] == port[:12] and rows["DEBUG"][2] == first[:12]
    as_json = json.loads(invoke(secrets_repo, "list", "dev", "--json").output)
    assert {r["key"]: r["last_changed"] for r in as_json}["PORT"] == port
    for value in ("postgres://app:s3cret@db/dev", "sk-test-openai"):
        assert value not in result.output


def test_history_prints_what_the_history_endpoint_answers(secrets_repo, client, config):
    invoke(secrets_repo, "set", "prod", "API_KEY", "--value", "never-shown-value")
    invoke(secrets_repo, "unset", "prod", "API_KEY")
    cli_body = json.loads(invoke(secrets_repo, "history", "prod", "API_KEY", "--json").output)
    token = make_token(config, permissions=("secrets:list",))
    api_body = client.get("/api/v1/history/prod/API_KEY", headers=bearer(token)).get_json()
    assert cli_body == api_body
    assert [v["change"] for v in cli_body["versions"]] == ["removed", "changed", "added"]
    table = invoke(secrets_repo, "history", "prod", "API_KEY").output.splitlines()
    assert table[0].split() == ["COMMIT", "COMMITTED", "AT", "CHANGE", "AUTHOR", "MESSAGE"]
    assert "removed" in table[1] and "prod: unset API_KEY" in table[1]


# -- rollback --------------------------------------------------------------------------------------


def test_rollback_adds_a_commit_and_the_broker_then_serves_the_old_value(
    secrets_repo, client, config
):
    original = head(secrets_repo)
    reader = bearer(make_token(config, permissions=("secrets:read",)))
    invoke(secrets_repo, "set", "prod", "API_KEY", "--value", "never-shown-value")
    replaced = head(secrets_repo)
    served = client.get("/api/v1/vault/prod/API_KEY", headers=reader).get_json()
    assert served["value"] == "never-shown-value" and served["version"] == replaced
    result = invoke(secrets_repo, "rollback", "prod", "API_KEY", "--to", original[:9])
    assert result.exit_code == 0, result.stderr
    assert commits_since(secrets_repo, replaced) == [head(secrets_repo)]
    assert git(secrets_repo.path, "log", "-1", "--format=%s") == (
        f"prod: roll back API_KEY to {original[:12]}"
    )
    for old in (original, replaced):  # history is never rewritten
        git(secrets_repo.path, "merge-base", "--is-ancestor", old, "HEAD")
    served = client.get("/api/v1/vault/prod/API_KEY", headers=reader).get_json()
    assert served["value"] == PROD_SECRETS["API_KEY"] and served["version"] == head(secrets_repo)
    assert line_of(secrets_repo, "HEAD", "prod", "API_KEY") != line_of(
        secrets_repo, original, "prod", "API_KEY"
    )  # re-encrypted, not copied
    assert line_of(secrets_repo, "HEAD", "prod", "DATABASE_URL") == line_of(
        secrets_repo, original, "prod", "DATABASE_URL"
    )


def test_rolling_back_a_key_that_did_not_exist_removes_it(secrets_repo):
    original = head(secrets_repo)
    invoke(secrets_repo, "set", "dev", "NEW_KEY", "--value", "never-shown-value")
    result = invoke(secrets_repo, "rollback", "dev", "NEW_KEY", "--to", original)
    assert result.exit_code == 0 and "NEW_KEY" not in decrypt(secrets_repo, "dev")
    again = invoke(secrets_repo, "rollback", "dev", "NEW_KEY", "--to", original)
    assert again.exit_code == 0 and again.output.startswith("unchanged")


def test_rolling_back_a_whole_file_restores_every_key_in_one_commit(secrets_repo):
    original = head(secrets_repo)
    invoke(secrets_repo, "set", "dev", "PORT", "--value", "1", "--type", "number")
    invoke(secrets_repo, "set", "dev", "EXTRA/nested", "--value", "x")
    invoke(secrets_repo, "unset", "dev", "DEBUG")
    before = head(secrets_repo)
    result = invoke(secrets_repo, "rollback", "dev", "--to", original)
    assert result.exit_code == 0, result.stderr
    assert commits_since(secrets_repo, before) == [head(secrets_repo)]
    subject = git(secrets_repo.path, "log", "-1", "--format=%s")
    assert subject == f"dev: roll back to {original[:12]} (DEBUG, EXTRA/nested, PORT)"
    assert decrypt(secrets_repo, "dev") == DEV_SECRETS
    assert line_of(secrets_repo, "HEAD", "dev", "DATABASE_URL") == line_of(
        secrets_repo, original, "dev", "DATABASE_URL"
    )  # untouched keys keep their ciphertext (and rotation age)
    assert "EXTRA" not in (secrets_repo.secrets_dir / "dev.enc.yaml").read_text()


def test_rolling_back_to_before_an_environment_existed_removes_its_file(secrets_repo):
    original = head(secrets_repo)
    invoke(secrets_repo, "set", "qa", "TOKEN", "--value", "never-shown-value")
    result = invoke(secrets_repo, "rollback", "qa", "--to", original)
    assert result.exit_code == 0, result.stderr
    assert not (secrets_repo.secrets_dir / "qa.enc.yaml").exists()
    assert git(secrets_repo.path, "ls-files", "secrets/qa.enc.yaml") == ""


# -- errors: one clear line, exit 1 ----------------------------------------------------------------


def one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for value in SECRET_VALUES:
        assert value not in lines[0]
    return lines[0]


def test_not_a_git_repository(tmp_path):
    line = one_line_error(run_cli("secrets", "list", "dev", "--repo", str(tmp_path)))
    assert "not a Git repository" in line


def test_no_sops_yaml_rule_for_a_new_file(secrets_repo):
    (secrets_repo.path / ".sops.yaml").write_text(
        f"creation_rules:\n  - path_regex: secrets/(dev|prod)\\.enc\\.yaml$\n"
        f"    age: {secrets_repo.recipient}\n"
    )
    git(secrets_repo.path, "commit", "-qam", "only dev and prod")
    args = ("secrets", "set", "qa", "X", "--create", "--repo", str(secrets_repo.path))
    line = one_line_error(run_cli(*args, input=b"never-shown-value"))
    assert "no .sops.yaml creation rule matches secrets/qa.enc.yaml" in line
    assert not (secrets_repo.secrets_dir / "qa.enc.yaml").exists()


def test_no_key_to_decrypt_with(secrets_repo, tmp_path):
    no_key = {"SOPS_AGE_KEY_FILE": "", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    args = ("secrets", "set", "dev", "DATABASE_URL", "--repo", str(secrets_repo.path))
    line = one_line_error(run_cli(*args, input=b"never-shown-value", env=no_key))
    assert "no key to decrypt secrets/dev.enc.yaml with" in line
    assert not git(secrets_repo.path, "status", "--porcelain")


def test_unknown_revision(secrets_repo):
    args = ("secrets", "rollback", "dev", "PORT", "--to", "no-such-rev")
    line = one_line_error(run_cli(*args, "--repo", str(secrets_repo.path)))
    assert line == "error: unknown revision 'no-such-rev'"


@pytest.mark.parametrize(
    "args, expected",
    [
        (("unset", "dev", "NOPE"), "key 'NOPE' not found in secrets/dev.enc.yaml"),
        (("history", "dev", "NOPE"), "key 'NOPE' not found in the history"),
        (("history", "qa", "NOPE"), "environment 'qa' has no file secrets/qa.enc.yaml"),
        (("list", "qa"), "environment 'qa' has no file secrets/qa.enc.yaml at HEAD"),
    ],
)
def test_key_or_environment_not_found(secrets_repo, args, expected):
    line = one_line_error(run_cli("secrets", *args, "--repo", str(secrets_repo.path)))
    assert expected in line


# -- check -----------------------------------------------------------------------------------------


def check(repo, *paths: str):
    return CliRunner().invoke(secrets, ["check", *paths, "--repo", str(repo.path)])


def test_check_passes_clean_files(secrets_repo):
    result = check(secrets_repo)
    assert result.exit_code == 0 and result.stdout == "ok: 2 file(s) checked\n"


def test_check_catches_a_plaintext_file_naming_file_and_keys(secrets_repo):
    (secrets_repo.secrets_dir / "qa.enc.yaml").write_text("TOKEN: plain-secret\nDB:\n  pw: x\n")
    result = check(secrets_repo)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "secrets/qa.enc.yaml: no sops metadata: the file is not encrypted (sops encrypt -i)",
        "secrets/qa.enc.yaml: TOKEN: plaintext value",
        "secrets/qa.enc.yaml: DB/pw: plaintext value",
    ]
    assert result.stderr == "error: 3 problem(s) in 1 of 3 file(s)\n"


def test_check_catches_a_file_without_mac(secrets_repo):
    path = secrets_repo.secrets_dir / "dev.enc.yaml"
    path.write_text("".join(ln for ln in path.read_text().splitlines(True) if "mac:" not in ln))
    result = check(secrets_repo)
    assert result.exit_code == 1
    assert result.stdout == "secrets/dev.enc.yaml: the sops metadata has no MAC\n"


def test_check_catches_one_plaintext_value_among_encrypted_ones(secrets_repo, monkeypatch):
    path = secrets_repo.secrets_dir / "prod.enc.yaml"
    path.write_text(path.read_text().replace("sops:\n", "LEAKED: oops\nsops:\n", 1))
    monkeypatch.chdir(secrets_repo.path)  # paths are relative to where check runs
    result = check(secrets_repo, "secrets/prod.enc.yaml")
    assert result.exit_code == 1
    assert result.stdout == "secrets/prod.enc.yaml: LEAKED: plaintext value\n"


def test_check_catches_recipients_that_differ_from_sops_yaml(secrets_repo, tmp_path):
    stranger = generate_age_key()
    encrypted = subprocess.run(
        [SOPS_BIN, "encrypt", "--age", f"{secrets_repo.recipient},{stranger.recipient}"]
        + ["--filename-override", "prod.enc.yaml", "--input-type", "json", "/dev/stdin"],
        input=json.dumps(PROD_SECRETS).encode(),
        cwd=tmp_path,  # no .sops.yaml here: the recipients on the command line are used
        capture_output=True,
        check=True,
    ).stdout
    (secrets_repo.secrets_dir / "prod.enc.yaml").write_bytes(encrypted)
    result = check(secrets_repo)
    assert result.exit_code == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith("secrets/prod.enc.yaml: encrypted to recipients that differ")
    assert f"not in it age {stranger.recipient}" in line
    assert line.endswith("run `sops updatekeys secrets/prod.enc.yaml`")


def test_check_honours_the_files_own_unencrypted_suffix(secrets_repo):
    secrets_repo.write("staging", {"region_unencrypted": "eu-west-1", "TOKEN": "t"})
    assert check(secrets_repo).exit_code == 0


def test_check_names_a_file_no_creation_rule_covers(secrets_repo):
    (secrets_repo.path / ".sops.yaml").write_text(
        f"creation_rules:\n  - path_regex: secrets/dev\\.enc\\.yaml$\n"
        f"    age: {secrets_repo.recipient}\n"
    )
    result = check(secrets_repo)
    assert result.exit_code == 1
    assert result.stdout == "secrets/prod.enc.yaml: no .sops.yaml creation rule matches this file\n"


# -- the pre-commit hook ---------------------------------------------------------------------------


def test_the_pre_commit_hook_runs_check_on_secrets_files_only(secrets_repo):
    hooks = YAML(typ="safe").load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} >= {"vanta-secrets-check"}
    (secrets_repo.secrets_dir / "qa.enc.yaml").write_text("TOKEN: plain-secret\n")
    staged = ["secrets/dev.enc.yaml", "secrets/qa.enc.yaml", "src/app.py", "README.md"]
    for hook in hooks:
        pattern = re.compile(hook["files"])
        matched = [f for f in staged if pattern.search(f)]
        assert matched == ["secrets/dev.enc.yaml", "secrets/qa.enc.yaml"]
        assert hook["entry"] == "vanta-cli secrets check"
        # What pre-commit runs: the entry, in the repository's top, with the matched files.
        args = hook["entry"].split()[1:]
        failing = subprocess.run(
            [*CLI, *args, *matched],
            cwd=secrets_repo.path,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert failing.returncode == 1
        assert "secrets/qa.enc.yaml: TOKEN: plaintext value" in failing.stdout
        passing = subprocess.run(
            [*CLI, *args, matched[0]],
            cwd=secrets_repo.path,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert passing.returncode == 0, passing.stdout + passing.stderr


def test_every_command_is_on_vanta_cli_with_an_example_in_its_help():
    for command in ("set", "unset", "list", "history", "rollback", "check"):
        proc = run_cli("secrets", command, "--help")
        assert proc.returncode == 0 and b"vanta-cli secrets " + command.encode() in proc.stdout
