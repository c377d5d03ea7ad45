"""vanta-cli run-with-secrets: run a command with secrets in its environment, a file or a
named pipe, its output masked."""

from __future__ import annotations

import getpass
import os
import shutil
from pathlib import Path

import click

from cli.client import DEFAULT_BROKER_URL, VaultError
from cli.errors import CliError
from cli.names import check_option, environment_problem, pattern_problem
from cli.project_defaults import FILE_NAME, DefaultsError, load_defaults
from cli.run.fetch import Readers, fetch_pattern, fetch_references
from cli.run.fifo import FifoInjection
from cli.run.formats import FORMATS
from cli.run.guard import GuardError, make_undumpable
from cli.run.inject import EnvInjection, FileInjection, Injection, InjectionError
from cli.run.injected import (
    InjectedVar,
    NameClash,
    RefusedVariable,
    combine,
    describe,
    describe_sources,
    variables_for,
)
from cli.run.mask import MIN_MASKED_LENGTH, mask_plan
from cli.run.process import ChildIO, InheritIO, signal_relay
from cli.run.pump import MaskedIO
from cli.run.references import ReferenceFailed
from cli.run.template import TemplateError, fallbacks, load_templates, template_variables
from cli.tokens.input import read_token_file

EXAMPLES = """\b
Examples:
  # mint a one-use reader from VANTA_TOKEN, inject dev's DATABASE_* as env vars
  vanta-cli run-with-secrets --environment dev --key-pattern 'DATABASE_*' \\
      -- python manage.py migrate

\b
  # `run` is the same command; .vanta.yaml in this directory or above may hold
  #   defaults: {environment: dev, key_pattern: "*"}
  vanta-cli run -- npm start

\b
  # a template: app.env holds lines like DATABASE_URL=secretref://prod/DATABASE_URL
  # (and ?version=<commit> pins one); plain lines like LOG_LEVEL=info pass through;
  # REPLICA_URL=secretref://prod/REPLICA_URL?optional stays unset if that key does not
  # exist, LOG_LEVEL=secretref://prod/LOG_LEVEL?default=info%20verbose takes the default
  vanta-cli run-with-secrets --env-file app.env -- python app.py

\b
  # a dotenv file instead; the app loads $VANTA_SECRETS_FILE itself, e.g. with
  # python-dotenv: dotenv_values(os.environ["VANTA_SECRETS_FILE"], interpolate=False)
  vanta-cli run-with-secrets --environment prod --key-pattern '*' --inject-as file \\
      -- python app.py

\b
  # the same through a named pipe that can be read once, never written to disk; as JSON
  vanta-cli run-with-secrets --env-file app.env --inject-as fifo -- python app.py
  vanta-cli run --inject-as file --format json -- sh -c 'jq . "$VANTA_SECRETS_FILE"'

\b
  # an interactive program keeps its terminal (its output is then not masked)
  vanta-cli run-with-secrets --env-file app.env --no-masking -- psql

\b
  # read with a token you already hold (VANTA_TOKEN is not used), from a file or from
  # standard input: a token on the command line is visible to every local user (ps).
  # A VANTA_TOKEN that cannot mint (no tokens:issue) is used as the reader itself.
  vanta-cli run-with-secrets --environment dev --key-pattern '*' --token-file reader.jwt -- env
  pass show ci/reader | vanta-cli run-with-secrets --env-file app.env --token-file - \\
      -- python app.py

\b
  # a key named PATH, LD_PRELOAD, BASH_ENV, VANTA_*, ... is refused unless allowed by name
  vanta-cli run-with-secrets --environment dev --key-pattern '*' --allow-variable PATH -- env
"""


