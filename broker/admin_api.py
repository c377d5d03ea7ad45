"""Token revocation and audit export routes (SPEC §10). Placeholder until issue 6 lands."""

from __future__ import annotations

from flask import Blueprint

admin = Blueprint("admin", __name__, url_prefix="/api/v1")
