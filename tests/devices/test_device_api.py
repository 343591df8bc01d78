"""The device protocol over HTTP: wire shapes, authentication, errors."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import cache
from django.test import Client

from devices import services
from devices.models import Device
from messaging import services as messaging
from messaging.models import Message, Status

API = "/api/device/v1/"


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()


class DeviceApi:
    """Calls the device API as one paired device."""

    def __init__(self, device, token):
        self.device = device
        self.client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    def __call__(self, name, payload=None, **extra):
        return self.client.post(API + name, payload or {}, content_type="application/json", **extra)


@pytest.fixture
def api(paired):
    return DeviceApi(*paired())


def test_pair_with_a_code_over_http(account):
    _, code = services.create_pairing_code(account)
    response = Client().post(
        API + "pair",
        {
            "code": code,
            "device": {
                "title": "Pixel 7",
                "imei": "358240051111110",
                "app_version": "1.0.0",
                "sims": [{"slot": 0, "carrier_name": "A1"}, {"slot": 1}],
                "segments_per_minute": 60,
            },
        },
        content_type="application/json",
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "device_id",
        "token",
        "poll_interval",
        "batch_size",
        "delay_between_sms",
        "segments_per_minute",
    }
    assert body["token"].startswith("dev_") and body["segments_per_minute"] == 60
    device = Device.objects.get(pk=body["device_id"])
    assert device.account == account and device.sims.count() == 2
    again = Client().post(API + "pair", {"code": code}, content_type="application/json")
    assert again.status_code == 403
    assert again.json() == {
        "error": {"code": "pairing_refused", "message": "Pairing code is unknown, used or expired"}
    }


def test_pair_with_email_and_password(make_user):
    make_user("phone@example.com", "phone-password")
    ok = Client().post(
        API + "pair",
        {"email": "phone@example.com", "password": "phone-password"},
        content_type="application/json",
    )
    assert ok.status_code == 201
    bad = Client().post(
        API + "pair",
        {"email": "phone@example.com", "password": "nope"},
        content_type="application/json",
    )
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "login_failed"


def test_guessing_pairing_codes_is_throttled(account):
    for _ in range(10):
        Client().post(API + "pair", {"code": "AAAA-AAAA"}, content_type="application/json")
    _, code = services.create_pairing_code(account)
    blocked = Client().post(API + "pair", {"code": code}, content_type="application/json")
    assert blocked.status_code == 429


def test_pair_needs_a_code_or_a_login():
    response = Client().post(API + "pair", {}, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize("header", [None, "Bearer dev_wrong", "Token abc"])
def test_the_device_api_needs_a_device_token(db, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = Client().post(API + "poll", {}, content_type="application/json", **extra)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_an_api_token_is_not_a_device_token(account):
    from gateway.services import create_api_token

    _, secret = create_api_token(account, "api")
    response = Client().post(
        API + "poll", {}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret}"
    )
    assert response.status_code == 401


def test_a_disabled_device_is_told_so(api):
    Device.objects.filter(pk=api.device.pk).update(enabled=False)
    response = api("poll")
    assert response.status_code == 403 and "disabled" in response.json()["error"]["message"]


def test_poll_confirm_report_round_trip(api):
    device = api.device
    (message_id,) = messaging.submit(
        device.account, [messaging.OutgoingSms(device.pk, "+4915752982212", "Hello €", urgent=True)]
    )
    poll = api(
        "poll",
        {
            "slots": [0],
            "battery_percent": 77,
            "charging": True,
            "signal_dbm": -80,
            "app_version": "1.0.0",
        },
    )
    assert poll.status_code == 200
    body = poll.json()
    assert set(body) == {
        "messages",
        "lease",
        "cancelled",
        "revoke",
        "poll_interval",
        "delay_between_sms",
        "server_time",
    }
    (message,) = body["messages"]
    assert {k: message[k] for k in ("id", "to", "body", "sim", "urgent", "segments")} == {
        "id": message_id,
        "to": "+4915752982212",
        "body": "Hello €",
        "sim": 0,
        "urgent": True,
        "segments": 1,
    }
    assert message["not_before"].endswith("Z") and message["lease_expires"] > message["not_before"]
    assert Device.objects.get(pk=device.pk).battery_percent == 77
    assert api("confirm", {"ids": [message_id, 999999], "lease": body["lease"]}).json() == {
        "confirmed": [message_id],
        "refused": [999999],
        "superseded": [],
    }
    report = api(
        "report",
        {
            "reports": [
                {"id": message_id, "status": "sent", "parts": 1},
                {"id": message_id, "status": 7},
            ]
        },
    )
    # "status" is the message's status after the whole batch
    assert report.json() == {
        "results": [
            {"id": message_id, "result": "applied", "status": 7},
            {"id": message_id, "result": "applied", "status": 7},
        ]
    }
    assert Message.objects.get(pk=message_id).status == Status.DELIVERED


def test_report_with_an_unknown_status_is_a_validation_error(api):
    response = api("report", {"reports": [{"id": 1, "status": "exploded"}]})
    assert response.status_code == 400
    assert "status must be one of" in str(response.json()["error"]["fields"])


def test_incoming_upload_is_idempotent(api):
    payload = {
        "messages": [
            {
                "id": "77",
                "sender": "+4915752982212",
                "body": "STOP",
                "sim": 0,
                "received_at": "2026-01-02T03:04:05Z",
            }
        ]
    }
    first = api("incoming", payload).json()
    assert api("incoming", payload).json() == first
    (stored,) = first["stored"]
    message = Message.objects.get(pk=stored["sms_id"])
    assert message.status == Status.INCOMING and message.sent_at.isoformat().startswith(
        "2026-01-02T03:04:05"
    )


def test_oversized_and_malformed_bodies_are_refused(api):
    big = api("incoming", {"messages": [{"id": "1", "sender": "1", "body": "x" * (1024 * 1024)}]})
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    bad = Client(HTTP_AUTHORIZATION=api.device and "Bearer x").post(
        API + "poll", "{", content_type="application/json"
    )
    assert bad.status_code in (400, 401)
    too_many = api("confirm", {"ids": list(range(1, 1002)), "lease": str(uuid.uuid4())})
    assert too_many.status_code == 400


def test_a_confirm_without_the_polls_lease_is_refused_as_invalid(api):
    response = api("confirm", {"ids": [1]})
    assert response.status_code == 400
    assert "lease" in response.json()["error"]["fields"]


def test_of_two_pollers_on_one_token_only_the_latest_lease_confirms(api):
    device = api.device
    ids = messaging.submit(
        device.account, [messaging.OutgoingSms(device.pk, "+4915752982212", "Hello")] * 3
    )
    first = api("poll", {}).json()
    second = api("poll", {}).json()  # the same token, another process (or a retried poll)
    assert [m["id"] for m in first["messages"]] == [m["id"] for m in second["messages"]] == ids
    assert first["lease"] != second["lease"]
    loser = api("confirm", {"ids": ids, "lease": first["lease"]}).json()
    assert loser == {"confirmed": [], "refused": ids, "superseded": ids}
    winner = api("confirm", {"ids": ids, "lease": second["lease"]}).json()
    assert winner["confirmed"] == ids
    # the loser retrying its confirm still gets nothing to send
    assert api("confirm", {"ids": ids, "lease": first["lease"]}).json()["confirmed"] == []


def test_identical_reports_in_one_batch_apply_once(api):
    device = api.device
    (message_id,) = messaging.submit(
        device.account, [messaging.OutgoingSms(device.pk, "+4915752982212", "Hello")]
    )
    lease = api("poll", {}).json()["lease"]
    api("confirm", {"ids": [message_id], "lease": lease})
    item = {"id": message_id, "status": "sent"}
    results = api("report", {"reports": [item, item]}).json()["results"]
    assert [r["result"] for r in results] == ["applied", "unchanged"]


def test_the_agent_can_be_downloaded_from_the_server(db):
    response = Client().get(API + "agent.py")
    assert response.status_code == 200
    source = response.getvalue()
    assert source.startswith(b"#!/usr/bin/env python3") and b"def main(" in source
    compile(source, "sms_agent.py", "exec")


# --- Hostile input: a 400 naming the field, never a 500 or a row that breaks a listing -----


def _raw(client, name, text):
    return client.post(API + name, text, content_type="application/json")


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_poll_with_json_nested_deeply_is_a_400(api, depth):
    response = _raw(api.client, "poll", f'{{"slots": {"[" * depth + "]" * depth}}}')
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "malformed" and error["message"].endswith(
        "nested deeper than 32 levels"
    )


def test_pair_with_json_nested_a_thousand_deep_is_a_400_without_a_token(db):
    response = _raw(Client(), "pair", f'{{"device": {"[" * 1000 + "]" * 1000}}}')
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "malformed",
        "message": "JSON body is nested deeper than 32 levels",
    }


def test_a_pairing_body_over_a_megabyte_is_a_413_without_a_token(db):
    response = _raw(Client(), "pair", '{"code": "' + "A" * (1024 * 1024) + '"}')
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_message_ids_beyond_64_bits_are_a_400(api):
    confirm = api("confirm", {"ids": [2**64], "lease": str(uuid.uuid4())})
    assert confirm.status_code == 400 and "ids" in confirm.json()["error"]["fields"]
    report = api("report", {"reports": [{"id": 2**64, "status": "sent"}]})
    assert report.status_code == 400 and "reports" in report.json()["error"]["fields"]


def test_true_is_not_a_message_id(api):
    (message_id,) = messaging.submit(
        api.device.account, [messaging.OutgoingSms(api.device.pk, "1234", "x")]
    )
    report = api("report", {"reports": [{"id": True, "status": "sent"}]})
    assert report.status_code == 400
    assert Message.objects.get(pk=message_id).status == Status.NEW


def test_an_incoming_time_at_the_end_of_time_is_a_400_and_listings_keep_working(api):
    from gateway.services import compat_token

    # Representable in UTC, but not in a zone east of it: getallsms in +14:00 failed on it.
    item = {"id": "1", "sender": "+4915752982212", "body": "hi", "received_at": ""}
    for received_at in ("9999-12-31T12:00:00Z", "9999-12-31T23:59:59-12:00"):
        response = api("incoming", {"messages": [{**item, "received_at": received_at}]})
        assert response.status_code == 400
        (problem,) = response.json()["error"]["fields"]["messages"]["0"]["received_at"]
        assert problem.startswith("received_at is out of range"), problem
    assert Message.objects.count() == 0
    listed = Client().get(
        "/getdata/getallsms",
        {"token": compat_token(api.device.account), "timezone": "Pacific/Kiritimati"},
    )
    assert listed.json()["error"] == 0


def test_a_lone_surrogate_in_an_incoming_sms_is_a_400_naming_the_field(api):
    text = '{"messages": [{"id": "1", "sender": "+4915752982212", "body": "\\ud83d"}]}'
    response = _raw(api.client, "incoming", text)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(
        "messages[0].body contains an unpaired UTF-16 surrogate"
    )
    assert Message.objects.count() == 0
