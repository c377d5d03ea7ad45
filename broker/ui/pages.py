"""The dashboard's pages: environments, keys, a key's history, the audit explorer.

Each page shows what the signed-in token could read through the API and nothing more:
keys and history need secrets:list, the audit explorer audit:read, and only environments
and keys inside the token's scope appear. No page ever reads a secret value.

Files the broker does not serve are skipped and said so: an environment whose
file is refused gets a row saying why (its own page is the API's 503), a key's history
lists the versions it skipped, and an all-environment token is told how many files have
names that are no environment's (never the names: they may be anything).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import g, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from broker import scope as names
from broker.audit.export import AuditQuery
from broker.errors import BadRequest, FileRefused, ScopeDenied
from broker.store import history
from broker.store.rotation import KeyStatus, count_by_status
from broker.tokens.claims import Claims
from broker.ui import ui
from broker.ui.audit_view import as_rfc3339, parse_page, read_page
from broker.ui.signin import require, signed_in
from broker.web.parts import parts
from broker.web.rotation_api import rotation_report


@ui.get("/")
def index() -> Any:
    session = g.ui_session
    if session is None:
        return render_template("ui/login.html", signed_out="signed_out" in request.args)
    claims = session.claims
    store = parts().store
    snapshot = store.served()
    rows = None
    misnamed = 0
    if claims.has("secrets:list"):
        listing = store.listing(snapshot)
        rows = [
            _environment_row(claims, snapshot, name)
            for name in listing.environments
            if claims.scope.covers_environment(name)
        ]
        if claims.scope.environment == names.ALL:
            misnamed = len(listing.misnamed)
    return render_template("ui/index.html", rows=rows, snapshot=snapshot, misnamed=misnamed)


@dataclass(frozen=True)
class EnvironmentRow:
    name: str
    keys: int | None
    due: int | None
    overdue: int | None
    refused: str | None = None  # why its file is not served


def _environment_row(claims: Claims, snapshot: Any, environment: str) -> EnvironmentRow:
    try:
        statuses = _visible_statuses(claims, snapshot, environment)
        if statuses is None:  # outside Git: no history, so no rotation status
            keys = _visible_keys(claims, snapshot, environment)
            return EnvironmentRow(environment, len(keys), None, None)
    except FileRefused as exc:
        return EnvironmentRow(environment, None, None, None, refused=exc.reason)
    counts = count_by_status(statuses)
    return EnvironmentRow(environment, len(statuses), counts["due"], counts["overdue"])


def _visible_statuses(claims: Claims, snapshot: Any, environment: str) -> list[KeyStatus] | None:
    try:
        statuses = rotation_report(parts().store, snapshot, environment)
    except BadRequest:
        return None
    return [s for s in statuses if claims.scope.covers_key(s.key)]


def _visible_keys(claims: Claims, snapshot: Any, environment: str) -> list[str]:
    document = parts().store.document(snapshot, environment)
    return sorted(k for k in document if claims.scope.covers_key(k))


# -- environments and keys ------------------------------------------------------------------------


def _readable_environment(claims: Claims, environment: str) -> None:
    names.check_environment(environment)
    require(claims, "secrets:list")
    if not claims.scope.covers_environment(environment):
        raise ScopeDenied("this environment is outside the token's scope")


@ui.get("/env/<environment>")
def environment_page(environment: str) -> str:
    claims = signed_in().claims
    _readable_environment(claims, environment)
    snapshot = parts().store.served()
    statuses = _visible_statuses(claims, snapshot, environment)
    keys = _visible_keys(claims, snapshot, environment) if statuses is None else None
    return render_template(
        "ui/environment.html",
        environment=environment,
        statuses=statuses,
        keys=keys,
        snapshot=snapshot,
        counts=count_by_status(statuses or []),
    )


@ui.get("/env/<environment>/keys/<path:key>")
def key_page(environment: str, key: str) -> str:
    claims = signed_in().claims
    _readable_environment(claims, environment)
    names.check_key(key)
    if not claims.scope.covers_key(key):
        raise ScopeDenied("this key is outside the token's pattern")
    store = parts().store
    snapshot = store.served()
    # NotFound for a key that never existed; [] outside Git, where there is no history.
    answer = history.history_answer(store, snapshot, environment, key)
    statuses = _visible_statuses(claims, snapshot, environment) or []
    current = next((s for s in statuses if s.key == key), None)
    return render_template(
        "ui/key.html",
        environment=environment,
        key=key,
        versions=answer["versions"],
        skipped=answer.get("skipped", []),
        status=current,
    )


# -- the audit explorer ---------------------------------------------------------------------


@ui.get("/audit")
def audit_page() -> str:
    claims = signed_in().claims
    require(claims, "audit:read")
    args = MultiDict(request.args)
    for name in ("since", "until"):
        if args.get(name):
            args[name] = as_rfc3339(args[name])
    query = AuditQuery.from_args(args.to_dict(flat=False), claims.scope.environment)
    page_number = parse_page(request.args.get("page"))
    log = parts().audit
    rotated = log.rotated_files() if hasattr(log, "rotated_files") else []
    page = read_page([log.path, *reversed(rotated)], query.matches, page_number)
    filters = {
        name: request.args.get(name, "")
        for name in ("environment", "subject", "outcome", "since", "until")
    }
    active = {name: value for name, value in filters.items() if value}
    return render_template(
        "ui/audit.html",
        page=page,
        filters=filters,
        newer=_audit_url(active, page.page - 1) if page.page > 1 else None,
        older=_audit_url(active, page.page + 1) if page.has_more else None,
        fixed_environment=None if claims.scope.environment == "*" else claims.scope.environment,
    )


def _audit_url(filters: dict[str, str], page: int) -> str:
    values: dict[str, Any] = {**filters, "page": page}
    return url_for("ui.audit_page", **values)
