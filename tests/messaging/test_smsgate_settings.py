"""SMSGate's integration API: ``GET``/``PUT``/``PATCH /settings``, what the server applies
itself (pacing, caps) and what reaches the SMSGate app phones (their ``GET /settings``,
their webhooks' signing key), and the write-only signing key on the server's own webhooks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devices.models import Device, SimSlot
from messaging import webhooks
from messaging.models import WebhookEndpoint
from tests.devices.test_smsgate_app import RECEIVED, App, basic, signed

pytestmark = pytest.mark.django_db
API = "/api/3rdparty/v1"
PASSWORD = "correct horse battery"


@pytest.fixture
def owner(make_user):
    return make_user("owner@example.com")


@pytest.fixture
def app(client, owner) -> App:
    phone = App(client)
    assert phone.register(basic("owner@example.com", PASSWORD)).status_code == 201
    return phone


def call(client: Any, method: str, body: Any = None, auth: str | None = None) -> Any:
    data = json.dumps(body) if body is not None else ""
    return client.generic(
        method, f"{API}/settings", data, content_type="application/json",
        HTTP_AUTHORIZATION=auth or basic("owner@example.com", PASSWORD),
    )  # fmt: skip


def test_nothing_stored_reads_as_an_empty_object(client, owner):
    answer = call(client, "GET")
    assert answer.status_code == 200 and answer.json() == {}


def test_patch_merges_put_replaces_and_secrets_are_never_read_back(client, owner):
    first = {
        "messages": {"send_interval_min": 5, "send_interval_max": 9, "limit_period": "PerHour",
                     "limit_value": 40, "processing_order": "LIFO"},
        "ping": {"interval_seconds": 300},
        "webhooks": {"retry_count": 3, "signing_key": "s3cret-key"},
        "unknown": {"x": 1},
    }  # fmt: skip
    answer = call(client, "PATCH", first)
    assert answer.status_code == 200
    expected = {
        "messages": {"send_interval_min": 5, "send_interval_max": 9, "limit_period": "PerHour",
                     "limit_value": 40},
        "ping": {"interval_seconds": 300},
        "webhooks": {"retry_count": 3},
    }  # fmt: skip
    assert answer.json() == expected and call(client, "GET").json() == expected

    # PATCH: key by key; null resets one key.
    merged = call(
        client, "PATCH", {"messages": {"send_interval_max": None}, "logs": {"lifetime_days": 7}}
    )
    assert merged.json()["messages"] == {
        "send_interval_min": 5,
        "limit_period": "PerHour",
        "limit_value": 40,
    }
    assert merged.json()["logs"] == {"lifetime_days": 7} and merged.json()["ping"] == {
        "interval_seconds": 300
    }

    # PUT: unsent keys are gone (the signing key too).
    replaced = call(client, "PUT", {"gateway": {"notification_channel": "AUTO"}})
    assert replaced.status_code == 200
    assert (
        replaced.json()
        == call(client, "GET").json()
        == {"gateway": {"notification_channel": "AUTO"}}
    )
    assert owner.account.phone_settings.signing_key == ""


def test_camel_case_spellings_are_the_same_keys(client, owner):
    answer = call(client, "PATCH", {"messages": {"limitPeriod": "PerDay", "limitValue": 500}})
    assert answer.json() == {"messages": {"limit_period": "PerDay", "limit_value": 500}}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"messages": {"limit_period": "Weekly"}}, "messages.limit_period must be one of"),
        ({"messages": {"send_interval_min": 0}}, "messages.send_interval_min must be a whole"),
        ({"messages": {"send_interval_min": True}}, "messages.send_interval_min must be a whole"),
        ({"messages": {"work_hours_start": "25:00"}}, "HH:mm"),
        ({"messages": {"send_interval_min": 9, "send_interval_max": 2}}, "must not be below"),
        ({"messages": {"limit_period": "PerHour"}}, "limit_value is required"),
        ({"messages": "fast"}, "messages must be an object"),
        ({"encryption": {"passphrase": "open sesame"}}, "never holds it"),
        ({"gateway": {"cloud_url": "https://elsewhere.example"}}, "cannot be set"),
        ({"webhooks": {"signing_key": "x" * 65}}, "1 to 64 printable"),
        ({"receiver": {"content_provider_enabled": "yes"}}, "true or false"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_settings_get_a_400_and_change_nothing(client, owner, body, problem):
    call(client, "PATCH", {"ping": {"interval_seconds": 60}})
    answer = call(client, "PATCH", body)
    assert answer.status_code == 400 and problem in answer.json()["message"]
    assert call(client, "GET").json() == {"ping": {"interval_seconds": 60}}


def test_empty_secrets_pass_as_smsgates_server_lets_them(client, owner):
    answer = call(
        client, "PATCH", {"encryption": {"passphrase": ""}, "gateway": {"cloud_url": None}}
    )
    assert answer.status_code == 200 and answer.json() == {}


def test_scopes_read_and_write(client, owner):
    from gateway import jwt_tokens

    pair = jwt_tokens.issue(owner.account, frozenset({"settings:read"}), None)
    assert call(client, "GET", auth=f"Bearer {pair.access}").status_code == 200
    refused = call(client, "PATCH", {"ping": {"interval_seconds": 5}}, auth=f"Bearer {pair.access}")
    assert refused.status_code == 403 and refused.json() == {
        "message": "scope required: settings:write"
    }


def test_pacing_and_caps_are_applied_to_every_phone_and_sim(client, owner, app, paired):
    ours, _ = paired(account=owner.account, delay_between_sms=2)
    call(
        client,
        "PATCH",
        {"messages": {"send_interval_min": 12, "limit_period": "PerDay", "limit_value": 300}},
    )
    phones = Device.objects.filter(account=owner.account)
    assert {d.delay_between_sms for d in phones} == {12}
    sims = SimSlot.objects.filter(device__account=owner.account)
    assert {(s.max_per_day, s.max_per_hour) for s in sims} == {(300, None)}

    # A per-minute limit is the phone's to keep: the caps set through the API go away.
    call(client, "PATCH", {"messages": {"limit_period": "PerMinute", "limit_value": 20}})
    assert {(s.max_per_day, s.max_per_hour) for s in sims.all()} == {(None, None)}

    # A cap the operator set in the admin is left alone by a change of other keys.
    SimSlot.objects.filter(device=ours).update(max_per_hour=7)
    call(client, "PATCH", {"ping": {"interval_seconds": 30}})
    assert SimSlot.objects.get(device=ours, slot=0).max_per_hour == 7

    # A phone added later takes the pacing.
    from devices import services

    newer, _ = services.pair_with_login(
        owner.account, services.DeviceDetails(imei="358240059999999")
    )
    assert Device.objects.get(pk=newer.pk).delay_between_sms == 12


def test_app_phones_get_the_stored_keys_but_what_the_server_enforces(client, owner, app):
    call(client, "PATCH", {
        "messages": {"send_interval_min": 4, "limit_period": "PerMinute", "limit_value": 10,
                     "work_hours_enabled": True, "work_hours_start": "08:00", "work_hours_end": "20:00"},
        "ping": {"interval_seconds": 900},
        "gateway": {"notification_channel": "AUTO"},
        "webhooks": {"signing_key": "shared-key-1"},
    })  # fmt: skip
    served = app.call("GET", "/settings").json()
    assert served["messages"] == {
        "limit_period": "PerMinute", "limit_value": 10, "work_hours_enabled": True,
        "work_hours_start": "08:00", "work_hours_end": "20:00", "processing_order": "FIFO",
    }  # fmt: skip
    assert served["ping"] == {"interval_seconds": 900}
    assert served["gateway"]["notification_channel"] == "SSE_ONLY"  # no push service here
    assert served["webhooks"] == {"signing_key": "shared-key-1", "retry_count": 15}


def test_the_signing_key_signs_the_phones_webhooks_and_the_servers(client, owner, app, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    endpoint = webhooks.save_smsgate_endpoint(
        owner.account, "hook-1", "https://127.0.0.1:9/in", "sms:received", None
    )
    own_secret = endpoint.secret
    call(client, "PATCH", {"webhooks": {"signing_key": "shared-key-2"}})
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == "shared-key-2"
    later = webhooks.save_smsgate_endpoint(
        owner.account, "hook-2", "https://127.0.0.1:9/in2", "sms:sent", None
    )
    assert later.secret == "shared-key-2"

    # The phone signs with the new key once it fetched its settings; with its own before.
    assert signed(app, "sms:received", RECEIVED, key="shared-key-2").status_code == 200
    again = dict(RECEIVED, messageId="other-1")
    assert signed(app, "sms:received", again, event_id="e-own").status_code == 200
    assert signed(app, "sms:received", again, event_id="e-bad", key="nope").status_code == 401

    # Reset: each webhook gets a secret of its own again, and the phone its own key.
    call(client, "PATCH", {"webhooks": {"signing_key": None}})
    secrets_now = set(
        WebhookEndpoint.objects.filter(kind="smsgate").values_list("secret", flat=True)
    )
    assert (
        len(secrets_now) == 2
        and "shared-key-2" not in secrets_now
        and own_secret not in secrets_now
    )
    assert (
        app.call("GET", "/settings").json()["webhooks"]["signing_key"]
        == Device.objects.get(pk=int(app.id)).webhook_key
    )


def test_a_write_tells_the_app_phones_to_fetch_their_settings(
    client, owner, app, monkeypatch, django_capture_on_commit_callbacks
):
    from devices import wake

    told: list[tuple[list[int], str]] = []
    monkeypatch.setattr(wake, "signal", lambda ids, kind, data="": told.append((list(ids), kind)))
    with django_capture_on_commit_callbacks(execute=True):
        call(client, "PATCH", {"ping": {"interval_seconds": 120}})
    assert ([int(app.id)], wake.SETTINGS) in told


def test_the_admin_shows_the_settings_read_only(client, owner, admin_client):
    call(client, "PATCH", {"ping": {"interval_seconds": 45}, "webhooks": {"signing_key": "k-1"}})
    stored = owner.account.phone_settings
    page = admin_client.get(f"/admin/devices/phonesettings/{stored.pk}/change/")
    text = page.content.decode()
    assert page.status_code == 200 and "interval_seconds = 45" in text
    assert "k-1" not in text  # the key is write-only everywhere
    assert 'name="_save"' not in text  # read-only: no save button
    assert admin_client.get("/admin/devices/phonesettings/").status_code == 200
