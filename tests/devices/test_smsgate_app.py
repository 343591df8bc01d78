"""The SMSGate Android app's phone protocol, driven as the app v1.68.0 drives it (the
spec: shared/spec/smsgate-mobile-api.md; our reference: docs/android-app.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from datetime import UTC, timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from contacts.models import Contact
from devices import services
from devices.handoff import FENCE_MARGIN, valid_until
from devices.models import Device
from gateway import counters
from gateway import services as accounts
from messaging import services as messaging
from messaging.models import Message, Status, served_id

pytestmark = pytest.mark.django_db

BASE = "/api/mobile/v1"
# Exactly what the app reads right: 3 fraction digits (or none) and an offset.
APP_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?(Z|[+-]\d\d:\d\d)")
SIMS = [
    {"slotIndex": 0, "simNumber": 1, "phoneNumber": "********1234", "carrierName": "****bile",
     "iccid": "***************0001"},
    {"slotIndex": 1, "simNumber": 2, "carrierName": "****fone"},
]  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    # Login failures counted by earlier tests (same client address) start from nothing.
    monkeypatch.setattr(counters, "_fallback", counters.Fallback())
    cache.clear()


class App:
    """One phone running the app: its calls, with the app's headers and bodies."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.token = ""
        self.id = ""

    def call(self, method: str, path: str, body: Any = None, auth: str | None = None) -> Any:
        headers = {"User-Agent": "me.capcom.smsgateway/1.68.0"}
        auth = auth if auth is not None else (f"Bearer {self.token}" if self.token else "")
        if auth:
            headers["Authorization"] = auth
        data = json.dumps(body, separators=(",", ":")) if body is not None else ""
        return self.client.generic(
            method, BASE + path, data, content_type="application/json", headers=headers
        )

    def register(self, auth: str | None, name: str = "samsung/a52qnsxx", sims: Any = None) -> Any:
        answer = self.call(
            "POST", "/device", {"name": name, "simCards": SIMS if sims is None else sims},
            auth=auth or "",
        )  # fmt: skip
        if answer.status_code == 201:
            self.token, self.id = answer.json()["token"], answer.json()["id"]
        return answer

    def fetch(self) -> list[dict[str, Any]]:
        answer = self.call("GET", "/message?order=lifo")
        assert answer.status_code == 200, answer.content
        assert answer["Content-Type"].startswith("application/json")
        return answer.json()

    def report(self, message_id: str, state: str, recipient_state: str | None = None,
               error: str | None = None, phone: str = "+4915752982212") -> Any:  # fmt: skip
        recipient: dict[str, Any] = {"phoneNumber": phone, "state": recipient_state or state}
        if error:
            recipient["error"] = error
        now = timezone.now().strftime("%Y-%m-%dT%H:%M:%S.123+05:30")
        return self.call(
            "PATCH", "/message",
            [{"id": message_id, "state": state, "recipients": [recipient], "states": {state: now}}],
        )  # fmt: skip


