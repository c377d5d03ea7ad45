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
from broker.config import ConfigError, MintingSettings
from broker.tokens.claims import MintRequest, mint, mint_answer
from cli.client import BadRequest, MintedToken, TokenRequest, VaultError


class OfflineMintError(VaultError):
    """The local signing configuration is missing or wrong (names the variable)."""


def mint_offline(request: TokenRequest, environ: Mapping[str, str]) -> MintedToken:
    """Sign `request` with VANTA_JWT_SECRET_KEY (or the first of VANTA_JWT_SECRET_KEYS).

    Honours VANTA_JWT_ISSUER, VANTA_JWT_AUDIENCE and VANTA_MAX_TTL_MINUTES like the broker.
    Raises BadRequest (400 bad_request, as the broker would) for a bad request and
    OfflineMintError for a bad configuration.
    """
    try:
        settings = MintingSettings.from_env(environ)
    except ConfigError as exc:
        raise OfflineMintError(str(exc)) from None
    try:
        wanted = MintRequest.from_json(request.to_json(), settings.max_ttl_minutes)
    except broker_errors.BadRequest as exc:
        raise BadRequest(exc.status, exc.code, exc.message, None) from None
    token, claims = mint(
        wanted, settings.keyring, issuer=settings.issuer, audience=settings.audience
    )
    answer = mint_answer(token, claims)
    return MintedToken.from_answer(answer, orjson.dumps(answer).decode())
