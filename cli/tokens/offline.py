"""Minting without a broker (`token generate --offline`): the broker's own code, run locally.

Holding the signing key is holding root, so this is how the first issuer token is made.
The request is checked by `MintRequest.from_json` and signed by `mint`, and the answer is
`mint_answer` serialised as the broker serialises it, so offline output cannot drift from
the broker's.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from broker import errors as broker_errors
from broker.config import ConfigError, Keyring
from broker.tokens.claims import MintRequest, mint, mint_answer
from cli.client import BadRequest, MintedToken, TokenRequest, VaultError

DEFAULT_ISSUER = "vanta-vault"
DEFAULT_AUDIENCE = "vanta-vault-api"
DEFAULT_MAX_TTL_MINUTES = 1440


class OfflineMintError(VaultError):
    """The local signing configuration is missing or wrong (names the variable)."""


def mint_offline(request: TokenRequest, environ: Mapping[str, str]) -> MintedToken:
    """Sign `request` with VANTA_JWT_SECRET_KEY (or the first of VANTA_JWT_SECRET_KEYS).

    Honours VANTA_JWT_ISSUER, VANTA_JWT_AUDIENCE and VANTA_MAX_TTL_MINUTES like the broker.
    Raises BadRequest (400 bad_request, as the broker would) for a bad request and
    OfflineMintError for a bad configuration.
    """
    try:
        keyring = Keyring.from_env(environ)
    except ConfigError as exc:
        raise OfflineMintError(str(exc)) from None
    try:
        wanted = MintRequest.from_json(request.to_json(), _max_ttl(environ))
    except broker_errors.BadRequest as exc:
        raise BadRequest(exc.status, exc.code, exc.message, None) from None
    token, claims = mint(
        wanted,
        keyring,
        issuer=environ.get("VANTA_JWT_ISSUER") or DEFAULT_ISSUER,
        audience=environ.get("VANTA_JWT_AUDIENCE") or DEFAULT_AUDIENCE,
    )
    answer = mint_answer(token, claims)
    return MintedToken.from_answer(answer, orjson.dumps(answer).decode())


def _max_ttl(environ: Mapping[str, str]) -> int:
    raw = environ.get("VANTA_MAX_TTL_MINUTES") or ""
    if not raw:
        return DEFAULT_MAX_TTL_MINUTES
    if not raw.strip().isdigit() or int(raw) < 1:
        raise OfflineMintError(
            f"VANTA_MAX_TTL_MINUTES must be a whole number of at least 1, not {raw!r}"
        )
    return int(raw)
