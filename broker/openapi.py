"""GET /api/v1/openapi.json: the OpenAPI 3.1 document of every /api/v1 endpoint (SPEC §17)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from broker.api import json_response

openapi = Blueprint("openapi", __name__, url_prefix="/api/v1")

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Vanta Vault broker API", "version": "1"},
    "paths": {},
}


@openapi.get("/openapi.json")
def openapi_document() -> Response:
    """The document; no authentication and no audit record."""
    response = json_response(DOCUMENT)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
