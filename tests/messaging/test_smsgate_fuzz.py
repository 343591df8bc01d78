"""Hostile input to SMSGate's integration API: whatever arrives, the answer is a JSON 2xx or
a JSON 4xx with a message, never a server error, and nothing half-stored that a listing
cannot read back. Bounded (hypothesis, FUZZ_EXAMPLES per route, default 40)."""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import urlencode

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import phone_settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
PASSWORD = "a-long-passphrase"
BASE = "/api/3rdparty/v1"

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["+4915752982212", "2026-12-03T10:00:00Z", "9999-12-31T23:59:59+14:00",
                       "0001-01-01T00:00:00", "Pending", "sms:sent", "https://hooks.example.com/x",
                       "\x00", "1", "-1", "all:any"])
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = ["id", "deviceId", "textMessage", "message", "dataMessage", "phoneNumbers", "simNumber",
        "priority", "ttl", "validUntil", "scheduleAt", "isEncrypted", "withDeliveryReport", "url",
        "event", "since", "until", "messageTypes", "webhookDelivery", "scopes"]  # fmt: skip
bodies = st.dictionaries(st.sampled_from(KEYS), values, max_size=8) | values
queries = st.dictionaries(
    st.sampled_from(["limit", "offset", "from", "to", "state", "deviceId", "sort", "type",
                     "includeContent", "skipPhoneValidation", "deviceActiveWithin"]),
    st.text(max_size=30) | st.sampled_from(["2026-12-03T10:00:00Z", "100", "-1", "Pending"]),
    max_size=4,
)  # fmt: skip
ROUTES = [
    ("post", "/messages"),
    ("post", "/message"),
    ("get", "/messages"),
    ("get", "/messages/some-id"),
    ("delete", "/messages/some-id"),
    ("get", "/inbox"),
    ("post", "/inbox/refresh"),
    ("post", "/inbox/export"),
    ("get", "/logs"),
    ("get", "/webhooks"),
    ("post", "/webhooks"),
    ("delete", "/webhooks/x"),
    ("get", "/devices"),
    ("delete", "/devices/1"),
    ("post", "/auth/token"),
    ("get", "/settings"),
    ("put", "/settings"),
    ("patch", "/settings"),
]


@pytest.fixture
def client(make_user, paired):
    user = make_user("fuzz@example.com", PASSWORD)
    paired(account=user.account, title="Fuzzed phone")
    basic = base64.b64encode(f"{user.email}:{PASSWORD}".encode()).decode()
    return Client(headers={"authorization": f"Basic {basic}"})


def _check(response) -> None:
    assert response.status_code < 500, response.content[:500]
    if response.status_code != 204:
        assert response["Content-Type"] == "application/json"
        answer = json.loads(response.content)
        if response.status_code >= 400:
            assert isinstance(answer.get("message"), str) and answer["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_input_makes_a_server_error(client, method, path):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, query=queries)
    def run(body, query):
        response = getattr(client, method)(
            f"{BASE}{path}", data=json.dumps(body) if method != "get" else query,
            content_type="application/json", QUERY_STRING=urlencode(query) if method != "get" else "",
        )  # fmt: skip
        _check(response)

    run()
    # Whatever was stored reads back through the listing.
    _check(client.get(f"{BASE}/messages", {"limit": "100"}))


@pytest.mark.django_db
def test_bodies_that_are_not_json_or_too_large(client):
    for raw in (b"{", b"\xff\xfe", b"[1, 2", b'{"a": NaN}', b"null", b'"text"'):
        _check(client.post(f"{BASE}/messages", data=raw, content_type="application/json"))
    huge = json.dumps({"phoneNumbers": ["+4915752982212"], "message": "x" * 300_000})
    answer = client.post(f"{BASE}/messages", data=huge, content_type="application/json")
    assert answer.status_code == 413
    _check(answer)
    deep = "[" * 10_000 + "]" * 10_000
    _check(client.post(f"{BASE}/messages", data=deep, content_type="application/json"))
    for auth in (
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Bearer",
        "Digest x",
    ):
        answer = Client(headers={"authorization": auth}).get(f"{BASE}/messages")
        assert answer.status_code == 401
        _check(answer)


SETTING_KEYS = sorted({key for keys in phone_settings.SCHEMA.values() for key in keys})
setting_bodies = st.dictionaries(
    st.sampled_from([*phone_settings.SCHEMA, "other"]),
    st.dictionaries(st.sampled_from(SETTING_KEYS), scalars | values, max_size=5) | values,
    max_size=4,
)


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch"])
def test_no_settings_make_a_server_error_or_an_unreadable_store(client, method):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=setting_bodies | values)
    def run(body):
        response = getattr(client, method)(
            f"{BASE}/settings", data=json.dumps(body), content_type="application/json"
        )
        _check(response)
        # What was stored reads back, and is what the write answered.
        read = client.get(f"{BASE}/settings")
        _check(read)
        if response.status_code == 200:
            assert json.loads(read.content) == json.loads(response.content)

    run()
