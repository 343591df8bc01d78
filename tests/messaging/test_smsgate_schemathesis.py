"""Schemathesis against this server's OpenAPI document of SMSGate's integration API
(``/api/3rdparty/v1/openapi.json``): no 5xx, and every answer as documented. And the
document names every route and method served, with its scope, and nothing more.

Bounded like the REST API's run: SCHEMATHESIS_EXAMPLES (default 10) per operation.
"""

from __future__ import annotations

import base64
import os
import re

import pytest
import schemathesis
from django.urls import resolve
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.wsgi import application
from messaging.api.smsgate import openapi

schema = schemathesis.openapi.from_wsgi("/api/3rdparty/v1/openapi.json", application)
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))
PASSWORD = "a-long-passphrase"
PHONE = "+4915752982212"


@schema.hook
def flatmap_body(context, body):
    """Sends mostly with a real recipient, so generated values reach the database."""
    operation = context.operation
    if operation is None or operation.method.upper() != "POST" or not isinstance(body, dict):
        return st.just(body)
    if operation.path in ("/messages", "/message"):
        return st.sampled_from([{**body, "phoneNumbers": [PHONE]}, body])
    return st.just(body)


@pytest.fixture
def basic(make_user, paired):
    user = make_user("schemathesis@example.com", PASSWORD)
    paired(account=user.account, title="Fuzzed phone")
    secret = base64.b64encode(f"{user.email}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {secret}"}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_answers_as_documented_and_never_with_5xx(case, basic):
    response = case.call(headers=basic)
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


def test_the_document_names_every_route_method_and_scope_served():
    document = openapi.document()
    for mount in ("/api/3rdparty/v1", "/3rdparty/v1"):
        for path, item in document["paths"].items():
            view = resolve(mount + re.sub(r"\{[^}]+\}", "x1", path)).func
            documented = {m.upper() for m in item if m != "parameters"}
            scopes = getattr(view, "scopes", None)
            if scopes is None:  # health and the document: no authentication
                assert documented == {"GET"} and item["get"]["security"] == []
                continue
            assert documented == set(scopes), path
            for method, scope in scopes.items():
                operation = item[method.lower()]
                assert operation.get("description", "").startswith(f"Scope: `{scope}`") or (
                    scope == "tokens:refresh"
                ), (path, method)
    # And no route served is left out of it.
    from messaging.api.smsgate import urls

    served = {
        p.pattern.regex.pattern for p in urls.urlpatterns if getattr(p.callback, "scopes", None)
    }
    covered = set()
    for path in document["paths"]:
        sample = re.sub(r"\{[^}]+\}", "x1", path).lstrip("/")
        covered |= {
            p.pattern.regex.pattern for p in urls.urlpatterns if p.pattern.regex.match(sample)
            and getattr(p.callback, "scopes", None)
        }  # fmt: skip
    assert served == covered


@pytest.mark.django_db
def test_the_document_is_served_at_both_mounts(client):
    for mount in ("/api/3rdparty/v1", "/3rdparty/v1"):
        answer = client.get(f"{mount}/openapi.json")
        assert answer.status_code == 200 and answer.json()["openapi"].startswith("3.")
    assert client.post("/api/3rdparty/v1/openapi.json").status_code == 405
