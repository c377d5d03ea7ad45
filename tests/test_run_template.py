"""run-with-secrets --env-file (SPEC §14): dotenv templates with secretref:// values,
read against a real broker through a recording proxy, run with real child processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from support.brokers import free_port
from support.cli import (
    DUMP_ENV,
    ISSUER,
    READER,
    Broker,
    RecordingProxy,
    cli_env,
    python,
    run,
    rws_args,
    serve_secrets,
    touch,
)
from support.cli import proxy as proxy  # noqa: F401 (the fixture, against this module's broker)
from support.repos import DEV_SECRETS, PROD_SECRETS, SIGNING_KEY
from support.tokens import bearer

from cli.run.mask import MARKER
from cli.run.references import narrowest_glob, plan_reads
from cli.run.template import SecretRef, TemplateError, load_templates

OLD_DATABASE_URL = "postgres://app:old@db/dev"


@pytest.fixture(scope="module")
def broker(tmp_path_factory, age_key, age_key_file) -> Iterator[Broker]:
    """dev and prod; dev's DATABASE_URL was OLD_DATABASE_URL at `repo_commit`, and its
    ADDED_LATER did not exist then."""
    root = tmp_path_factory.mktemp("template")
    old_dev = {**DEV_SECRETS, "DATABASE_URL": OLD_DATABASE_URL}
    with serve_secrets(root, age_key, age_key_file, dev=old_dev, prod=PROD_SECRETS) as running:
        assert running.repo is not None
        new_dev = {**DEV_SECRETS, "ADDED_LATER": "added-later-value"}
        running.repo.write_and_commit("dev", new_dev, "dev: new database, ADDED_LATER")
        yield running


def template(tmp_path: Path, text: str, name: str = "app.env") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def mint_bodies(proxy: RecordingProxy) -> list[dict]:
    return [json.loads(e.body) for e in proxy.exchanges if e.path.endswith("/tokens/generate")]


def minted_tokens(proxy: RecordingProxy) -> list[str]:
    return [
        json.loads(e.answer)["access_token"]
        for e in proxy.exchanges
        if e.path.endswith("/tokens/generate")
    ]


TWO_ENVIRONMENTS = """\
# the app's settings: secrets by reference, the rest as they are
export DATABASE_URL=secretref://dev/DATABASE_URL
DATABASE_USER = "secretref://dev/DATABASE_USER"
PROD_API_KEY='secretref://prod/API_KEY'
LOG_LEVEL=debug   # a comment
GREETING="hello # not a comment"
"""


def test_a_template_mixes_two_environments_and_plain_lines(broker, proxy, tmp_path):
    issuer = broker.token(environment="*", permissions=ISSUER)
    env = cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=issuer)
    args = rws_args(
        "--env-file", str(template(tmp_path, TWO_ENVIRONMENTS)), "--no-masking",
        command=python(DUMP_ENV),
    )  # fmt: skip
    proc = run(args, env)
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout)
    assert child["DATABASE_URL"] == DEV_SECRETS["DATABASE_URL"]
    assert child["DATABASE_USER"] == "app"
    assert child["PROD_API_KEY"] == PROD_SECRETS["API_KEY"]
    assert (child["LOG_LEVEL"], child["GREETING"]) == ("debug", "hello # not a comment")
    assert "VANTA_TOKEN" not in child
    # one reader per environment, as narrow as one glob can be, one use each: one batch
    assert proxy.paths() == [
        ("POST", "/api/v1/vault/tokens/generate"),
        ("POST", "/api/v1/vault/dev/batch"),
        ("POST", "/api/v1/vault/tokens/generate"),
        ("POST", "/api/v1/vault/prod/batch"),
    ]
    dev_mint, prod_mint = mint_bodies(proxy)
    common = {"ttl_minutes": 5, "usage_limit": 1, "permissions": ["secrets:read", "secrets:list"]}
    assert dev_mint == {**common, "subject": dev_mint["subject"], "environment": "dev",
                        "key_pattern": "DATABASE_U*"}  # fmt: skip
    assert prod_mint == {**common, "subject": prod_mint["subject"], "environment": "prod",
                         "key_pattern": "API_KEY"}  # fmt: skip
    assert json.loads(proxy.exchanges[1].body) == {"keys": ["DATABASE_URL", "DATABASE_USER"]}
    assert json.loads(proxy.exchanges[3].body) == {"keys": ["API_KEY"]}
    for token, environment in zip(minted_tokens(proxy), ["dev", "prod"], strict=True):
        claims = jwt.decode(token, SIGNING_KEY, algorithms=["HS256"], audience="vanta-vault-api")
        assert claims["exp"] - claims["iat"] <= 300
        again = requests.post(  # each reader's one use is spent
            f"{broker.url}/api/v1/vault/{environment}/batch",
            json={"pattern": "*"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert again.json()["error"]["code"] == "usage_exhausted"
    # stderr says where each variable comes from, never a value
    assert "DATABASE_URL (secretref://dev/DATABASE_URL)" in proc.stderr
    assert f"LOG_LEVEL ({tmp_path / 'app.env'} line 5)" in proc.stderr
    assert DEV_SECRETS["DATABASE_URL"] not in proc.stderr
    assert PROD_SECRETS["API_KEY"] not in proc.stderr


def test_a_versioned_reference_is_read_on_its_own_and_counted(broker, proxy, tmp_path):
    issuer = broker.token(environment="dev", permissions=ISSUER)
    env = cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=issuer)
    text = (
        f"OLD_URL=secretref://dev/DATABASE_URL?version={broker.repo_commit[:10]}\n"
        "NEW_URL=secretref://dev/DATABASE_URL\n"
        "USER=secretref://dev/DATABASE_USER\n"
    )
    args = rws_args("--env-file", str(template(tmp_path, text)), "--no-masking",
                    command=python(DUMP_ENV))  # fmt: skip
    proc = run(args, env)
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout)
    assert (child["OLD_URL"], child["NEW_URL"]) == (OLD_DATABASE_URL, DEV_SECRETS["DATABASE_URL"])
    assert proxy.paths() == [
        ("POST", "/api/v1/vault/tokens/generate"),
        ("POST", "/api/v1/vault/dev/batch"),
        ("GET", f"/api/v1/vault/dev/DATABASE_URL?version={broker.repo_commit[:10]}"),
    ]
    (mint,) = mint_bodies(proxy)
    assert (mint["key_pattern"], mint["usage_limit"]) == ("DATABASE_U*", 2)


def test_references_are_masked_and_plain_lines_are_not(broker, tmp_path):
    reader = broker.token(environment="dev", permissions=READER)
    text = "DB=secretref://dev/DATABASE_URL\nLOG_LEVEL=debug-verbose\n"
    code = "import os; print(os.environ['DB'], os.environ['LOG_LEVEL'])"
    args = rws_args("--env-file", str(template(tmp_path, text)), "--token", reader,
                    command=python(code))  # fmt: skip
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{MARKER.decode()} debug-verbose\n"


def test_a_template_and_a_pattern_together(broker, tmp_path):
    reader = broker.token(environment="*", permissions=READER)
    text = "PROD_KEY=secretref://prod/API_KEY\n"
    args = rws_args(
        "--environment", "dev", "--key-pattern", "API_KEYS/*", "--token", reader,
        "--env-file", str(template(tmp_path, text)), "--no-masking", command=python(DUMP_ENV),
    )  # fmt: skip
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url))
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout)
    assert child["PROD_KEY"] == PROD_SECRETS["API_KEY"]
    assert (child["API_KEYS_OPENAI"], child["API_KEYS_STRIPE"]) == (
        "sk-test-openai",
        "sk_test_stripe",
    )


def test_a_template_goes_into_the_secrets_file_too(broker, tmp_path):
    reader = broker.token(environment="dev", permissions=READER)
    text = "DB=secretref://dev/DATABASE_URL\nLOG_LEVEL=debug\n"
    code = (
        "import json, os, sys\nfrom dotenv import dotenv_values\n"
        "json.dump(dotenv_values(os.environ['VANTA_SECRETS_FILE'], interpolate=False), sys.stdout)"
    )
    args = rws_args("--env-file", str(template(tmp_path, text)), "--token", reader,
                    "--inject-as", "file", "--no-masking", command=python(code))  # fmt: skip
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url, XDG_RUNTIME_DIR=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"DB": DEV_SECRETS["DATABASE_URL"], "LOG_LEVEL": "debug"}


def test_plain_lines_alone_need_no_token_and_no_request(tmp_path):
    code = "import os; print(os.environ['LOG_LEVEL'])"
    args = rws_args("--env-file", str(template(tmp_path, "LOG_LEVEL=info\n")),
                    command=python(code))  # fmt: skip
    proc = run(args, cli_env(VANTA_BROKER_URL="http://127.0.0.1:9"))  # nothing listens
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "info\n"


# -- refusals: the command never runs, the reference is named ----------------------------------


@pytest.mark.parametrize(
    ("reference", "error"),
    [
        ("secretref://dev/NOPE", "secretref://dev/NOPE: 404 not_found: key 'NOPE' not found"),
        ("secretref://nope/KEY", "secretref://nope/KEY: 404 not_found: environment"),
        (
            "secretref://dev/PORT?version=0123456789abcdef",
            "secretref://dev/PORT?version=0123456789abcdef: 404 not_found: version not found",
        ),
    ],
)
def test_a_missing_environment_key_or_version_is_named(broker, tmp_path, reference, error):
    marker = tmp_path / "ran"
    issuer = broker.token(environment="*", permissions=ISSUER)
    text = f"DB=secretref://dev/DATABASE_URL\nMISSING={reference}\n"
    args = rws_args("--env-file", str(template(tmp_path, text)), command=touch(marker))
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url, VANTA_TOKEN=issuer))
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.startswith(f"error: {error}"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_a_reference_outside_the_readers_pattern_is_named(broker, tmp_path):
    marker = tmp_path / "ran"
    reader = broker.token(environment="dev", key_pattern="DATABASE_*", permissions=READER)
    text = "URL=secretref://dev/DATABASE_URL\nKEY=secretref://dev/API_KEYS/openai\n"
    args = rws_args("--env-file", str(template(tmp_path, text)), "--token", reader,
                    command=touch(marker))  # fmt: skip
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url))
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.startswith(
        "error: secretref://dev/API_KEYS/openai: 403 scope_denied: "
        "a key is outside the token's pattern"
    )
    assert "DATABASE_URL" not in proc.stderr  # only the reference it cannot read is named


def test_a_reference_the_issuer_cannot_mint_for_is_named(broker, tmp_path):
    marker = tmp_path / "ran"
    issuer = broker.token(environment="dev", permissions=ISSUER)
    text = "DB=secretref://dev/DATABASE_URL\nKEY=secretref://prod/API_KEY\n"
    args = rws_args("--env-file", str(template(tmp_path, text)), command=touch(marker))
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url, VANTA_TOKEN=issuer))
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.startswith("error: secretref://prod/API_KEY: 403 scope_denied: ")


def test_a_variable_in_two_templates_is_an_error_before_any_request(broker, proxy, tmp_path):
    marker = tmp_path / "ran"
    first = template(tmp_path, "A=1\nDB=secretref://dev/DATABASE_URL\n", "first.env")
    second = template(tmp_path, "\nDB=secretref://prod/DATABASE_URL\n", "second.env")
    issuer = broker.token(environment="*", permissions=ISSUER)
    args = rws_args("--env-file", str(first), "--env-file", str(second), command=touch(marker))
    proc = run(args, cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=issuer))
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr == f"error: DB is set twice: {first} line 2 and {second} line 2\n"
    assert proxy.exchanges == []


def test_a_variable_from_a_template_and_the_pattern_is_an_error(broker, tmp_path):
    marker = tmp_path / "ran"
    reader = broker.token(environment="*", permissions=READER)
    text = "DATABASE_URL=secretref://prod/DATABASE_URL\n"
    args = rws_args(
        "--environment", "dev", "--key-pattern", "DATABASE_*", "--token", reader,
        "--env-file", str(template(tmp_path, text)), command=touch(marker),
    )  # fmt: skip
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url))
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr == (
        "error: DATABASE_URL is set twice: by dev/DATABASE_URL "
        "and by secretref://prod/DATABASE_URL\n"
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("DB=secretref://dev\n", "secretref://dev: '' is not a key name"),
        ("DB=secretref://Dev/X\n", "secretref://Dev/X: 'Dev' is not an environment name"),
        ("DB=secretref://dev/X?v=1\n", "secretref://dev/X?v=1: unknown query parameter 'v'"),
        (
            "DB=secretref://dev/X?version=main\n",
            "app.env line 1: secretref://dev/X?version=main: version= takes a commit SHA",
        ),
        ('DB="never closed\n', 'app.env line 1 (DB): the " never closes'),
        ("9DB=x\n", "app.env line 1: '9DB' is not a variable name"),
        # broken references are errors, never passed on as plain values
        *(
            (
                f"DB={ref}\n",
                f"app.env line 1: {ref.strip()!r} looks like a secret reference"
                " but is not one: write secretref://ENV/KEY (lower case, two slashes)",
            )
            for ref in (
                "secretref:/dev/X",
                "secretref//dev/X",
                "SecretRef://dev/X",
                "secretref:dev/X",
                "secret-ref://dev/X",
            )
        ),  # fmt: skip
        ('DB=" secretref://dev/X"\n', "' secretref://dev/X' looks like a secret reference"),
    ],
)
def test_a_malformed_template_is_an_error_before_any_request(broker, proxy, tmp_path, text, error):
    marker = tmp_path / "ran"
    path = template(tmp_path, text)
    issuer = broker.token(environment="*", permissions=ISSUER)
    proc = run(rws_args("--env-file", str(path), command=touch(marker)),
               cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=issuer))  # fmt: skip
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.startswith("error: ") and error in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert proxy.exchanges == []


def test_a_value_that_merely_starts_with_secret_words_is_plain(tmp_path):
    path = template(tmp_path, "A=secretreference\nB=secrets are fine\nC=ref://x\n")
    variables = load_templates([path]).variables
    assert [(v.name, v.value, v.ref) for v in variables] == [
        ("A", "secretreference", None), ("B", "secrets are fine", None), ("C", "ref://x", None)
    ]  # fmt: skip


def test_a_line_without_equals_is_skipped_with_a_warning(tmp_path):
    path = template(tmp_path, "LOG_LEVEL=info\nsome stray words\n")
    proc = run(rws_args("--env-file", str(path), command=python("print('ran')")), cli_env())
    assert proc.returncode == 0, proc.stderr
    assert f"vanta: warning: {path} line 2: no '=' (skipped)\n" in proc.stderr
    assert "stray" not in proc.stderr


# -- bindings: required, optional, default ------------------------------------------------------

BINDINGS = """\
DB=secretref://dev/DATABASE_URL
REPLICA=secretref://dev/REPLICA_URL?optional
LOG_LEVEL=secretref://dev/LOG_LEVEL?default=info%20%26%20more
EMPTY=secretref://dev/NOPE?default=
USER_NAME=secretref://dev/DATABASE_USER?optional
PORT=secretref://dev/PORT?default=1
"""


def test_optional_and_default_fall_back_only_where_the_key_does_not_exist(broker, proxy, tmp_path):
    issuer = broker.token(environment="dev", permissions=ISSUER)
    code = (
        "import json, os\n"
        "names = ['DB', 'LOG_LEVEL', 'EMPTY', 'USER_NAME', 'PORT']\n"
        "print(json.dumps({n: os.environ[n] for n in names}))\n"
        "print('REPLICA' in os.environ)\n"
    )
    args = rws_args("--env-file", str(template(tmp_path, BINDINGS)), command=python(code))
    proc = run(args, cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=issuer))
    assert proc.returncode == 0, proc.stderr
    shown, replica = proc.stdout.splitlines()
    assert json.loads(shown) == {
        "DB": MARKER.decode(),  # a secret: masked
        "LOG_LEVEL": "info & more",  # a default: percent-decoded, not a secret, not masked
        "EMPTY": "",
        "USER_NAME": "app",  # the key exists: its value, not a fallback
        "PORT": "8080",
    }
    assert replica == "False"  # left unset
    assert "vanta: REPLICA left unset: secretref://dev/REPLICA_URL?optional does not exist\n" in (
        proc.stderr
    )
    assert (
        "vanta: LOG_LEVEL gets its default: secretref://dev/LOG_LEVEL?default=… does not exist\n"
        in proc.stderr
    )
    assert "vanta: EMPTY gets its default: secretref://dev/NOPE?default=… does not exist\n" in (
        proc.stderr
    )
    assert "USER_NAME left" not in proc.stderr and "PORT gets" not in proc.stderr
    assert "info" not in proc.stderr and DEV_SECRETS["DATABASE_URL"] not in proc.stderr
    # one batch that finds a key missing (no use), a list (no use), the batch of the rest
    assert proxy.paths() == [
        ("POST", "/api/v1/vault/tokens/generate"),
        ("POST", "/api/v1/vault/dev/batch"),
        ("GET", "/api/v1/vault/dev?pattern=%2A"),
        ("POST", "/api/v1/vault/dev/batch"),
    ]
    first, second = (json.loads(e.body) for e in proxy.exchanges if e.path.endswith("/batch"))
    assert first == {"keys": sorted(["DATABASE_URL", "REPLICA_URL", "LOG_LEVEL", "NOPE",
                                     "DATABASE_USER", "PORT"])}  # fmt: skip
    assert second == {"keys": ["DATABASE_URL", "DATABASE_USER", "PORT"]}
    (mint,) = mint_bodies(proxy)
    assert mint["usage_limit"] == 1  # exactly the one batch that answered
    (reader,) = minted_tokens(proxy)
    spent = requests.get(f"{broker.url}/api/v1/vault/dev/PORT", headers=bearer(reader), timeout=10)
    assert spent.json()["error"]["code"] == "usage_exhausted"


def test_a_reader_left_with_unused_reads_is_revoked(broker, proxy, tmp_path):
    issuer = broker.token(environment="dev", permissions=ISSUER)
    text = "A=secretref://dev/NOPE_ONE?optional\nB=secretref://dev/NOPE_TWO?default=b-default\n"
    code = "import os; print(os.environ.get('A'), os.environ['B'])"
    args = rws_args("--env-file", str(template(tmp_path, text)), command=python(code))
    proc = run(args, cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=issuer))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "None b-default\n"
    assert proxy.paths() == [
        ("POST", "/api/v1/vault/tokens/generate"),
        ("POST", "/api/v1/vault/dev/batch"),
        ("GET", "/api/v1/vault/dev?pattern=NOPE_%2A"),
        ("POST", "/api/v1/vault/tokens/revoke-self"),  # its one use was not needed
    ]
    (reader,) = minted_tokens(proxy)
    again = requests.get(f"{broker.url}/api/v1/vault/dev/PORT", headers=bearer(reader), timeout=10)
    assert again.json()["error"]["code"] == "token_revoked"


def test_a_versioned_reference_falls_back_where_the_key_did_not_exist_then(broker, proxy, tmp_path):
    old = broker.repo_commit[:12]
    issuer = broker.token(environment="dev", permissions=ISSUER)
    text = (
        f"THEN=secretref://dev/ADDED_LATER?version={old}&default=not%20yet\n"
        f"OLD_URL=secretref://dev/DATABASE_URL?optional&version={old}\n"
        "NOW=secretref://dev/ADDED_LATER?optional\n"
    )
    code = "import os; print(os.environ['THEN'], os.environ['OLD_URL'], os.environ['NOW'])"
    args = rws_args("--env-file", str(template(tmp_path, text)), "--no-masking",
                    command=python(code))  # fmt: skip
    proc = run(args, cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=issuer))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"not yet {OLD_DATABASE_URL} added-later-value\n"
    assert (
        f"vanta: THEN gets its default: secretref://dev/ADDED_LATER?version={old}&default=… "
        "does not exist\n"
    ) in proc.stderr
    (mint,) = mint_bodies(proxy)
    assert mint["usage_limit"] == 3  # the batch and two versioned reads, if all existed
    assert proxy.paths()[-1] == ("POST", "/api/v1/vault/tokens/revoke-self")  # one was not


@pytest.mark.parametrize(
    ("reference", "error"),
    [
        (
            "secretref://nope/KEY?optional",
            "secretref://nope/KEY?optional: 404 not_found: environment 'nope' not found",
        ),
        (  # a version that does not exist is not a key that does not exist
            "secretref://dev/PORT?version=0123456789abcdef&optional",
            "secretref://dev/PORT?version=0123456789abcdef&optional: 404 not_found: "
            "version not found",
        ),
        (  # nor is a key that did not exist then, when the reference is required
            "secretref://dev/ADDED_LATER?version={old}",
            "secretref://dev/ADDED_LATER?version={old}: 404 not_found: key 'ADDED_LATER' not found",
        ),
    ],
)
def test_only_a_missing_key_falls_back(broker, tmp_path, reference, error):
    marker = tmp_path / "ran"
    old = broker.repo_commit[:12]
    issuer = broker.token(environment="*", permissions=ISSUER)
    text = f"A=secretref://dev/PORT\nB={reference.format(old=old)}\n"
    args = rws_args("--env-file", str(template(tmp_path, text)), command=touch(marker))
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url, VANTA_TOKEN=issuer))
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.startswith(f"error: {error.format(old=old)}"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_a_reference_the_issuer_cannot_mint_for_is_an_error_not_a_fallback(broker, tmp_path):
    marker = tmp_path / "ran"
    issuer = broker.token(environment="dev", permissions=ISSUER)
    text = "A=secretref://dev/PORT\nB=secretref://prod/NOPE?default=x\n"
    args = rws_args("--env-file", str(template(tmp_path, text)), command=touch(marker))
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url, VANTA_TOKEN=issuer))
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.startswith("error: secretref://prod/NOPE?default=…: 403 scope_denied: ")


@pytest.mark.parametrize("key", ["API_KEYS/openai", "NOPE"])  # exists, or not: both denied
def test_a_key_outside_the_readers_pattern_is_an_error_not_a_fallback(broker, tmp_path, key):
    marker = tmp_path / "ran"
    reader = broker.token(environment="dev", key_pattern="DATABASE_*", permissions=READER)
    text = f"URL=secretref://dev/DATABASE_URL\nKEY=secretref://dev/{key}?default=x\n"
    args = rws_args("--env-file", str(template(tmp_path, text)), "--token", reader,
                    command=touch(marker))  # fmt: skip
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url))
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.startswith(
        f"error: secretref://dev/{key}?default=…: 403 scope_denied: "
        "a key is outside the token's pattern"
    )


def test_a_bad_token_or_an_unreachable_broker_is_an_error_not_a_fallback(broker, tmp_path):
    marker = tmp_path / "ran"
    path = template(tmp_path, "A=secretref://dev/NOPE?optional\n")
    args = rws_args("--env-file", str(path), "--token", "not.a.token", command=touch(marker))
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url))
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.startswith("error: 401 token_invalid: ")
    url = f"http://127.0.0.1:{free_port()}"
    args = rws_args("--env-file", str(path), "--token", "x", command=touch(marker))
    proc = run(args, cli_env(VANTA_BROKER_URL=url))
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr == f"error: cannot reach the broker at {url}: connection refused\n"


def test_a_reader_that_cannot_list_cannot_tell_a_missing_key(broker, tmp_path):
    marker = tmp_path / "ran"
    reader = broker.token(environment="dev", permissions=("secrets:read",))
    text = "URL=secretref://dev/DATABASE_URL\nKEY=secretref://dev/NOPE?optional\n"
    args = rws_args("--env-file", str(template(tmp_path, text)), "--token", reader,
                    command=touch(marker))  # fmt: skip
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url))
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.startswith(
        "error: secretref://dev/DATABASE_URL, secretref://dev/NOPE?optional: 404 not_found: "
        "key 'NOPE' not found (request_id "
    )
    assert proc.stderr.endswith(
        " (telling a missing key from a missing environment takes a reader with secrets:list)\n"
    )


@pytest.mark.parametrize(
    ("query", "shown", "reason"),
    [
        ("optional&default=hunter2", "optional&default=…", "optional and default= do not go"),
        ("default=hunter2&optional", "default=…&optional", "optional and default= do not go"),
        ("opt", "opt", "unknown query parameter 'opt'"),
        ("optional&", "optional&", "unknown query parameter ''"),
        ("optional=yes", "optional=yes", "optional takes no value"),
        ("optional&optional", "optional&optional", "optional is given twice"),
        ("default", "default", "default needs a value after ="),
        ("default=50%", "default=…", "default= holds a malformed percent-escape"),
        ("default=%zz1", "default=…", "default= holds a malformed percent-escape"),
        ("default=%4", "default=…", "default= holds a malformed percent-escape"),
        ("default=%ff%fe", "default=…", "default= holds percent-escapes that are not UTF-8"),
    ],
)
def test_bad_bindings_are_named_and_nothing_runs(broker, proxy, tmp_path, query, shown, reason):
    marker = tmp_path / "ran"
    path = template(tmp_path, f"A=secretref://dev/PORT\nB='secretref://dev/K?{query}'\n")
    issuer = broker.token(environment="*", permissions=ISSUER)
    proc = run(rws_args("--env-file", str(path), command=touch(marker)),
               cli_env(VANTA_BROKER_URL=proxy.url, VANTA_TOKEN=issuer))  # fmt: skip
    assert proc.returncode == 1 and not marker.exists()
    error = f"error: {path} line 2: secretref://dev/K?{shown}: {reason}"
    assert proc.stderr.startswith(error), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "hunter2" not in proc.stderr
    assert proxy.exchanges == []


# -- reading dotenv and references (pure) -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\n", {"A": "1"}),
        ("# comment\n\nexport A=secretref://dev/K # why\n", {"A": SecretRef("dev", "K")}),
        ('A = "secretref://dev/K?version=abc1234"\n', {"A": SecretRef("dev", "K", "abc1234")}),
        ("A='secretref://dev/K'\nB=x#y\n", {"A": SecretRef("dev", "K"), "B": "x#y"}),
        ('A="multi\nline \\"q\\""\n', {"A": 'multi\nline "q"'}),
        ("A=$HOME ${HOME}\n", {"A": "$HOME ${HOME}"}),
        ("A= secretref://dev/K?version=abc1234 \n", {"A": SecretRef("dev", "K", "abc1234")}),
        ("A=x secretref://dev/K\n", {"A": "x secretref://dev/K"}),  # only a whole value refers
    ],
)
def test_templates_read_as_dotenv_with_references(tmp_path, text, expected):
    loaded = load_templates([template(tmp_path, text)])
    assert {v.name: v.ref or v.value for v in loaded.variables} == expected
    assert loaded.refs == tuple(v for v in expected.values() if isinstance(v, SecretRef))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('\nA="open\n', 'app.env line 2 (A): the " never closes'),
        ("A='x' y\n", "app.env line 1 (A): text after the closing '"),
        ("A B=1\n", "app.env line 1: 'A B' is not a variable name"),
        ("A-B=1\n", "app.env line 1: 'A-B' is not a variable name"),
    ],
)
def test_malformed_templates_name_file_and_line(tmp_path, text, error):
    with pytest.raises(TemplateError) as caught:
        load_templates([template(tmp_path, text)])
    assert str(caught.value) == f"{tmp_path}/{error}"


def test_a_line_without_equals_is_a_warning_by_line_number_only(tmp_path):
    path = template(tmp_path, "A=1\nhunter2\nB=2\n")
    loaded = load_templates([path])
    assert [v.name for v in loaded.variables] == ["A", "B"]
    assert loaded.warnings == (f"{path} line 2: no '=' (skipped)",)


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("secretref://dev/DATABASE_URL", SecretRef("dev", "DATABASE_URL")),
        ("secretref://dev/API_KEYS/openai", SecretRef("dev", "API_KEYS/openai")),
        ("secretref://prod-eu/K?version=abc1234", SecretRef("prod-eu", "K", "abc1234")),
        ("secretref://dev/K?optional", SecretRef("dev", "K", optional=True)),
        ("secretref://dev/K?version=abc1234&optional", SecretRef("dev", "K", "abc1234", True)),
    ],
)
def test_references(text, ref):
    assert SecretRef.parse(text) == ref
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "default"),
    [
        ("secretref://dev/K?default=", ""),
        ("secretref://dev/K?default=plain", "plain"),
        ("secretref://dev/K?default=a%2Bb+c%26d%3De%25", "a+b+c&d=e%"),  # + is a plus sign
        ("secretref://dev/K?default=p%C3%A4ss%20w%c3%b6rd", "päss wörd"),
        ("secretref://dev/K?default=a=b#c d", "a=b#c d"),
    ],
)
def test_defaults_are_percent_decoded_and_never_shown(text, default):
    ref = SecretRef.parse(text)
    assert ref.default == default and not ref.optional and not ref.required
    assert str(ref) == "secretref://dev/K?default=…"
    assert "default" not in repr(ref)  # a repr in a log or traceback shows no default either


def test_version_and_default_combine_in_either_order():
    one = SecretRef.parse("secretref://dev/K?version=abc1234&default=x")
    other = SecretRef.parse("secretref://dev/K?default=x&version=abc1234")
    assert one == other == SecretRef("dev", "K", "abc1234", default="x")
    assert str(one) == "secretref://dev/K?version=abc1234&default=…"


@pytest.mark.parametrize(
    "text",
    [
        "secretref://",
        "secretref://dev/",
        "secretref://dev/a//b",
        "secretref://dev/../x",
        "secretref://tokens/x",
        "secretref://dev/x*",
        "secretref://dev/x?version=abc123",  # 6 digits
        "secretref://dev/x?version=abc1234&version=abc1234",
        "secretref://dev/x?version=abc1234&other=1",
        "secretref://dev/x?optional&default=1",
        "secretref://dev/x?default=%",
        "secretref://dev/x?Optional",
    ],
)
def test_malformed_references(text):
    with pytest.raises(TemplateError):
        SecretRef.parse(text)


@pytest.mark.parametrize(
    ("keys", "glob"),
    [
        (["DATABASE_URL"], "DATABASE_URL"),
        (["DATABASE_URL", "DATABASE_URL"], "DATABASE_URL"),
        (["DATABASE_URL", "DATABASE_USER"], "DATABASE_U*"),
        (["API_KEYS/openai", "API_KEYS/stripe"], "API_KEYS/*"),
        (["A", "AB"], "A*"),
        (["PORT", "DEBUG"], "*"),
    ],
)
def test_narrowest_glob(keys, glob):
    assert narrowest_glob(keys) == glob


def test_reads_are_planned_per_environment_with_one_batch_and_each_version():
    refs = [
        SecretRef("dev", "B"),
        SecretRef("prod", "X"),
        SecretRef("dev", "A"),
        SecretRef("dev", "B"),
        SecretRef("dev", "A", "abc1234"),
    ]
    dev, prod = plan_reads(refs)
    assert (dev.environment, dev.keys, dev.requests, dev.key_pattern) == ("dev", ("A", "B"), 2, "*")
    assert dev.versioned == (SecretRef("dev", "A", "abc1234"),)
    assert (prod.keys, prod.requests, prod.key_pattern) == (("X",), 1, "X")


def test_templates_name_a_variable_set_twice_within_one_file(tmp_path):
    path = template(tmp_path, "A=1\nB=2\nexport A=3\n")
    with pytest.raises(TemplateError) as caught:
        load_templates([path])
    assert str(caught.value) == f"A is set twice: {path} line 1 and {path} line 3"
