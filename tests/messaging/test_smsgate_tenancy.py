"""SMSGate's integration API, every route that takes an id: another account's id answers
exactly as an id that does not exist (same status, same body), and changes nothing of the
other account's."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.test import Client

from devices import phone_settings
from devices.models import Device
from gateway import jwt_tokens
from messaging import services as messaging
from messaging import webhooks
from messaging.models import Message, Status, WebhookEndpoint

pytestmark = pytest.mark.django_db
API = "/api/3rdparty/v1"
PASSWORD = "a-long-passphrase"
MISSING_DEVICE = "987654321"


@pytest.fixture
def world(make_user, paired, settings):
    """Mine: an account with a phone. Theirs: another account with a phone, a message (its
    client id and its row id), an incoming SMS, a webhook, a JWT pair and settings."""
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    me = make_user("me@example.com", PASSWORD)
    paired(account=me.account, title="My phone")
    other = make_user("other@example.com", PASSWORD)
    phone, _ = paired(account=other.account, title="Their phone")
    (row,) = messaging.submit(
        other.account,
        [messaging.OutgoingSms(phone.pk, "+4915752982212", "theirs", external_id="t1")],
    )
    Message.objects.create(
        account=other.account,
        device=phone,
        phone="+4915752982299",
        body="in",
        status=Status.INCOMING,
    )
    webhooks.save_smsgate_endpoint(other.account, "w1", "https://127.0.0.1:9/x", "sms:sent", None)
    pair = jwt_tokens.issue(other.account, frozenset({jwt_tokens.ALL}), None)
    phone_settings.write(other.account, {"ping": {"interval_seconds": 77}}, replace=False)
    basic = base64.b64encode(f"{me.email}:{PASSWORD}".encode()).decode()
    return {
        "client": Client(headers={"authorization": f"Basic {basic}"}),
        "device": str(phone.pk),
        "row": str(row),
        "pair": pair,
        "other": other,
    }


def call(client: Client, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body) if body is not None else ""
    answer = client.generic(method, API + path, data, content_type="application/json")
    return answer.status_code, (json.loads(answer.content) if answer.content else None)


def window(**extra: Any) -> dict[str, Any]:
    return {"since": "2026-01-01T00:00:00Z", "until": "2026-12-31T00:00:00Z", **extra}


def send(device: str) -> dict[str, Any]:
    return {"phoneNumbers": ["+4915752982212"], "textMessage": {"text": "x"}, "deviceId": device}


def hook(device: str) -> dict[str, Any]:
    return {"url": "https://127.0.0.1:9/mine", "event": "sms:sent", "deviceId": device}


# (method, path or body built from theirs / from a missing id)
CASES = [
    ("GET", lambda w: f"/messages/{w}", "t1", "no-such-id"),
    ("GET", lambda w: f"/message/{w}", "row", "99999999"),
    ("DELETE", lambda w: f"/messages/{w}", "t1", "no-such-id"),
    ("DELETE", lambda w: f"/messages/{w}", "row", "99999999"),
    ("GET", lambda w: f"/messages?deviceId={w}", "device", MISSING_DEVICE),
    ("GET", lambda w: f"/inbox?deviceId={w}", "device", MISSING_DEVICE),
    ("DELETE", lambda w: f"/devices/{w}", "device", MISSING_DEVICE),
    ("DELETE", lambda w: f"/webhooks/{w}", "w1", "no-such-hook"),
]
BODY_CASES = [
    ("POST", "/messages", send),
    ("POST", "/inbox/refresh", lambda w: window(deviceId=w)),
    ("POST", "/inbox/export", lambda w: window(deviceId=w)),
    ("POST", "/webhooks", hook),
]


def _theirs(world: dict[str, Any], key: str) -> str:
    return {"t1": "t1", "w1": "w1", "row": world["row"], "device": world["device"]}[key]


@pytest.mark.parametrize(("method", "path", "key", "missing"), CASES)
def test_their_id_in_the_path_answers_as_a_missing_one(world, method, path, key, missing):
    client = world["client"]
    assert call(client, method, path(_theirs(world, key))) == call(client, method, path(missing))


@pytest.mark.parametrize(("method", "path", "body"), BODY_CASES)
def test_their_device_in_the_body_answers_as_a_missing_one(world, method, path, body):
    client = world["client"]
    theirs = call(client, method, path, body(world["device"]))
    assert theirs == call(client, method, path, body(MISSING_DEVICE))
    assert theirs[0] == 400


def test_their_token_is_revoked_only_by_them(world):
    client, pair = world["client"], world["pair"]
    assert call(client, "DELETE", f"/auth/token/{pair.jti}") == call(
        client, "DELETE", "/auth/token/x"
    )
    bearer = Client(headers={"authorization": f"Bearer {pair.access}"})
    assert bearer.get(f"{API}/messages").status_code == 200  # still theirs, still working


def test_their_client_ids_and_webhook_ids_are_free_for_me(world):
    client = world["client"]
    mine = {"phoneNumbers": ["+4915752982212"], "textMessage": {"text": "mine"}, "id": "t1"}
    status, state = call(client, "POST", "/messages", mine)
    assert status == 202 and state["id"] == "t1"
    status, created = call(client, "POST", "/webhooks", {"id": "w1", **hook("")})
    assert status == 201 and created["url"] == "https://127.0.0.1:9/mine"
    theirs = WebhookEndpoint.objects.get(account=world["other"].account, client_id="w1")
    assert theirs.url == "https://127.0.0.1:9/x"
    assert Message.objects.get(account=world["other"].account, external_id="t1").body == "theirs"


def test_nothing_of_theirs_is_listed_and_nothing_changed(world):
    client = world["client"]
    for method, route, key, _ in CASES:  # every call above, once more
        call(client, method, route(_theirs(world, key)))
    for path in ("/messages", "/inbox", "/webhooks", "/logs"):
        status, listed = call(client, "GET", path)
        assert status == 200 and listed == [], path
    status, devices = call(client, "GET", "/devices")
    assert [d["name"] for d in devices] == ["My phone"]
    assert call(client, "GET", "/settings") == (200, {})
    other = world["other"].account
    assert Device.objects.get(pk=int(world["device"])).enabled
    assert Message.objects.get(account=other, external_id="t1").status == Status.NEW
    assert WebhookEndpoint.objects.filter(account=other, client_id="w1").exists()
    assert phone_settings.read(other) == {"ping": {"interval_seconds": 77}}


@pytest.mark.parametrize("sub", ["mine", "not-a-number", "9" * 30])
def test_a_token_names_its_own_account_or_nothing(world, make_user, sub):
    """A JWT is good only with the account its row was issued to: the same jti signed for
    another account (even with the server's key), or for no account id at all, is refused
    with 401, never read as someone else's or answered with a 500."""
    import jwt

    pair = world["pair"]
    claims = jwt.decode(pair.access, options={"verify_signature": False})
    mine = make_user("third@example.com", PASSWORD).account
    claims["sub"] = str(mine.pk) if sub == "mine" else sub
    forged = jwt_tokens._encode(claims)
    with pytest.raises(jwt_tokens.InvalidToken):
        jwt_tokens.authenticate(forged)
    answer = Client(headers={"authorization": f"Bearer {forged}"}).get(f"{API}/messages")
    assert answer.status_code == 401
    assert jwt_tokens.authenticate(pair.access).account == world["other"].account