def basic(email: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()


@pytest.fixture
def owner(make_user):
    return make_user("owner@example.com")


@pytest.fixture
def app(client, owner) -> App:
    phone = App(client)
    assert phone.register(basic("Owner@example.com", "correct horse battery")).status_code == 201
    return phone


def device_of(app: App) -> Device:
    return Device.objects.get(pk=int(app.id))


def queue(app: App, **overrides: Any) -> Message:
    device = device_of(app)
    request = messaging.OutgoingSms(
        device.pk, overrides.pop("phone", "+4915752982212"), overrides.pop("body", "Hello"),
        **overrides,
    )  # fmt: skip
    (pk,) = messaging.submit(device.account, [request])
    return Message.objects.get(pk=pk)


# --- Registration ---------------------------------------------------------------------------


def test_basic_registration_answers_what_the_app_needs_and_stores_its_sims(app, owner):
    device = device_of(app)
    assert device.protocol == Device.Protocol.SMSGATE and device.account_id == owner.account_id
    assert app.token and app.id == str(device.pk)
    assert device.needs_sync and device.webhook_key
    slots = {s.slot: s for s in device.sims.all()}
    assert set(slots) == {0, 1} and slots[1].carrier_name == "****fone"
    assert slots[0].iccid == "***************0001"


def test_the_answer_has_a_login_whichever_way_the_phone_registered(client, owner):
    token = accounts.enrollment_token(owner.account)
    answer = App(client).register(f"Bearer {token}")
    assert answer.status_code == 201
    assert answer.json()["login"] == "owner@example.com"
    assert "password" not in answer.json()


def test_a_numeric_code_registers_once(client, owner):
    _pairing, code = services.create_pairing_code(owner.account, digits=True)
    assert code.isdigit() and len(code) == 8
    assert App(client).register(f"Code {code}").status_code == 201
    again = App(client).register(f"Code {code}")
    assert again.status_code == 401 and "used or expired" in again.json()["message"]


def test_an_expired_code_is_refused(client, owner):
    pairing, code = services.create_pairing_code(owner.account, digits=True)
    pairing.expires_at = timezone.now() - timedelta(seconds=1)
    pairing.save()
    assert App(client).register(f"Code {code}").status_code == 401


def test_anonymous_or_wrong_credentials_get_401(client, owner):
    assert App(client).register(None).status_code == 401
    assert App(client).register("Bearer enr_" + "0" * 32).status_code == 401
    assert App(client).register(basic("owner@example.com", "wrong")).status_code == 401
    assert App(client).register("Basic !!!").status_code == 401


def test_password_guessing_is_limited_like_gettoken(client, owner):
    statuses = [
        App(client).register(basic("owner@example.com", f"guess {i}")).status_code
        for i in range(11)
    ]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    # The limit holds for the right password too until the window passes.
    assert (
        App(client).register(basic("owner@example.com", "correct horse battery")).status_code == 429
    )


def test_a_revoked_enrollment_token_stops_working_and_a_fresh_one_is_shown(client, owner):
    token = accounts.enrollment_token(owner.account)
    record = owner.account.api_tokens.get(kind="enroll", revoked_at__isnull=True)
    accounts.revoke_token(owner.account, record.pk)
    assert App(client).register(f"Bearer {token}").status_code == 401
    fresh = accounts.enrollment_token(owner.account)
    assert fresh != token and App(client).register(f"Bearer {fresh}").status_code == 201


def test_each_account_has_its_own_enrollment_token(make_account):
    first, second = make_account(), make_account()
    assert accounts.enrollment_token(first) != accounts.enrollment_token(second)


# --- PATCH /device and the 401 rule ---------------------------------------------------------


def test_refresh_answers_2xx_and_401_exactly_when_the_app_must_register_again(app, client, paired):
    body = {"id": app.id, "simCards": SIMS[:1]}
    assert app.call("PATCH", "/device", body).status_code == 204
    assert set(device_of(app).sims.values_list("slot", flat=True)) == {0}
    assert app.call("PATCH", "/device", {"id": "999999", "simCards": []}).status_code == 403
    _agent, agent_token = paired()
    assert app.call("PATCH", "/device", body, auth=f"Bearer {agent_token}").status_code == 401
    Device.objects.filter(pk=int(app.id)).delete()
    assert app.call("PATCH", "/device", body).status_code == 401


def test_paths_are_exact_and_a_doubled_slash_is_tolerated(app):
    assert app.call("PATCH", "//device", {"id": app.id}).status_code == 204
    assert app.call("GET", "/message/").status_code == 404  # no redirect, ever
    assert app.call("GET", "//message").status_code == 200


def test_get_device_tells_the_phone_its_address(app):
    answer = app.call("GET", "/device")
    assert answer.status_code == 200 and answer.json() == {"externalIp": "127.0.0.1"}


# --- Messages -------------------------------------------------------------------------------


def test_a_fetched_message_has_every_field_the_app_reads_valid(app):
    urgent = queue(app, urgent=True, sim=1, body="Code 1234")
    (item,) = app.fetch()
    assert item["id"] == served_id(urgent.pk, urgent.created_at)
    assert item["textMessage"] == {"text": "Code 1234"}
    assert item["phoneNumbers"] == ["+4915752982212"]
    assert item["simNumber"] == 2 and item["priority"] == 100
    assert item["withDeliveryReport"] is True and item["isEncrypted"] is False
    assert item["state"] == "Pending"
    for field in ("validUntil", "createdAt"):
        assert APP_DATE.fullmatch(item[field]), item[field]
    assert "scheduleAt" not in item  # due now
    urgent.refresh_from_db()
    assert urgent.status == Status.TAKEN and urgent.confirmed_at is None
    # Fenced: the lease lasts while the phone itself may still send it.
    assert urgent.lease_expires_at == valid_until(urgent.send_at) + FENCE_MARGIN


def test_paced_messages_carry_schedule_at(app):
    device = device_of(app)
    device.delay_between_sms = 20
    device.save()
    queue(app, body="one")
    queue(app, body="two")
    first, second = app.fetch()
    assert "scheduleAt" not in first and APP_DATE.fullmatch(second["scheduleAt"])


def test_a_message_is_served_until_the_phone_reports_and_then_never_again(app):
    message = queue(app)
    (first,) = app.fetch()
    (again,) = app.fetch()  # the phone stored it but has not sent it yet
    assert again["id"] == first["id"]
    assert app.report(first["id"], "Pending").status_code == 204
    message.refresh_from_db()
    assert message.status == Status.TAKEN and message.confirmed_at is not None
    assert app.fetch() == []


def test_one_recipient_processed_sent_delivered_reordered_and_repeated(app):
    message = queue(app)
    (item,) = app.fetch()
    for state in ("Processed", "Delivered", "Sent", "Processed", "Delivered"):
        assert app.report(item["id"], state).status_code == 204
    message.refresh_from_db()
    assert message.status == Status.DELIVERED and message.delivered_at is not None


def test_several_states_of_one_message_in_one_patch_apply_in_order(app):
    # The app sends one element per PATCH; a list naming a message twice still moves it
    # step by step (each move sees what the one before it did), once per state.
    message = queue(app)
    (item,) = app.fetch()
    element = {"phoneNumber": "+4915752982212"}
    answer = app.call(
        "PATCH", "/message",
        [
            {"id": item["id"], "state": "Sent", "recipients": [{**element, "state": "Sent"}]},
            {"id": item["id"], "state": "Delivered",
             "recipients": [{**element, "state": "Delivered"}]},
        ],
    )  # fmt: skip
    assert answer.status_code == 204
    message.refresh_from_db()
    assert message.status == Status.DELIVERED and message.sent_at and message.delivered_at
    moves = list(message.history.order_by("id").values_list("to_status", flat=True))
    assert moves[-2:] == [Status.SENT, Status.DELIVERED]


def test_the_recipient_state_wins_over_the_aggregate(app):
    message = queue(app)
    (item,) = app.fetch()
    app.report(item["id"], "Processed", recipient_state="Sent")
    message.refresh_from_db()
    assert message.status == Status.SENT


def test_a_failure_keeps_the_phones_reason(app):
    message = queue(app)
    (item,) = app.fetch()
    app.report(item["id"], "Failed", error="Can't send message: SIM 3 not found")
    message.refresh_from_db()
    assert message.status == Status.GENERIC_FAILURE
    assert message.error_detail == "Can't send message: SIM 3 not found"


def test_unknown_or_forged_ids_are_answered_2xx_and_change_nothing(app, make_message, account):
    other = make_message(account)  # another account's message
    message = queue(app)
    app.fetch()
    for forged in ("nonsense", served_id(other.pk, other.created_at),
                   f"{message.pk}-00000000", served_id(message.pk, message.created_at + timedelta(microseconds=1))):  # fmt: skip
        assert app.report(forged, "Sent").status_code == 204
    message.refresh_from_db()
    other.refresh_from_db()
    assert message.status == Status.TAKEN and message.confirmed_at is None
    assert other.status == Status.NEW


def test_bad_reports_get_a_clear_400(app):
    assert app.call("PATCH", "/message", {"id": "x"}).status_code == 400
    assert app.call("PATCH", "/message", [{"id": 5, "state": "Sent"}]).status_code == 400
    answer = app.call("PATCH", "/message", [{"id": "1-aaaaaaaa", "state": "Sent"}] * 101)
    assert answer.status_code == 400 and "at most 100" in answer.json()["message"]


def test_served_ids_never_repeat_even_when_primary_keys_start_over():
    now = timezone.now()
    assert served_id(1, now) != served_id(1, now + timedelta(microseconds=1))
    assert served_id(1, now) == served_id(1, now)


def test_a_lease_that_ran_out_is_taken_back_by_the_phones_report(app):
    """Its fence passed, the message went back to waiting; the phone still reports it (it
    had it all along): it is the phone's again, confirmed, and the outcome applies."""
    message = queue(app)
    (item,) = app.fetch()
    Message.objects.filter(pk=message.pk).update(lease_expires_at=timezone.now() - timedelta(1))
    from devices.handoff import return_expired_leases

    assert return_expired_leases() == 1
    app.report(item["id"], "Sent")
    message.refresh_from_db()
    assert message.status == Status.SENT and message.device_id == int(app.id)


def test_a_served_message_is_not_moved_to_another_device(app, make_device):
    message = queue(app)
    app.fetch()
    device = device_of(app)
    other = make_device(device.account)
    assert messaging.reassign(device.account, [message.pk], other.pk, 0) == 0
    message.refresh_from_db()
    assert message.device_id == device.pk and message.status == Status.TAKEN


# --- Cancellation (two-phase) ---------------------------------------------------------------


def test_a_cancelled_served_message_is_offered_as_cancelling_until_the_phone_answers(app):
    message = queue(app)
    (item,) = app.fetch()
    messaging.cancel(device_of(app).account, [message.pk])
    (cancelling,) = app.fetch()
    assert cancelling["id"] == item["id"] and cancelling["state"] == "Cancelling"
    app.report(item["id"], "Pending")  # the phone has not processed the cancel yet
    assert [i["state"] for i in app.fetch()] == ["Cancelling"]
    app.report(item["id"], "Cancelled")
    assert app.fetch() == []
    message.refresh_from_db()
    assert message.status == Status.CANCELLED


def test_a_cancel_the_phone_was_too_late_for_ends_as_what_the_phone_did(app):
    message = queue(app)
    (item,) = app.fetch()
    app.report(item["id"], "Processed")
    messaging.cancel(device_of(app).account, [message.pk])
    app.report(item["id"], "Sent")
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert app.fetch() == []


def test_a_message_cancelled_before_any_fetch_never_reaches_the_phone(app):
    message = queue(app)
    messaging.cancel(device_of(app).account, [message.pk])
    assert app.fetch() == []


# --- Settings and webhooks ------------------------------------------------------------------


def test_settings_keep_the_phone_on_sse_fifo_with_our_signing_key(app, settings):
    settings.PUBLIC_URL = ""
    body = app.call("GET", "/settings").json()
    assert list(body) == ["messages", "webhooks", "ping", "gateway"]
    assert body["gateway"] == {"notification_channel": "SSE_ONLY"}  # http: no cloud_url
    assert body["messages"] == {"processing_order": "FIFO"}
    assert body["webhooks"]["signing_key"] == device_of(app).webhook_key
    assert body["ping"]["interval_seconds"] >= 10
    settings.PUBLIC_URL = "https://sms.example.com"
    body = app.call("GET", "/settings").json()
    assert body["gateway"]["cloud_url"] == "https://sms.example.com/api/mobile/v1"


def test_webhooks_list_our_receiver_for_known_events(app, settings):
    settings.PUBLIC_URL = "https://sms.example.com"
    hooks = app.call("GET", "/webhooks").json()
    known = {"sms:received", "sms:sent", "sms:delivered", "sms:failed", "sms:cancelled",
             "sms:data-received", "mms:received", "mms:downloaded", "system:ping", "app:started"}  # fmt: skip
    assert {h["event"] for h in hooks} <= known and "sms:received" in {h["event"] for h in hooks}
    assert all(isinstance(h["id"], str) for h in hooks)
    assert {h["url"] for h in hooks} == {"https://sms.example.com/api/mobile/v1/hook"}


def signed(app: App, event: str, payload: dict[str, Any], *, event_id: str = "V1StGXR8_Z5jdHi6B-myT",
           key: str | None = None, stamp: int | None = None) -> Any:  # fmt: skip
    envelope = {"id": event_id, "webhookId": f"gateway-{event}", "event": event,
                "deviceId": app.id, "payload": payload}  # fmt: skip
    # Gson's escaping of < > & = ' (the signature is over these exact bytes).
    body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).replace("=", "\\u003d")
    timestamp = str(int(time.time()) if stamp is None else stamp)
    secret = key if key is not None else device_of(app).webhook_key
    signature = hmac.new(secret.encode(), (body + timestamp).encode(), hashlib.sha256).hexdigest()
    return app.client.post(
        BASE + "/hook", body.encode(), content_type="application/json",
        HTTP_X_TIMESTAMP=timestamp, HTTP_X_SIGNATURE=signature,
    )  # fmt: skip


