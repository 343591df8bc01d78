"""Schemathesis against the generated OpenAPI schema: no 5xx, and every answer as documented.

Bounded: a few examples per operation (SCHEMATHESIS_EXAMPLES, default 10).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))


@pytest.fixture
def bearer(paired):
    from gateway.services import create_api_token

    device, _ = paired(title="Fuzzed phone")
    _, secret = create_api_token(device.account, "schemathesis")
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.slow
# WSGI requests close the database connection when they finish, as in production: the test
# data must be committed, not held in a test transaction.
@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_answers_as_documented_and_never_with_5xx(case, bearer):
    response = case.call(headers=bearer)
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
