"""Real things for the Node SDK's tests, built with the Python suite's own helpers
(tests/support/repos.py, tests/support/agekeys.py) so that sops and age are not
re-implemented in JS.
Run with the project's venv; prints one JSON object.

    fixtures.py repo DIR   an age identity and a Git repository of sops files: dev and prod,
                           a second commit that changes dev/PORT, and a `broken` environment
                           that cannot be decrypted (503 decrypt_failed)
    fixtures.py pki DIR    a CA, a broker certificate for 127.0.0.1 and a client certificate
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))

from support.agekeys import generate_age_key  # noqa: E402
from support.repos import DEV_SECRETS, PROD_SECRETS, make_secrets_repo  # noqa: E402

NEW_PORT = 9090


def repo(directory: Path) -> dict[str, object]:
    key = generate_age_key()
    identity = directory / "identity.txt"
    identity.write_text(f"# test identity\n{key.identity}\n")
    identity.chmod(0o600)
    secrets = make_secrets_repo(directory / "repo", key.recipient)
    secrets.write("dev", DEV_SECRETS)
    secrets.write("prod", PROD_SECRETS)
    (secrets.secrets_dir / "broken.enc.yaml").write_text("A: plain\nsops: {}\n")
    secrets.commit("secrets: add dev and prod", date="2026-01-02T03:04:05+00:00")
    dev = {**DEV_SECRETS, "PORT": NEW_PORT}
    secrets.write("dev", dev)
    secrets.commit("secrets: dev/PORT", date="2026-02-03T04:05:06+00:00")
    return {
        "repo": str(secrets.path),
        "secretsDir": str(secrets.secrets_dir),
        "ageKeyFile": str(identity),
        "commits": secrets.commits,  # oldest first
        "dev": dev,
        "firstDev": DEV_SECRETS,
        "prod": PROD_SECRETS,
    }


def pki(directory: Path) -> dict[str, str]:
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("billing-api@example.com", common_name="billing-api")
    paths = {
        name: directory / f"{name}.pem"
        for name in ("ca", "server", "server-key", "client", "client-cert", "client-key", "other")
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    trustme.CA().cert_pem.write_to_path(str(paths["other"]))  # trusts nothing we meet
    server.cert_chain_pems[0].write_to_path(str(paths["server"]))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(paths["server"]), append=True)
    server.private_key_pem.write_to_path(str(paths["server-key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client-cert"]))
    client.private_key_pem.write_to_path(str(paths["client-key"]))
    return {name: str(path) for name, path in paths.items()}


if __name__ == "__main__":
    command, directory = sys.argv[1], Path(sys.argv[2])
    directory.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"repo": repo, "pki": pki}[command](directory)))
