"""`--inject-as file|fifo --format dotenv|json|yaml`: the same names and values, read back
byte for byte by a standard reader, through a real broker and real child processes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from dotenv import dotenv_values
from ruamel.yaml import YAML
from support.cli import AWKWARD, READER, Broker, cli_env, python, run, rws_args, serve_secrets

from cli.run.formats import FORMATS, render
from cli.run.injected import variables_for

VARIABLES = variables_for("awkward", {**AWKWARD, "PORT": 8080, "DEBUG": True})
EXPECTED = {var.name: var.value for var in VARIABLES}
READ_BACK = {
    "dotenv": lambda text: dict(dotenv_values(stream=io.StringIO(text), interpolate=False)),
    "json": json.loads,
    "yaml": lambda text: YAML(typ="safe").load(text),
}
COPY_FILE = "import os, sys; sys.stdout.write(open(os.environ['VANTA_SECRETS_FILE']).read())"


@pytest.fixture(scope="module")
def broker(tmp_path_factory, age_key, age_key_file) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("formats")
    secrets = {**AWKWARD, "PORT": 8080, "DEBUG": True}
    with serve_secrets(root, age_key, age_key_file, awkward=secrets) as running:
        yield running


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_gives_back_every_value_as_text_in_injection_order(fmt):
    text = render(((var.name, var.value) for var in VARIABLES), fmt)
    read = READ_BACK[fmt](text)
    assert read == EXPECTED and list(read) == list(EXPECTED)
    assert read["PORT"] == "8080" and read["DEBUG"] == "true"  # strings, as in the environment


@pytest.mark.parametrize("inject_as", ["file", "fifo"])
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_the_command_reads_the_format_asked_for(broker, inject_as, fmt):
    reader = broker.token(environment="awkward", permissions=READER)
    args = rws_args("--environment", "awkward", "--key-pattern", "*", "--inject-as", inject_as,
                    "--format", fmt, "--no-masking", "--token", reader,
                    command=python(COPY_FILE))  # fmt: skip
    proc = run(args, cli_env(VANTA_BROKER_URL=broker.url))
    assert proc.returncode == 0, proc.stderr
    assert READ_BACK[fmt](proc.stdout) == EXPECTED
    assert {"json": "JSON", "yaml": "YAML"}[fmt] in proc.stderr  # the report says how
    assert f"secrets.{fmt}" not in proc.stderr  # the path is the command's to know


def test_format_without_a_file_or_pipe_is_a_usage_error():
    args = rws_args("--environment", "dev", "--key-pattern", "*", "--format", "json",
                    command=["true"])  # fmt: skip
    proc = run(args, cli_env())
    assert proc.returncode == 2
    assert "--format only goes with --inject-as file or fifo" in proc.stderr
