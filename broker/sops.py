"""Decrypting SOPS documents with the real `sops` binary, cached by content id.

A content id (a Git blob id, or a hash of the file's bytes) names immutable bytes, so a
cached document can never be stale: a new commit brings a new id.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Union

import orjson

from broker.errors import DecryptFailed
from broker.scope import is_key

log = logging.getLogger("vanta.sops")

Value = Union[str, int, float, bool]
Document = Mapping[str, Value]  # key path ("API_KEYS/openai") -> leaf value

DECRYPT_TIMEOUT_SECONDS = 30


def flatten(tree: object, prefix: str = "") -> dict[str, Value]:
    """Leaves of a mapping tree keyed by their '/'-joined path; lists, nulls and keys
    outside the key alphabet are not addressable and are left out."""
    out: dict[str, Value] = {}
    if not isinstance(tree, Mapping):
        return out
    for name, value in tree.items():
        if not isinstance(name, str):
            name = str(name).lower() if isinstance(name, bool) else str(name)
        path = f"{prefix}{name}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "/"))
        elif isinstance(value, (str, int, float, bool)) and is_key(path):
            out[path] = value
    return out


def run_sops_decrypt(
    sops_bin: str, data: bytes, env: Mapping[str, str] | None = None
) -> dict[str, Value]:
    """Decrypt one SOPS YAML document given as bytes (fed on stdin, never a temp file)."""
    try:
        proc = subprocess.run(
            [sops_bin, "decrypt", "--input-type", "yaml", "--output-type", "json", "/dev/stdin"],
            input=data,
            env=env,
            capture_output=True,
            timeout=DECRYPT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("sops could not run: %s", type(exc).__name__)
        raise DecryptFailed() from None
    if proc.returncode != 0:
        log.error("sops decrypt failed (exit %d): %s", proc.returncode, _reason(proc.stderr))
        raise DecryptFailed()
    try:
        return flatten(orjson.loads(proc.stdout))
    except orjson.JSONDecodeError:
        log.error("sops decrypt printed something that is not JSON")
        raise DecryptFailed() from None


def _reason(stderr: bytes) -> str:
    """A short, path-free reason for the operator's log."""
    text = stderr.decode("utf-8", "replace")
    if "MAC mismatch" in text:
        return "MAC mismatch (the file was altered)"
    if "data key" in text or "no identity matched" in text or "failed to decrypt" in text.lower():
        return "no configured key can decrypt this file"
    if "sops metadata not found" in text:
        return "the file has no sops metadata"
    return "see sops for details"


class Decryptor:
    """Decrypts documents by content id; with `cache`, each id is decrypted once per process.

    Concurrent first reads of one id wait for a single sops run.
    """

    def __init__(
        self,
        sops_bin: str,
        cache: bool = True,
        max_entries: int = 128,
        age_key_file: str | None = None,
    ) -> None:
        self.sops_bin = sops_bin
        # sops reads its own settings (KMS, GnuPG, age) from the environment it inherits;
        # an age key file named in the config is handed to it explicitly.
        self.env = None if age_key_file is None else {**os.environ, "SOPS_AGE_KEY_FILE": age_key_file}
        self.cache_enabled = cache
        self.max_entries = max_entries
        self._cache: OrderedDict[str, dict[str, Value]] = OrderedDict()
        self._lock = threading.Lock()
        self._inflight: dict[str, threading.Lock] = {}
        self.decrypt_count = 0
        self.cache_hits = 0

    def document(self, content_id: str, load: Callable[[], bytes]) -> dict[str, Value]:
        """The decrypted document with this content id; `load` gives its encrypted bytes."""
        if not self.cache_enabled:
            return self._decrypt(load())
        with self._lock:
            doc = self._cache.get(content_id)
            if doc is not None:
                self._cache.move_to_end(content_id)
                self.cache_hits += 1
                return doc
            gate = self._inflight.setdefault(content_id, threading.Lock())
        with gate:
            with self._lock:
                doc = self._cache.get(content_id)
                if doc is not None:
                    self.cache_hits += 1
                    return doc
            try:
                doc = self._decrypt(load())
            finally:
                with self._lock:
                    self._inflight.pop(content_id, None)
            with self._lock:
                self._cache[content_id] = doc
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
            return doc

    def _decrypt(self, data: bytes) -> dict[str, Value]:
        self.decrypt_count += 1
        return run_sops_decrypt(self.sops_bin, data, self.env)
