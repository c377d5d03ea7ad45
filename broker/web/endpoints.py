"""What each /api/v1 route declares, once: method and path, audit event, the permission
it needs, the query parameters it takes, its answers and the errors only it gives.

`route()` hands the declaration to Flask, to the request hooks (the event and the query
parameters are known before the view runs), to `authenticate()` (the permission) and to
the OpenAPI document, which is built from `ROUTES` and the error tree alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Blueprint

from broker.errors import ApiError

Schema = dict[str, Any]
View = TypeVar("View", bound=Callable[..., Any])

UNDECLARED_EVENT = "request"  # the audit event of a request no route declares


def ref(kind: str, name: str) -> Schema:
    """A reference to one of the OpenAPI document's components."""
    return {"$ref": f"#/components/{kind}/{name}"}


def schema(name: str) -> Schema:
    return ref("schemas", name)


@dataclass(frozen=True)
class Param:
    """A query (or header) parameter a route takes."""

    name: str
    schema: Schema
    description: str
    required: bool = False
    where: str = "query"


@dataclass(frozen=True)
class Answer:
    """A successful answer: its body's schema (None: no body), media type, and whether
    it carries secrets (then never cached: `Cache-Control: no-store`)."""

    description: str
    body: Schema | None = None
    media: str = "application/json"
    secret: bool = False


@dataclass(frozen=True)
class Endpoint:
    """One route. `query=None` leaves the query string unchecked (a forge's webhook adds
    its own); otherwise an unknown or repeated parameter is 400. `errors` are the statuses
    it may answer beyond those of every bearer-token route; `own_errors` the errors no
    other route gives, each documented as its own answer."""

    method: str
    path: str  # the Flask rule, under the blueprint's url_prefix
    operation_id: str
    summary: str
    tag: str
    answers: Mapping[int, Answer]
    event: str = UNDECLARED_EVENT
    permission: str | None = None
    permission_note: str = ""
    query: tuple[Param, ...] | None = ()
    headers: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    own_errors: tuple[type[ApiError], ...] = ()
    body: Schema | None = None
    body_required: bool = True
    public: bool = False  # no bearer token
    query_names: tuple[str, ...] | None = field(init=False)

    def __post_init__(self) -> None:
        names = None if self.query is None else tuple(p.name for p in self.query)
        object.__setattr__(self, "query_names", names)


@dataclass(frozen=True)
class Route:
    path: str  # the full Flask rule
    declared: Endpoint


ROUTES: list[Route] = []


def route(blueprint: Blueprint, declared: Endpoint) -> Callable[[View], View]:
    """Register `view` for `declared` on `blueprint`, and remember the declaration."""

    def register(view: View) -> View:
        view.declared = declared  # type: ignore[attr-defined]
        blueprint.add_url_rule(declared.path, view_func=view, methods=[declared.method])
        ROUTES.append(Route((blueprint.url_prefix or "") + declared.path, declared))
        return view

    return register