RECEIVED = {"message": "STOP please", "receivedAt": "2025-03-01T17:04:05.123+05:30",
            "messageId": "a1b2c3", "sender": "+4915752982299", "recipient": "+4915700000001",
            "simNumber": 2, "phoneNumber": "+4915752982299"}  # fmt: skip


def test_a_signed_incoming_sms_is_stored_once_and_stop_opts_out(app):
    Contact.objects.create(account=device_of(app).account, phone="+4915752982299")
    assert signed(app, "sms:received", RECEIVED).status_code == 200
    assert signed(app, "sms:received", RECEIVED).status_code == 200  # the phone's retry
    (incoming,) = Message.objects.filter(status=Status.INCOMING)
    assert incoming.body == "STOP please" and incoming.sim == 1
    assert incoming.phone == "+4915752982299"
    contact = Contact.objects.get(phone="+4915752982299")
    assert contact.opted_out and contact.opted_out_at is not None


def test_bad_stale_or_unsigned_webhooks_are_refused(app):
    assert signed(app, "sms:received", RECEIVED, key="wrong").status_code == 401
    stale = int(time.time()) - 3600
    assert signed(app, "sms:received", RECEIVED, stamp=stale).status_code == 401
    unsigned = app.client.post(
        BASE + "/hook", {"deviceId": app.id}, content_type="application/json"
    )
    assert unsigned.status_code == 401
    assert not Message.objects.filter(status=Status.INCOMING).exists()


