"""The read-only dashboard under /ui: blueprint `ui`, templates, stylesheet.

Server-rendered with Jinja, no JavaScript: `signin` holds sessions, CSRF and the headers
every answer carries; `pages` the pages themselves.
"""

from __future__ import annotations

from flask import Blueprint

ui = Blueprint(
    "ui",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
)

from broker.ui import pages, signin  # noqa: E402,F401 - they add their routes to `ui`

__all__ = ["ui"]
