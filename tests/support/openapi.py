"""Holding an answer to the OpenAPI document, as schemathesis checks it."""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broker.config import Config
from broker.web.openapi import build_document

# Not not_a_server_error: 503 is a documented answer (and these provoke it); an undocumented
# status such as 500 still fails status_code_conformance.
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def assert_conforms(config: Config, method: str, path: str, response: Any) -> None:
    """The answer's status, content type, headers and body are as the document says."""
    schema = schemathesis.openapi.from_dict(build_document(config.max_ttl_minutes))
    template = re.escape(path).replace(r"\{key\}", "(?P<key>.*)")
    template = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]*)", template)
    sent = re.fullmatch(template, response.request.path)
    assert sent is not None, (path, response.request.path)
    case = schema[path][method].Case(path_parameters=sent.groupdict())
    case.validate_response(response, checks=CONFORMANCE)