def test_state_webhooks_apply_like_state_reports(app):
    message = queue(app)
    (item,) = app.fetch()
    payload = {"deliveredAt": "2025-03-01T17:04:05.123+05:30", "messageId": item["id"],
               "recipient": "+4915752982212", "simNumber": 1, "phoneNumber": "+4915752982212"}  # fmt: skip
    assert signed(app, "sms:delivered", payload, event_id="e1").status_code == 200
    message.refresh_from_db()
    assert message.status == Status.DELIVERED


def test_a_ping_records_the_phones_health(app):
    health = {"health": {"version": "1.68.0", "releaseId": 1, "status": "pass", "checks": {
        "battery:level": {"status": "pass", "observedValue": 77, "observedUnit": "percent"},
        "battery:charging": {"status": "pass", "observedValue": 1, "observedUnit": "boolean"},
        "messages:failed": {"status": "pass", "observedValue": 0, "observedUnit": "messages"}}}}  # fmt: skip
    assert signed(app, "system:ping", health, event_id="p1").status_code == 200
    device = device_of(app)
    assert device.battery_percent == 77 and device.charging is True
    assert device.health["status"] == "pass"
    # The SMSGateway24 API shows it too.
    token = accounts.compat_token(device.account)
    listed = app.client.get("/getdata/getalldevices", {"token": token}).json()
    shown = listed["device"][str(device.pk)]
    assert (shown["battery"], shown["charging"], shown["health"]) == (77, True, "pass")
    assert list(shown)[-4:] == ["subscription", "battery", "charging", "health"]


