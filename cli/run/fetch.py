"""Reading what run-with-secrets injects, before anything runs: with the reader given as
--token or --token-file, or with readers minted from VANTA_TOKEN (the issuer), each as
narrow as it can be: read and list, five minutes, one environment, the keys asked for, and
exactly as many uses as the requests it will make when every key exists. A VANTA_TOKEN
that cannot mint is itself the reader. When an optional or default
reference's key does not exist, fewer reads are made: the minted reader is then revoked,
so that no reader keeps a use it was not needed for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import click

from cli.client import Batch, Value, VaultClient, VaultError
from cli.errors import CliError
from cli.run.injected import READER_USAGE_LIMIT, reader_request
from cli.run.references import REFERENCE_ERRORS, ReferenceFailed, plan_reads, read_references
from cli.run.template import SecretRef
from cli.tokens.claims import read_claims
from cli.tokens.hints import TokenSource, explain


@dataclass
class Readers:
    """Hands out a client to read with: the reader given (--token, --token-file), or one
    freshly minted with VANTA_TOKEN as the issuer, or VANTA_TOKEN itself when it cannot
    mint (no tokens:issue, or a usage limit) but may read, as DOPPLER_TOKEN works."""

    broker_url: str
    token: str | None = field(repr=False)  # the reader given; None: VANTA_TOKEN decides
    subject: str  # the minted readers' subject, as audit records show it
    issuer: str | None = field(default=None, repr=False)  # VANTA_TOKEN
    token_name: str = "--token"  # how the reader was given, for messages
    minting: bool = field(default=False, init=False)  # a mint is under way (for messages)

    def __post_init__(self) -> None:
        self._reads_with_issuer = False
        if self.token is None and self.issuer is not None:
            claims = read_claims(self.issuer)
            self._reads_with_issuer = claims is not None and not claims.can_mint

    @property
    def mints(self) -> bool:
        """Whether readers are minted (else a token is used as it is)."""
        return self.token is None and not self._reads_with_issuer

    @property
    def reading_with_issuer(self) -> bool:
        return self._reads_with_issuer

    def reader(self, environment: str, key_pattern: str, uses: int) -> VaultClient:
        """A client that may read `key_pattern` in `environment` `uses` times.

        Raises CliError when there is no token to use, VaultError when minting fails."""
        if self.token is not None:
            return VaultClient(self.broker_url, self.token)  # never falls back to VANTA_TOKEN
        if self.issuer is None:
            raise CliError(
                "no token: set VANTA_TOKEN (an issuer with tokens:issue, or a reader), "
                "or give a reader with --token-file FILE"
            )
        if self._reads_with_issuer:
            return VaultClient(self.broker_url, self.issuer)
        issuer = VaultClient(self.broker_url, self.issuer)
        request = reader_request(environment, key_pattern, self.subject, uses)
        self.minting = True
        token = issuer.generate_token(request).access_token
        self.minting = False
        return VaultClient(self.broker_url, token)

    def explain(self, exc: VaultError) -> str:
        """The error with what to do, for the token whose request failed."""
        if self.minting or self._reads_with_issuer:
            return explain(exc, TokenSource("VANTA_TOKEN", self.issuer), minting=self.minting)
        if self.token is not None:
            return explain(exc, TokenSource(self.token_name, self.token))
        return explain(exc)

    def retire(self, reader: VaultClient, environment: str) -> None:
        """A reader minted here that keeps uses it will not need is revoked (a token given,
        or VANTA_TOKEN read with directly, is the caller's: left alone). A failure is a
        warning: nothing was lost."""
        if not self.mints:
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
