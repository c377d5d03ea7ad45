"""The broker's Flask app and response classes: Flask, less what the broker never uses."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import NullSession, SessionInterface


class BrokerResponse(Response):
    """A response whose buffered body reaches the server as a one-item list: granian then
    sends it in one call from Rust instead of iterating a Python generator."""

    def get_app_iter(self, environ: dict[str, Any]) -> Iterable[bytes]:
        body = self.response
        if self.direct_passthrough or not isinstance(body, list) or self._on_close:
            return super().get_app_iter(environ)  # streamed bodies, files, close callbacks
        status = self.status_code
        if environ["REQUEST_METHOD"] == "HEAD" or 100 <= status < 200 or status in (204, 304):
            return []
        return body

    def get_wsgi_headers(self, environ: dict[str, Any]) -> Any:
        """The headers as they are: Werkzeug's version copies them to make a Location
        absolute and to set Content-Length, which a buffered body has already."""
        headers = self.headers
        status = self.status_code
        if (
            200 <= status < 300
            and status != 204
            and isinstance(self.response, list)
            and "Content-Length" in headers
            and "Location" not in headers
            and "Content-Location" not in headers
        ):
            return headers
        return super().get_wsgi_headers(environ)


class _NoSessions(SessionInterface):
    """Flask's cookie sessions are unused (the dashboard seals its own cookie): no signing
    serializer is built per request, and nothing is saved."""

    _null = NullSession()

    def open_session(self, app: Flask, request: Request) -> NullSession:
        return self._null

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        return None


class BrokerFlask(Flask):
    response_class = BrokerResponse
    session_interface = _NoSessions()

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return func  # the broker has no async views: no per-call coroutine check