def test_app_started_reports_the_real_sim_inventory(app):
    sims = {"simCards": [{"slotIndex": 0, "simNumber": 1, "phoneNumber": "+4915700000001",
                          "carrierName": "Telekom", "iccid": "8949000000000000001"}]}  # fmt: skip
    assert signed(app, "app:started", sims, event_id="s1").status_code == 200
    (sim,) = device_of(app).sims.all()
    assert sim.number == "+4915700000001" and sim.carrier_name == "Telekom"


# --- Re-registration ------------------------------------------------------------------------


def test_the_same_phone_registering_again_takes_over_its_queue(app, client, owner):
    old = device_of(app)
    waiting = queue(app, body="waiting")
    served = queue(app, body="served")
    Message.objects.filter(pk=waiting.pk).update(send_at=timezone.now() + timedelta(hours=1))
    (item,) = app.fetch()
    assert item["textMessage"]["text"] == "served"
    # The operator revoked the phone (deleted its token): PATCH /device answers 401 and the
    # app registers anonymously with the enrollment token.
    Device.objects.filter(pk=old.pk).update(token_hash=None)
    assert app.call("PATCH", "/device", {"id": app.id}).status_code == 401
    app.token = ""
    token = accounts.enrollment_token(owner.account)
    assert app.register(f"Bearer {token}").status_code == 201
    new = device_of(app)
    assert new.pk != old.pk and new.replaces_id == old.pk
    waiting.refresh_from_db()
    served.refresh_from_db()
    assert waiting.device_id == new.pk and waiting.status == Status.NEW
    assert served.device_id == old.pk  # it may have been sent: never re-served elsewhere
    old.refresh_from_db()
    assert old.enabled is False
    # The same installation still reports what it had, now with its new token.
    app.report(item["id"], "Sent")
    served.refresh_from_db()
    assert served.status == Status.SENT


