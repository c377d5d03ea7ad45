"""Dashboard sign-in and sign-out, and what every /ui answer carries.

Sessions live in a sealed cookie and end in the shared token state (broker.ui.session);
every answer gets the dashboard's security headers, every page the sign-out form (with its
CSRF token) through the template context.
"""

from __future__ import annotations

import time
from typing import Any

from flask import current_app, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from broker.errors import ApiError, BadRequest, PermissionDenied
from broker.tokens.claims import LEEWAY_SECONDS, Claims, verify
from broker.ui import ui
from broker.ui.session import (
    BROWSER_COOKIE,
    COOKIE_PATH,
    MAX_COOKIE_BYTES,
    SESSION_COOKIE,
    Session,
    SessionSealer,
    ended_marker,
    new_browser_id,
    new_session_id,
)
from broker.web.bodies import body_turn
from broker.web.parts import parts

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_BROWSER_ID_MAX = 64


def sealer() -> SessionSealer:
    """One per app: the keys are derived from the signing key once."""
    found = current_app.extensions.get("vanta_ui")
    if found is None:
        found = SessionSealer(parts().config.keyring.signing[1].reveal())
        current_app.extensions["vanta_ui"] = found
    return found


# -- every request --------------------------------------------------------------------------


@ui.before_request
def _load_browser_and_session() -> None:
    browser_id = request.cookies.get(BROWSER_COOKIE, "")
    g.new_browser_id = not (0 < len(browser_id) <= _BROWSER_ID_MAX and browser_id.isprintable())
    g.browser_id = new_browser_id() if g.new_browser_id else browser_id
    g.ui_session = None
    g.drop_session_cookie = False
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and request.endpoint != "ui.static":  # the stylesheet needs no session
        g.ui_session = _open_session(cookie)
        g.drop_session_cookie = g.ui_session is None


def _open_session(cookie: str) -> Session | None:
    """The session this cookie carries, if its token is still good and it was not ended."""
    opened = sealer().open(cookie)
    if opened is None:
        return None
    session_id, token, _ = opened
    claims = verified_claims(token)
    if claims is None:
        return None
    state = parts().state  # StateUnavailable propagates: fail closed with a 503 page
    if state.is_revoked(claims.jti) or state.is_revoked(ended_marker(session_id)):
        return None
    g.claims = claims
    return Session(session_id, token, claims)


def verified_claims(token: str) -> Claims | None:
    """The token's claims if it verifies and has not expired (no leeway past `exp`)."""
    config = parts().config
    try:
        claims = verify(
            token, config.keyring, issuer=config.jwt_issuer, audience=config.jwt_audience
        )
    except ApiError:
        return None
    return claims if claims.expires_at > time.time() else None


@ui.after_request
def _finish(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if g.get("new_browser_id"):
        _set_cookie(response, BROWSER_COOKIE, g.browser_id, max_age=None)
    if g.get("drop_session_cookie"):
        response.delete_cookie(
            SESSION_COOKIE,
            path=COOKIE_PATH,
            secure=request.is_secure,
            httponly=True,
            samesite="Strict",
        )
    return response


def _set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )


@ui.context_processor
def _page_context() -> dict[str, Any]:
    # A request refused before the dashboard's own set-up ran (throttled, too large) has
    # no browser id or session yet: its error page still renders, without a form.
    session: Session | None = g.get("ui_session")
    browser_id = g.get("browser_id")
    return {
        "session": session,
        "claims": session.claims if session else None,
        "csrf_token": sealer().csrf_token(browser_id) if browser_id else "",
        "expires_in": _expires_in(session.claims) if session else None,
    }


def _expires_in(claims: Claims) -> str:
    left = max(0, claims.expires_at - int(time.time()))
    hours, minutes = divmod(left // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


@ui.errorhandler(ApiError)
def _error_page(exc: ApiError) -> tuple[str, int, dict[str, str]]:
    g.error_code = exc.code
    page = render_template("ui/error.html", status=exc.status, message=exc.message)
    return page, exc.status, exc.headers()


def signed_in() -> Session:
    session = g.get("ui_session")
    if session is None:
        raise _SignInFirst()
    return session


class _SignInFirst(Exception):
    pass


@ui.errorhandler(_SignInFirst)
def _to_sign_in(_: _SignInFirst) -> Response:
    return redirect(url_for("ui.index"), code=303)


def require(claims: Claims, permission: str) -> None:
    if not claims.has(permission):
        raise PermissionDenied(f"this token lacks {permission}")


def _form() -> Any:
    """The posted form, read in its turn (broker.web.bodies)."""
    with body_turn():
        return request.form


def _check_csrf() -> None:
    if not sealer().csrf_valid(request.cookies.get(BROWSER_COOKIE), _form().get("csrf")):
        raise BadRequest("the form's CSRF token is missing or was issued to another browser")


# -- sign-in and sign-out -------------------------------------------------------------------


@ui.get("/login")
def login_form() -> Response:
    return redirect(url_for("ui.index"), code=303)


@ui.post("/login")
def login() -> Any:
    form = _form()
    if not sealer().csrf_valid(request.cookies.get(BROWSER_COOKIE), form.get("csrf")):
        return _login_refused(400, "This form was not issued to this browser. Please try again.")
    token = form.get("token", "").strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    claims = verified_claims(token)
    if claims is None:
        return _login_refused(401, "That token is not valid or has expired.")
    state = parts().state
    if state.is_revoked(claims.jti):
        return _login_refused(403, "That token has been revoked.")
    previous = g.ui_session
    if previous is not None:  # a new sign-in ends the session it replaces
        state.revoke(previous.ended_marker, previous.claims.expires_at + LEEWAY_SECONDS)
    cookie = sealer().seal(new_session_id(), token, claims.expires_at)
    if len(cookie) > MAX_COOKIE_BYTES:
        return _login_refused(400, "That token is too long to keep in a browser session.")
    g.claims = claims
    g.drop_session_cookie = False
    response = redirect(url_for("ui.index"), code=303)
    _set_cookie(response, SESSION_COOKIE, cookie, max_age=claims.expires_at - int(time.time()))
    return response


def _login_refused(status: int, message: str) -> tuple[str, int]:
    return render_template("ui/login.html", error=message), status


@ui.post("/logout")
def logout() -> Response:
    _check_csrf()
    session = g.ui_session
    if session is not None:
        # Recorded where every worker and broker looks, for as long as the token lives.
        parts().state.revoke(session.ended_marker, session.claims.expires_at + LEEWAY_SECONDS)
    g.ui_session = None
    g.drop_session_cookie = True
    return redirect(url_for("ui.index", signed_out=1), code=303)
