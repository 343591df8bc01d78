"""Schemathesis against the generated OpenAPI schema: no 5xx, and every answer as documented.

Bounded: a few examples per operation (SCHEMATHESIS_EXAMPLES, default 10), and a few
stateful sequences along the links Schemathesis infers from the schema
(SCHEMATHESIS_STATEFUL_EXAMPLES, default 15, of up to 6 calls each).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)

PHONE = "+4915752982212"


@schema.hook
def flatmap_body(context, body):
    """Message bodies mostly with a real recipient: a random string is refused (422) before
    anything is stored, so without it the generated values would never reach the database,
    where the hostile ones (a huge customer_id, a send time past year 9999) used to fail."""
    operation = context.operation
    if operation is None or operation.method.upper() != "POST" or not isinstance(body, dict):
        return st.just(body)
    if operation.path.endswith("/messages"):
        return st.sampled_from([{**body, "to": PHONE}, body])
    if operation.path.endswith("/messages/batch") and isinstance(body.get("messages"), list):
        items = [{**m, "to": PHONE} if isinstance(m, dict) else m for m in body["messages"]]
        return st.sampled_from([{**body, "messages": items}, body])
    return st.just(body)


EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))
STATEFUL_EXAMPLES = int(os.environ.get("SCHEMATHESIS_STATEFUL_EXAMPLES", "15"))


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


# The listings a stored row must never break (problem: year-10000 send times did).
LISTINGS = ("messages", "newsletters", "contacts", "tags", "webhooks", "devices")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_stateful_sequences_never_answer_5xx_and_what_they_store_stays_listable(bearer):
    """Sequences along the schema's links (ids from one answer fed into the next call):
    never a 5xx, and after every successful write every listing still reads."""
    reader = Client(HTTP_AUTHORIZATION=bearer["Authorization"])

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case):
            return {"headers": bearer}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(
                response,
                checks=[not_a_server_error, status_code_conformance, content_type_conformance],
                transport_kwargs=kwargs,
            )

        def after_call(self, response, case):
            if case.method.upper() != "GET" and response.status_code < 300:
                for listing in LISTINGS:
                    listed = reader.get(f"/api/v1/{listing}")
                    assert listed.status_code == 200, (case.method, case.path, listing)

    Workflow.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
    )