def test_a_phone_without_sim_identities_is_never_guessed_to_be_another(client, owner):
    auth = basic("owner@example.com", "correct horse battery")
    first, second = App(client), App(client)
    first.register(auth, sims=[])
    second.register(auth, sims=[])
    assert Device.objects.get(pk=int(second.id)).replaces_id is None


# --- The operator's "Add device" page -------------------------------------------------------


def test_the_add_device_page_shows_what_to_type_into_the_app(client, make_user, settings):
    make_user("op@example.com", is_staff=True, is_superuser=True)
    client.login(email="op@example.com", password="correct horse battery")
    settings.PUBLIC_URL = "https://sms.example.com"
    page = client.post("/admin/devices/device/add/").content.decode()
    assert "https://sms.example.com/api/mobile/v1" in page and "server-warning" not in page
    code = re.search(r'class="app-code"[^>]*>(\d{8})<', page)
    assert code is not None
    token = re.search(r'class="app-enrollment-token">([^<]+)<', page)
    assert token is not None and token.group(1).startswith("enr_")
    # The code registers a phone, once.
    assert App(Client()).register(f"Code {code.group(1)}").status_code == 201
    assert App(Client()).register(f"Bearer {token.group(1)}").status_code == 201


def test_the_add_device_page_warns_about_urls_a_phone_cannot_use(client, make_user, settings):
    make_user("op@example.com", is_staff=True, is_superuser=True)
    client.login(email="op@example.com", password="correct horse battery")
    settings.PUBLIC_URL = "http://127.0.0.1:8000"
    page = client.post("/admin/devices/device/add/").content.decode()
    assert "server-warning" in page and "not reachable from a phone" in page
    settings.PUBLIC_URL = "http://192.168.1.10:8000"
    page = client.post("/admin/devices/device/add/").content.decode()
    assert "connects only over HTTPS" in page


def test_the_admin_shows_the_phones_health_report(app, client, make_user):
    health = {"health": {"status": "warn", "checks": {
        "battery:level": {"status": "warn", "observedValue": 9, "observedUnit": "percent"},
        "connection:status": {"status": "pass", "observedValue": 1, "observedUnit": "boolean"}}}}  # fmt: skip
    signed(app, "system:ping", health, event_id="h1")
    make_user("op@example.com", is_staff=True, is_superuser=True)
    client.login(email="op@example.com", password="correct horse battery")
    page = client.get(f"/admin/devices/device/{app.id}/change/").content.decode()
    assert "battery:level: warn (9 percent)" in page and "connection:status: pass" in page


def test_webhook_receipts_are_pruned_after_the_phones_retries_end(app):
    from devices.models import PhoneWebhookReceipt

    signed(app, "sms:received", RECEIVED, event_id="old")
    signed(app, "sms:received", {**RECEIVED, "messageId": "b2"}, event_id="new")
    PhoneWebhookReceipt.objects.filter(event_id="old").update(
        received_at=timezone.now() - timedelta(days=4)
    )
    messaging.prune_history()
    assert list(PhoneWebhookReceipt.objects.values_list("event_id", flat=True)) == ["new"]


def test_a_message_with_its_own_validity_is_served_with_it_and_not_after(app):
    soon = timezone.now() + timedelta(minutes=5)
    message = queue(app, valid_until=soon)
    (served,) = app.fetch()
    assert served["validUntil"] == soon.astimezone(UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
    # The fence (how long the lease lasts) ends with it too.
    message.refresh_from_db()
    assert message.lease_expires_at is not None and message.lease_expires_at <= soon + FENCE_MARGIN
    other = queue(app, valid_until=timezone.now() - timedelta(seconds=1), body="too late")
    assert other.id not in {int(m["id"].split("-")[0]) for m in app.fetch()}