@click.command(
    "run-with-secrets",
    epilog=EXAMPLES,
    context_settings={"allow_interspersed_args": False},
)
@click.option(
    "--environment",
    help=f"The environment to read --key-pattern from (default: {FILE_NAME}'s "
    "defaults.environment).",
)
@click.option(
    "--key-pattern",
    help="Glob over key names ('*' any run, '?' one character); every match is injected "
    f"(default: {FILE_NAME}'s defaults.key_pattern).",
)
@click.option(
    "--env-file",
    "env_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A dotenv template (repeatable): values written secretref://ENV/KEY become that "
    "secret, other lines pass through as they are. A query pins a version (?version=COMMIT) "
    "or makes a missing key fall back: ?optional leaves the variable unset, "
    "?default=VALUE (percent-encoded) sets VALUE; join them with &.",
)
@click.option(
    "--inject-as",
    type=click.Choice(["env", "file", "fifo"]),
    default="env",
    show_default=True,
    help="env: one variable per key (API_KEYS/openai -> API_KEYS_OPENAI). "
    "file: a 0600 file at $VANTA_SECRETS_FILE (--format), removed when the command ends. "
    "fifo: the same text through a 0600 named pipe, never written to disk.",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(FORMATS),
    help='With --inject-as file or fifo: the text\'s format, NAME="value" lines (dotenv, '
    "the default), a JSON object or a YAML mapping of the same names and values.",
)
@click.option(
    "--max-reads",
    type=click.IntRange(min=1),
    help="With --inject-as fifo: how many times the pipe can be read (default 1).",
)
@click.option(
    "--masking/--no-masking",
    default=True,
    show_default=True,
    help="Conceal every injected value in the command's stdout and stderr. --no-masking "
    "hands the command the terminal itself.",
)
@click.option(
    "--token",
    "reader_token",
    help="Read with this token (secrets:read and secrets:list). Without it, readers good "
    "for 5 minutes and just the reads needed are minted with VANTA_TOKEN as the issuer "
    "(a VANTA_TOKEN that cannot mint is used as the reader itself). Other local users "
    "can see it in the process list: prefer --token-file.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="Read the reader token (as --token) from this file, or from standard input for "
    "'-' (read to its end: the command's standard input is then empty).",
)
@click.option(
    "--allow-variable",
    "allowed",
    metavar="NAME",
    multiple=True,
    help="Let a key set NAME although it changes how a program starts (PATH, IFS, "
    "BASH_ENV, ENV, LD_*, DYLD_*, VANTA_*, PYTHONPATH, NODE_OPTIONS, ...; repeatable).",
)
@click.option(
    "--broker-url",
    envvar="VANTA_BROKER_URL",
    default=DEFAULT_BROKER_URL,
    show_default=True,
    help="The broker [env: VANTA_BROKER_URL].",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run_with_secrets(
    ctx: click.Context,
    environment: str | None,
    key_pattern: str | None,
    env_files: tuple[Path, ...],
    inject_as: str,
    file_format: str | None,
    max_reads: int | None,
    masking: bool,
    reader_token: str | None,
    token_file: str | None,
    allowed: tuple[str, ...],
    broker_url: str,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with the secrets matching --key-pattern, or named by --env-file
    templates, injected. `vanta-cli run` is the same command.

    Every secret is fetched before COMMAND starts; if that fails, COMMAND never runs. Its
    stdout and stderr show <concealed by vanta> wherever an injected value would appear.
    SIGINT, SIGTERM and SIGHUP are passed on to COMMAND, and its exit code is this
    command's (128+N if signal N killed it); COMMAND is killed if this command is
    killed. COMMAND is looked up on this command's PATH, never on one a key sets. Key
    names, never values, are reported on stderr.

    Without --environment, --key-pattern or --env-file, the nearest .vanta.yaml (this
    directory or above) gives them: `defaults: {environment: dev, key_pattern: "*"}`;
    options given win, and with --env-file alone no default is used.
    """
    environment, key_pattern = _with_defaults(environment, key_pattern, env_files)
    _check_usage(environment, key_pattern, env_files, inject_as, file_format, max_reads)
    if token_file is not None and reader_token is not None:
        raise click.UsageError("give --token or --token-file, not both")
    try:
        make_undumpable()  # before any token is read, and long before the command starts
    except GuardError as exc:
        raise CliError(str(exc)) from None
    token_name = "--token"
    if token_file is not None:
        reader_token = read_token_file(token_file)
        shown = "standard input" if token_file == "-" else token_file
        token_name = f"the token of --token-file {shown}"
    elif reader_token is not None and not reader_token.strip():
        raise CliError("--token is empty")
    executable = _find_command(command[0])
    try:
        templates = load_templates(env_files)
    except TemplateError as exc:
        raise CliError(str(exc)) from None
    for warning in templates.warnings:
        click.echo(f"vanta: warning: {warning}", err=True)
    issuer = (os.environ.get("VANTA_TOKEN") or "").strip() or None
    readers = Readers(broker_url, reader_token, _subject(), issuer, token_name)
    if readers.reading_with_issuer:
        click.echo(
            "vanta: VANTA_TOKEN cannot mint readers (no tokens:issue, or a usage limit): "
            "reading with it directly",
            err=True,
        )
    pattern_vars: tuple[InjectedVar, ...] = ()
    at = ""
    try:
        if environment is not None and key_pattern is not None:
            batch = fetch_pattern(readers, environment, key_pattern)
            if not batch.values:
                raise CliError(
                    f"no key in {environment} matches {key_pattern!r} inside the token's "
                    "scope: nothing to inject"
                )
            at = f" at {batch.version[:12]}" if batch.version else ""
            pattern_vars = variables_for(environment, batch.values, allowed)
        values = fetch_references(readers, templates.refs)
        variables = combine(pattern_vars, template_variables(templates.variables, values))
        for note in fallbacks(templates.variables, values):
            click.echo(f"vanta: {note}", err=True)
        injection = _injection(inject_as, variables, max_reads, file_format or "dotenv")
    except VaultError as exc:
        raise CliError(readers.explain(exc)) from None
    except ReferenceFailed as exc:
        explained = readers.explain(exc.error)
        raise CliError(str(exc).replace(str(exc.error), explained, 1)) from None
    except (NameClash, RefusedVariable, InjectionError) as exc:
        raise CliError(str(exc)) from None
    io = _child_io(variables) if masking else InheritIO()
    try:
        with signal_relay() as relay, injection as added:
            if env_files:
                report = f"{len(variables)} variable(s) {injection.how}: "
                report += describe_sources(variables)
            else:
                report = f"{len(variables)} key(s) from {environment}{at} {injection.how}: "
                report += describe(variables)
            click.echo(f"vanta: injecting {report}", err=True)
            status = relay.run(command, {**child_environment(), **added}, io, executable)
    except InjectionError as exc:
        raise CliError(str(exc)) from None
    except FileNotFoundError:
        raise CliError(f"{command[0]}: command not found", exit_code=127) from None
    except OSError as exc:
        raise CliError(f"{command[0]}: cannot run: {exc.strerror}", exit_code=126) from None
    ctx.exit(status)


def _find_command(name: str) -> str:
    """Where the command `name` is, found on the CLI's own PATH, never on the one the
    command may get from a key (a name with a slash is used as it is). Exit 127 if none."""
    if "/" in name:
        return name
    found = shutil.which(name)
    if found is None:
        raise CliError(f"{name}: command not found", exit_code=127)
    return found


def _with_defaults(
    environment: str | None, key_pattern: str | None, env_files: tuple[Path, ...]
) -> tuple[str | None, str | None]:
    """--environment and --key-pattern, completed from .vanta.yaml's defaults (unless only
    templates were asked for); says on stderr what came from the file."""
    if env_files and environment is None and key_pattern is None:
        return None, None
    if environment is not None and key_pattern is not None:
        return environment, key_pattern
    try:
        defaults = load_defaults()
    except DefaultsError as exc:
        raise CliError(str(exc)) from None
    taken = []
    if environment is None and defaults.environment is not None:
        environment = defaults.environment
        taken.append(f"environment {environment}")
    if key_pattern is None and defaults.key_pattern is not None:
        key_pattern = defaults.key_pattern
        taken.append(f"key pattern {key_pattern}")
    if taken:
        click.echo(f"vanta: {' and '.join(taken)} from {defaults.source}", err=True)
    return environment, key_pattern


def _check_usage(
    environment: str | None,
    key_pattern: str | None,
    env_files: tuple[Path, ...],
    inject_as: str,
    file_format: str | None,
    max_reads: int | None,
) -> None:
    """Option combinations Click cannot express; a UsageError exits 2."""
    if (environment is None) != (key_pattern is None):
        missing = "--key-pattern" if key_pattern is None else "--environment"
        raise click.UsageError(
            f"--environment and --key-pattern go together: give {missing} too "
            f"(or name it in {FILE_NAME}: defaults: key_pattern / environment)"
        )
    if environment is None and not env_files:
        raise click.UsageError(
            "give --environment and --key-pattern, or --env-file (or name defaults in "
            f'{FILE_NAME}: defaults: {{environment: dev, key_pattern: "*"}})'
        )
    if environment is not None and key_pattern is not None:
        check_option(environment_problem(environment), "--environment")
        check_option(pattern_problem(key_pattern), "--key-pattern")
    if max_reads is not None and inject_as != "fifo":
        raise click.UsageError("--max-reads only goes with --inject-as fifo")
    if file_format is not None and inject_as == "env":
        raise click.UsageError("--format only goes with --inject-as file or fifo")


def _injection(
    kind: str, variables: tuple[InjectedVar, ...], max_reads: int | None, fmt: str
) -> Injection:
    """The injection for `--inject-as kind`."""
    if kind == "env":
        return EnvInjection(variables)
    if kind == "file":
        return FileInjection(variables, _private_parent(), fmt)
    return FifoInjection(variables, max_reads or 1, _private_parent(), fmt)


def _child_io(variables: tuple[InjectedVar, ...]) -> ChildIO:
    """Masking for the child's output; the secrets too short to be masked said by name."""
    plan = mask_plan(variables)
    for var in plan.too_short:
        click.echo(
            f"vanta: warning: {var.name} ({var.source}) is shorter than {MIN_MASKED_LENGTH} "
            "characters and is not masked in the output",
            err=True,
        )
    return MaskedIO(plan.secrets)


def _private_parent() -> str | None:
    """Where the secrets file's directory goes: the per-user runtime directory (a tmpfs on
    most Linux systems, so nothing reaches a disk) when there is one, else TMPDIR or /tmp."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return runtime if runtime and os.path.isdir(runtime) else None


# The power to mint: the issuer token, and the signing keys that make tokens offline.
MINTING_VARIABLES = frozenset({"VANTA_TOKEN", "VANTA_JWT_SECRET_KEY", "VANTA_JWT_SECRET_KEYS"})


def child_environment() -> dict[str, str]:
    """The CLI's environment less the issuer token and signing keys: the command gets its
    secrets, not the power to mint more."""
    return {k: v for k, v in os.environ.items() if k not in MINTING_VARIABLES}


def _subject() -> str:
    """Who the minted readers are for, as audit records will show it."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        return "run-with-secrets"
    return f"run-with-secrets:{user}"[:128]
