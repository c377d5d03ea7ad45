"""`make run`: the broker on the demo secrets with the development key, for trying it out.

Checks that the port is free (`make run PORT=8300`, or VANTA_PORT), creates (once) a random
development signing key in state/, mints an admin token with it, prints how to use it and
writes the same two exports to state/dev.env (for `source state/dev.env`), then becomes
`vanta-broker serve`. tests/test_readme_tour.py starts the README's broker through here.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from broker.config import Keyring  # noqa: E402
from broker.scope import PERMISSIONS, Scope  # noqa: E402
from broker.serving.command import port_taken  # noqa: E402
from broker.tokens.claims import MintRequest, mint  # noqa: E402

HOST = "127.0.0.1"
DEFAULT_PORT = 8200
ADMIN_TTL_MINUTES = 1440
EXPORTS_FILE = Path("state") / "dev.env"


class DevRunError(Exception):
    """Why `make run` cannot start (one line)."""


def dev_port(environ: Mapping[str, str]) -> int:
    """The port from VANTA_PORT (what `make run PORT=N` sets), else 8200."""
    raw = environ.get("VANTA_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise DevRunError(f"PORT (VANTA_PORT) must be a port number from 1 to 65535, not {raw!r}")
    return int(raw)


def check_port_free(host: str, port: int) -> None:
    """DevRunError, before anything is printed, when the address cannot be listened on."""
    why = port_taken(host, port)
    if why is not None:
        raise DevRunError(
            f"cannot listen on {host}:{port}: {why} (another broker? choose another port: "
            f"make run PORT={port + 100})"
        )


def dev_signing_key(root: Path) -> str:
    path = root / "state" / "dev-signing-key"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def broker_environment(root: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The broker's environment: the demo secrets, the development key, state in `root`."""
    env = {
        **environ,
        "VANTA_JWT_SECRET_KEY": dev_signing_key(root),
        "VANTA_SOPS_FILES_PATH": str(root / "secrets"),
        "SOPS_AGE_KEY_FILE": str(root / "keys" / "dev.agekey"),
        "VANTA_AUDIT_LOG": str(root / "audit" / "access.jsonl"),
        "VANTA_STATE_DB": str(root / "state" / "broker.db"),
    }
    env.pop("VANTA_JWT_SECRET_KEYS", None)
    return env


def admin_token(env: Mapping[str, str]) -> str:
    """A token for every environment, key and permission, good for a day."""
    request = MintRequest("dev-admin", Scope("*", "*", PERMISSIONS), ADMIN_TTL_MINUTES, None)
    token, _ = mint(
        request, Keyring.from_env(env), issuer="vanta-vault", audience="vanta-vault-api"
    )
    return token


def write_exports(root: Path, token: str, url: str) -> Path:
    """state/dev.env (0600): the two exports, for `source state/dev.env`."""
    path = root / EXPORTS_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"export VANTA_TOKEN={token}\nexport VANTA_BROKER_URL={url}\n")
    return path


def main() -> None:
    try:
        port = dev_port(os.environ)
        check_port_free(HOST, port)
    except DevRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    env = broker_environment(ROOT, os.environ)
    token = admin_token(env)
    url = f"http://{HOST}:{port}"
    write_exports(ROOT, token, url)
    venv_bin = Path(sys.executable).parent
    cli = shlex.quote(os.path.relpath(venv_bin / "vanta-cli"))
    print(
        f"""
Vanta Vault (development) on {url}
  secrets:  {ROOT / "secrets"} (served from Git HEAD)
  age key:  keys/dev.agekey (DEVELOPMENT ONLY)
  audit:    audit/access.jsonl

Admin token (every environment, every key, every permission; 24 hours), also written to
{EXPORTS_FILE} for `source {EXPORTS_FILE}`:

  export VANTA_TOKEN={token}
  export VANTA_BROKER_URL={url}

Try it (in another terminal, after the two exports):

  echo "Authorization: Bearer $VANTA_TOKEN" | curl -s -H @- {url}/api/v1/vault/dev/DATABASE_URL
  {cli} get dev DATABASE_URL

Ctrl-C stops the broker.
""",
        flush=True,
    )
    broker = str(venv_bin / "vanta-broker")
    os.execve(broker, [broker, "serve", "--host", HOST, "--port", str(port)], env)  # noqa: S606


if __name__ == "__main__":
    main()
