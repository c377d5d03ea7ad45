"""`make run`: the broker on the demo secrets with the development key, for trying it out.

Creates (once) a random development signing key in state/, mints an admin token with it,
prints how to use it, then becomes `vanta-broker serve`.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from broker.config import Keyring  # noqa: E402
from broker.scope import PERMISSIONS, Scope  # noqa: E402
from broker.tokens import MintRequest, mint  # noqa: E402

HOST, PORT = "127.0.0.1", 8200


def dev_signing_key() -> str:
    path = ROOT / "state" / "dev-signing-key"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def main() -> None:
    key = dev_signing_key()
    env = {
        **os.environ,
        "VANTA_JWT_SECRET_KEY": key,
        "VANTA_SOPS_FILES_PATH": str(ROOT / "secrets"),
        "SOPS_AGE_KEY_FILE": str(ROOT / "keys" / "dev.agekey"),
        "VANTA_AUDIT_LOG": str(ROOT / "audit" / "access.jsonl"),
        "VANTA_STATE_DB": str(ROOT / "state" / "broker.db"),
    }
    env.pop("VANTA_JWT_SECRET_KEYS", None)
    request = MintRequest("dev-admin", Scope("*", "*", PERMISSIONS), 1440, None)
    token, _ = mint(
        request, Keyring.from_env(env), issuer="vanta-vault", audience="vanta-vault-api"
    )
    url = f"http://{HOST}:{PORT}"
    venv_bin = ROOT / ".venv" / "bin"
    cli = shlex.quote(str(venv_bin / "vanta-cli"))
    print(
        f"""
Vanta Vault (development) on {url}
  secrets:  {ROOT / "secrets"} (served from Git HEAD)
  age key:  keys/dev.agekey (DEVELOPMENT ONLY)
  audit:    audit/access.jsonl

Admin token (every environment, every key, every permission; 24 hours):

  export VANTA_TOKEN={token}
  export VANTA_BROKER_URL={url}

Try it (in another terminal, after the two exports):

  curl -s -H "Authorization: Bearer $VANTA_TOKEN" {url}/api/v1/vault/dev/DATABASE_URL
  {cli} run-with-secrets --environment dev --key-pattern '*' -- env

Ctrl-C stops the broker.
""",
        flush=True,
    )
    broker = str(venv_bin / "vanta-broker")
    os.execve(broker, [broker, "serve", "--host", HOST, "--port", str(PORT)], env)  # noqa: S606


if __name__ == "__main__":
    main()
