"""Reading what run-with-secrets injects, before anything runs: with the reader given as
--token, or with readers minted from VANTA_TOKEN (the issuer), each as narrow as it can
be: read and list, five minutes, one environment, the keys asked for, and exactly as many
uses as the requests it will make when every key exists. When an optional or default
reference's key does not exist, fewer reads are made: the minted reader is then revoked,
so that no reader keeps a use it was not needed for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import click

from cli.client import Batch, Value, VaultClient, VaultError
from cli.errors import CliError
from cli.run_references import REFERENCE_ERRORS, ReferenceFailed, plan_reads, read_references
from cli.run_secrets import READER_USAGE_LIMIT, reader_request
from cli.run_template import SecretRef


@dataclass
class Readers:
    """Hands out a client to read with: the --token one, or a freshly minted reader."""

    broker_url: str
    token: str | None = field(repr=False)  # --token; None: mint from VANTA_TOKEN
    subject: str  # the minted readers' subject, as audit records show it

    def reader(self, environment: str, key_pattern: str, uses: int) -> VaultClient:
        """A client that may read `key_pattern` in `environment` `uses` times.

        Raises CliError when there is no token to use, VaultError when minting fails."""
        token = self.token
        if token is None:
            issuer = VaultClient(self.broker_url)  # VANTA_TOKEN
            if not issuer.has_token:
                raise CliError(
                    "no token: pass --token (a reader) or set VANTA_TOKEN "
                    "(an issuer with tokens:issue)"
                )
            request = reader_request(environment, key_pattern, self.subject, uses)
            token = issuer.generate_token(request).access_token
        reader = VaultClient(self.broker_url, token)  # never falls back to VANTA_TOKEN
        if not reader.has_token:
            raise CliError("--token is empty")
        return reader

    def retire(self, reader: VaultClient, environment: str) -> None:
        """A reader minted here that keeps uses it will not need is revoked (a given
        --token is the caller's: left alone). A failure is a warning: nothing was lost."""
        if self.token is not None:
            return
        try:
            reader.revoke_self()
        except VaultError as exc:
            click.echo(
                f"vanta: warning: the reader minted for {environment} kept unused reads and "
                f"could not be revoked ({exc}); it expires within 5 minutes",
                err=True,
            )


def fetch_pattern(readers: Readers, environment: str, key_pattern: str) -> Batch:
    """Every key matching `key_pattern` (and the reader's pattern), in one batch."""
    reader = readers.reader(environment, key_pattern, READER_USAGE_LIMIT)
    return reader.read_batch(environment, pattern=key_pattern)


def fetch_references(readers: Readers, refs: tuple[SecretRef, ...]) -> Mapping[SecretRef, Value]:
    """The value of every reference (but the optional and default ones whose key does not
    exist): one batch per environment, one read per versioned reference. Raises
    ReferenceFailed naming the reference(s) that cannot be read."""
    values: dict[SecretRef, Value] = {}
    for reads in plan_reads(refs):
        try:
            reader = readers.reader(reads.environment, reads.key_pattern, reads.requests)
        except REFERENCE_ERRORS as exc:  # the issuer may not mint a reader for these
            raise ReferenceFailed(reads.refs, exc) from None
        read = read_references(reader, reads)
        values.update(read.values)
        if read.counted < reads.requests:
            readers.retire(reader, reads.environment)
    return values
