"""SMSGate's integration API, driven by SMSGate's own Python SDK (android-sms-gateway 4.3.3,
sync and async clients) against a running server: code written with it works here by
changing its base URL."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from typing import Any

import android_sms_gateway as sdk
import pytest
import requests
from android_sms_gateway import domain
from android_sms_gateway.enums import ProcessState

from devices import handoff
from devices.models import Device
from messaging import services as messaging
from messaging.lifecycle import Outcome
from messaging.models import Message, Status

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "a-long-passphrase"


@pytest.fixture
def owner(make_user, paired):
    user = make_user("owner@example.com", PASSWORD)
    phone, _ = paired(account=user.account, title="Pixel 7", delay_between_sms=0)
    return user, phone


def _base(live_server: Any, mount: str = "/api/3rdparty/v1") -> str:
    return f"{live_server.url}{mount}"


def _deliver(phone: Device) -> list[int]:
    """The phone takes what waits for it, sends it and reports it delivered (our protocol)."""
    leased = handoff.poll(phone)
    ids = [m.id for m in leased.messages]
    handoff.confirm(phone, ids, leased.lease_id)
    handoff.report(phone, [Outcome(i, Status.SENT) for i in ids])
    handoff.report(phone, [Outcome(i, Status.DELIVERED) for i in ids])
    return ids


@pytest.mark.parametrize("mount", ["/api/3rdparty/v1", "/3rdparty/v1"])
def test_send_then_the_phone_delivers_and_the_sdk_reads_it_back(live_server, owner, mount):
    user, phone = owner
    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server, mount)) as client:
        sent = client.send(
            domain.Message(
                phone_numbers=["+4915752982212", "+436641234567"],
                text_message=domain.TextMessage(text="Your code is 4711"),
                sim_number=2,
                id="order-4711",
            )
        )
        assert sent.id == "order-4711" and sent.state == ProcessState.Pending
        assert [r.phone_number for r in sent.recipients] == ["+4915752982212", "+436641234567"]
        assert sent.device_id == str(phone.pk)
        rows = Message.objects.filter(external_id="order-4711")
        assert {(m.sim, m.body) for m in rows} == {(1, "Your code is 4711")}

        assert len(_deliver(phone)) == 2
        state = client.get_state("order-4711")
        assert state.state == ProcessState.Delivered
        assert {r.state for r in state.recipients} == {ProcessState.Delivered}
        assert set(state.states) >= {"Pending", "Sent", "Delivered"}

        listed = client.get_messages(pagination=domain.QueryPagination(limit=10))
        assert [m.id for m in listed] == ["order-4711"]
        with pytest.raises(sdk.errors.NotFoundError):
            client.get_state("no-such-message")


def test_cancel_a_pending_message_and_not_a_sent_one(live_server, owner):
    user, phone = owner
    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
        first = client.send(
            domain.Message(phone_numbers=["+4915752982212"], text_message=domain.TextMessage("a"))
        )
        client.cancel_message(first.id)
        assert client.get_state(first.id).state == ProcessState.Cancelled
        second = client.send(
            domain.Message(phone_numbers=["+4915752982213"], text_message=domain.TextMessage("b"))
        )
        _deliver(phone)
        # The SDK's delete raises its HTTP library's own error (requests), not an APIError.
        with pytest.raises(requests.HTTPError) as refused:
            client.cancel_message(second.id)
        assert refused.value.response.status_code == 409
        assert refused.value.response.json() == {"message": "message is not pending"}


def test_devices_and_health(live_server, owner):
    user, phone = owner
    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
        (listed,) = client.list_devices()
        assert (listed.id, listed.name) == (str(phone.pk), "Pixel 7")
        assert client.health_check().status.value == "pass"
        assert client.liveness_check().status.value == "pass"
        assert client.readiness_check().status.value == "pass"
        assert client.startup_check().status.value == "pass"
        client.remove_device(listed.id)
        assert client.list_devices() == []
    phone.refresh_from_db()
    assert phone.enabled is False and phone.token_hash is None


def test_the_async_client_sends_and_reads(live_server, owner):
    user, phone = owner

    async def run() -> tuple[Any, Any]:
        async with sdk.AsyncAPIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
            sent = await client.send(
                domain.Message(
                    phone_numbers=["+4915752982212"], text_message=domain.TextMessage("async")
                )
            )
            return sent, await client.list_devices()

    sent, devices = asyncio.run(run())
    assert sent.state == ProcessState.Pending and [d.id for d in devices] == [str(phone.pk)]


def _raw(live_server: Any, method: str, path: str, body: Any = None, auth: str | None = None):
    request = urllib.request.Request(
        f"{live_server.url}/api/3rdparty/v1{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": auth} if auth else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null"), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)


def test_bad_input_gets_smsgates_json_errors(live_server, owner):
    user, _ = owner
    basic = "Basic " + base64.b64encode(f"{user.email}:{PASSWORD}".encode()).decode()
    assert _raw(live_server, "GET", "/messages")[0] == 401
    wrong = "Basic " + base64.b64encode(f"{user.email}:nope".encode()).decode()
    assert _raw(live_server, "GET", "/messages", auth=wrong)[0] == 401
    cases = [
        ({"phoneNumbers": ["+4915752982212"]}, "exactly one of"),
        ({"phoneNumbers": [], "message": "x"}, "phoneNumbers"),
        ({"phoneNumbers": ["+4915752982212", "+49 1575 2982212"], "message": "x"}, "unique"),
        ({"phoneNumbers": ["call me"], "message": "x"}, "row 1"),
        ({"phoneNumbers": ["+4915752982212"], "message": "x", "simNumber": 9}, "simNumber"),
        ({"phoneNumbers": ["+4915752982212"], "message": "x", "deviceId": "999"}, "evice"),
        ({"phoneNumbers": ["+4915752982212"], "dataMessage": {"data": "AAAA", "port": 53}}, "data"),
    ]
    for body, words in cases:
        status, answer, _ = _raw(live_server, "POST", "/message", body, basic)
        assert status == 400 and words in answer["message"], (body, answer)
    status, answer, headers = _raw(
        live_server,
        "POST",
        "/message",
        {"id": "x1", "phoneNumbers": ["+4915752982212"], "message": "legacy"},
        basic,
    )
    assert status == 202 and answer["id"] == "x1" and "/x1" in headers["Location"]
    again = _raw(
        live_server,
        "POST",
        "/messages",
        {"id": "x1", "phoneNumbers": ["+4915752982213"], "message": "y"},
        basic,
    )
    assert again[0] == 409 and again[1] == {"message": "message with the same ID already exists"}
    status, listing, headers = _raw(live_server, "GET", "/messages?limit=1", auth=basic)
    assert status == 200 and len(listing) == 1 and headers["X-Total-Count"] == "1"
    assert _raw(live_server, "GET", "/messages?state=Lost", auth=basic)[0] == 400
    # A base URL given with a trailing slash: the SDK writes //message.
    assert _raw(live_server, "GET", "//message/x1/", auth=basic)[1]["id"] == "x1"
    assert _raw(live_server, "GET", "/nothing-here", auth=basic)[:2] == (
        404,
        {"message": "not found"},
    )


def test_another_accounts_ids_answer_as_missing_ones(live_server, owner, make_user, paired):
    user, _ = owner
    other = make_user("other@example.com", PASSWORD)
    theirs, _ = paired(account=other.account)
    (their_id,) = messaging.submit(
        other.account, [messaging.OutgoingSms(theirs.pk, "+4915752982212", "x", external_id="t1")]
    )
    basic = "Basic " + base64.b64encode(f"{user.email}:{PASSWORD}".encode()).decode()
    for key in ("t1", str(their_id)):
        assert _raw(live_server, "GET", f"/messages/{key}", auth=basic)[:2] == (
            404,
            {"message": "message not found"},
        )
        assert _raw(live_server, "DELETE", f"/messages/{key}", auth=basic)[0] == 404
    assert _raw(live_server, "DELETE", f"/devices/{theirs.pk}", auth=basic)[0] == 404
    body = {"phoneNumbers": ["+4915752982212"], "message": "x", "deviceId": str(theirs.pk)}
    assert _raw(live_server, "POST", "/messages", body, basic)[0] == 400
    assert Device.objects.get(pk=theirs.pk).enabled


def test_jwt_tokens_carry_scopes_refresh_once_and_revoke(live_server, owner):
    user, _ = owner
    base = _base(live_server)
    with sdk.APIClient(user.email, PASSWORD, base_url=base) as client:
        pair = client.generate_token(
            domain.TokenRequest(scopes=["messages:send", "messages:read"], ttl=60)
        )
    assert pair.token_type == "Bearer" and pair.refresh_token and pair.id
    with sdk.APIClient(None, pair.access_token, base_url=base) as bearer:
        sent = bearer.send(
            domain.Message(phone_numbers=["+4915752982212"], text_message=domain.TextMessage("jwt"))
        )
        assert bearer.get_state(sent.id).id == sent.id
        with pytest.raises(sdk.errors.ForbiddenError) as refused:
            bearer.list_devices()
        assert refused.value.response == {"message": "scope required: devices:list"}
        # An access token cannot refresh; the refresh token can, once.
        with pytest.raises(sdk.errors.ForbiddenError):
            bearer.refresh_token(pair.access_token)
        fresh = bearer.refresh_token(pair.refresh_token)
        with pytest.raises(sdk.errors.UnauthorizedError):
            bearer.refresh_token(pair.refresh_token)
    # The spent pair's access token is gone with it; the new one works until revoked.
    assert (
        _raw(live_server, "GET", f"/messages/{sent.id}", auth=f"Bearer {pair.access_token}")[0]
        == 401
    )
    with sdk.APIClient(None, fresh.access_token, base_url=base) as bearer:
        assert bearer.get_state(sent.id).id == sent.id
    with sdk.APIClient(user.email, PASSWORD, base_url=base) as client:
        client.revoke_token(fresh.id)
        client.revoke_token("no-such-token")  # unknown: 204 as well
    assert (
        _raw(live_server, "GET", f"/messages/{sent.id}", auth=f"Bearer {fresh.access_token}")[0]
        == 401
    )
    # A token is good on this API only, and a forged or foreign one nowhere.
    assert _raw(live_server, "GET", "/messages", auth="Bearer not.a.jwt")[0] == 401
    request = urllib.request.Request(
        f"{live_server.url}/api/v1/messages",
        headers={"Authorization": f"Bearer {fresh.access_token}"},
    )
    with pytest.raises(urllib.error.HTTPError) as elsewhere:
        urllib.request.urlopen(request, timeout=10)
    assert elsewhere.value.code == 401


def test_token_requests_are_checked_and_ttl_is_capped(live_server, owner, settings):
    user, _ = owner
    basic = "Basic " + base64.b64encode(f"{user.email}:{PASSWORD}".encode()).decode()
    assert _raw(live_server, "POST", "/auth/token", {"scopes": []}, basic)[0] == 400
    assert _raw(live_server, "POST", "/auth/token", {"scopes": ["root:all"]}, basic)[0] == 400
    assert _raw(live_server, "POST", "/auth/token", {"scopes": ["tokens:refresh"]}, basic)[0] == 400
    status, pair, _ = _raw(
        live_server, "POST", "/auth/token", {"scopes": ["all:any"], "ttl": 10**6}, basic
    )
    assert status == 201 and pair["access_token"] == pair["accessToken"]
    from datetime import datetime

    expires = datetime.fromisoformat(pair["expires_at"].replace("Z", "+00:00"))
    assert (
        expires - datetime.now(expires.tzinfo)
    ).total_seconds() <= settings.SMSGATE_JWT_ACCESS_SECONDS
    # The async client's refresh_token fails inside the SDK itself (spec §12); the wire does it.
    status, fresh, _ = _raw(
        live_server, "POST", "/auth/token/refresh", None, f"Bearer {pair['refresh_token']}"
    )
    assert status == 201 and fresh["refreshToken"] != pair["refresh_token"]


def _export_requests(phone: Device, ask: Any) -> list[dict[str, Any]]:
    """What ``ask()`` signalled to ``phone``'s event stream (Redis, or the embedded table)."""
    from devices import wake
    from devices.models import DeviceSignal

    if wake.enabled():
        pubsub = wake._client().pubsub()
        pubsub.subscribe(wake.channel(phone.pk))
        pubsub.get_message(timeout=5)  # the subscription's confirmation
        ask()
        found = []
        while (item := pubsub.get_message(timeout=2)) is not None:
            kind, data = wake.parse(item["data"])
            if kind == wake.EXPORT:
                found.append(json.loads(data))
        pubsub.close()
        return found
    wake.streams_mark().parent.mkdir(parents=True, exist_ok=True)
    wake.streams_mark().touch()  # a stream process runs: signals go to its table
    before = DeviceSignal.objects.order_by("-id").values_list("id", flat=True).first() or 0
    try:
        ask()
    finally:
        wake.streams_mark().unlink()
    signals = DeviceSignal.objects.filter(device_id=phone.pk, kind=wake.EXPORT, id__gt=before)
    return [json.loads(s.data) for s in signals]


def test_the_inbox_lists_received_sms_and_asks_app_phones_to_scan_again(live_server, owner, paired):
    from datetime import UTC, datetime, timedelta

    user, phone = owner
    app, _ = paired(account=user.account, protocol=Device.Protocol.SMSGATE, title="App phone")
    Device.objects.filter(pk=phone.pk).update(number="+4915700000001")
    handoff.receive(phone, [messaging.IncomingSms("in-1", "+4915752982299", "STOP", sim=1)])
    handoff.receive(app, [messaging.IncomingSms("in-2", "+4915752982298", "Hello")])
    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
        inbox = client.list_inbox_messages()
        assert [(m.sender, m.content_preview) for m in inbox] == [
            ("+4915752982298", "Hello"),
            ("+4915752982299", "STOP"),
        ]
        only = client.list_inbox_messages(
            inbox_filter=domain.InboxQueryFilter(device_id=str(phone.pk)),
            pagination=domain.QueryPagination(limit=5),
        )
        assert [(m.id, m.sim_number, m.recipient) for m in only] == [
            (str(Message.objects.get(external_id="in-1").pk), 2, "+4915700000001")
        ]
        assert (
            client.list_inbox_messages(inbox_filter=domain.InboxQueryFilter(message_type="MMS"))
            == []
        )
        since = datetime.now(UTC) - timedelta(days=1)
        until = datetime.now(UTC)
        asked = _export_requests(
            app,
            lambda: client.refresh_inbox(domain.InboxRefreshRequest(since=since, until=until)),
        )
        assert [(r["messageTypes"], r["since"][:10]) for r in asked] == [
            ("SMS", f"{since:%Y-%m-%d}")
        ]
        asked = _export_requests(
            app,
            lambda: client.export_inbox(
                domain.MessagesExportRequest(device_id=str(app.pk), since=since, until=until)
            ),
        )
        assert len(asked) == 1
        with pytest.raises(sdk.errors.BadRequestError):
            client.refresh_inbox(domain.InboxRefreshRequest(since=until, until=since))


def test_webhooks_arrive_in_smsgates_envelope_with_its_signature(live_server, owner, settings):
    import hashlib
    import hmac

    from android_sms_gateway.enums import WebhookEvent as Event

    from messaging import webhooks
    from messaging.models import WebhookEndpoint
    from tests.messaging.test_webhooks import Receiver

    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True  # the receiver listens on loopback
    user, phone = owner
    Device.objects.filter(pk=phone.pk).update(number="+4915700000001")
    receiver = Receiver()
    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
        hooks = {
            event: client.create_webhook(domain.Webhook(id=None, url=receiver.url, event=event))
            for event in (Event.SMS_SENT, Event.SMS_DELIVERED, Event.SMS_RECEIVED)
        }
        assert all(hook.id for hook in hooks.values())
        # The same id replaces the webhook.
        replaced = client.create_webhook(
            domain.Webhook(
                id=hooks[Event.SMS_SENT].id, url=receiver.url + "?v=2", event=Event.SMS_SENT
            )
        )
        listed = client.get_webhooks()
        assert len(listed) == 3 and replaced.url in {h.url for h in listed}
        with pytest.raises(sdk.errors.BadRequestError):
            client.create_webhook(
                domain.Webhook(id=None, url="ftp://x.example", event=Event.SMS_SENT)
            )
        sent = client.send(
            domain.Message(
                phone_numbers=["+4915752982212"], text_message=domain.TextMessage("Hi"), id="hook-1"
            )
        )
        _deliver(phone)
        handoff.receive(phone, [messaging.IncomingSms("in-9", "+4915752982299", "Thanks")])
        taken, ticket = webhooks.take_due_events()
        for event_pk in taken:
            assert webhooks.deliver(event_pk, ticket) == "delivered"
        # Each webhook signs with its own secret (shown in the admin and /api/v1/webhooks).
        secrets = dict(WebhookEndpoint.objects.values_list("client_id", "secret"))
        client.delete_webhook(hooks[Event.SMS_RECEIVED].id)
        client.delete_webhook("no-such-webhook")  # 204 as well
        assert len(client.get_webhooks()) == 2
    bodies = []
    for item in receiver.received:
        headers, body = item["headers"], item["body"]
        secret = secrets[json.loads(body)["webhookId"]]
        signature = hmac.new(
            secret.encode(), body + headers["X-Timestamp"].encode(), hashlib.sha256
        ).hexdigest()
        assert hmac.compare_digest(signature, headers["X-Signature"])
        bodies.append(json.loads(body))
    by_event = {b["event"]: b for b in bodies}
    assert set(by_event) == {"sms:sent", "sms:delivered", "sms:received"}
    assert by_event["sms:sent"]["payload"]["messageId"] == sent.id == "hook-1"
    assert by_event["sms:sent"]["payload"]["sender"] == "+4915700000001"
    assert by_event["sms:delivered"]["payload"]["phoneNumber"] == "+4915752982212"
    assert by_event["sms:received"]["payload"]["message"] == "Thanks"
    assert {b["deviceId"] for b in bodies} == {str(phone.pk)}


def test_logs_are_the_servers_record_of_the_accounts_sms(live_server, owner, make_user, paired):
    from datetime import UTC, datetime, timedelta

    user, phone = owner
    other = make_user("other@example.com", PASSWORD)
    theirs, _ = paired(account=other.account)
    messaging.submit(other.account, [messaging.OutgoingSms(theirs.pk, "+4915752982212", "x")])
    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
        sent = client.send(
            domain.Message(
                phone_numbers=["+4915752982212"], text_message=domain.TextMessage("log me")
            )
        )
        _deliver(phone)
        entries = client.get_logs()
        assert [e.message.split(": ")[1] for e in entries] == [
            "Sent by Phone -> Delivered",
            "Taken from Server -> Sent by Phone",
            "New -> Taken from Server",
        ]
        assert all(e.context["messageId"] == sent.id for e in entries)
        assert {e.priority.value for e in entries} == {"INFO"}
        later = datetime.now(UTC) + timedelta(hours=1)
        assert client.get_logs(from_=later, to=later + timedelta(hours=1)) == []


def test_settings_are_read_replaced_and_patched_through_both_clients(live_server, owner):
    from android_sms_gateway.enums import LimitPeriod, SimSelectionMode

    user, phone = owner
    chosen = domain.DeviceSettings(
        messages=domain.SettingsMessages(
            limit_period=LimitPeriod.PER_HOUR,
            limit_value=120,
            send_interval_min=3,
            sim_selection_mode=SimSelectionMode.ROUND_ROBIN,
        ),
        ping=domain.SettingsPing(interval_seconds=600),
        webhooks=domain.SettingsWebhooks(signing_key="integration-key", retry_count=5),
    )
    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
        assert client.get_settings() == domain.DeviceSettings()
        client.update_settings(chosen)
        read = client.get_settings()
        assert read.messages is not None and read.messages.limit_value == 120
        assert read.messages.sim_selection_mode == SimSelectionMode.ROUND_ROBIN
        assert read.webhooks == domain.SettingsWebhooks(retry_count=5)  # the key is write-only
        client.patch_settings(domain.DeviceSettings(logs=domain.SettingsLogs(lifetime_days=3)))
    phone.refresh_from_db()
    assert phone.delay_between_sms == 3
    assert {s.max_per_hour for s in phone.sims.all()} == {120}

    async def run() -> Any:
        async with sdk.AsyncAPIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
            await client.patch_settings(
                domain.DeviceSettings(ping=domain.SettingsPing(interval_seconds=30))
            )
            return await client.get_settings()

    read = asyncio.run(run())
    assert read.ping == domain.SettingsPing(interval_seconds=30)
    assert read.logs == domain.SettingsLogs(lifetime_days=3)


def test_ttl_and_valid_until_bound_when_a_message_may_be_sent(live_server, owner):
    from datetime import timedelta

    from django.utils import timezone

    user, phone = owner
    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
        sent = client.send(
            domain.Message(
                phone_numbers=["+4915752982212"], text_message=domain.TextMessage("soon"), ttl=60
            )
        )
        until = timezone.now() + timedelta(hours=2)
        later = client.send(
            domain.Message(
                phone_numbers=["+4915752982212"],
                text_message=domain.TextMessage("later"),
                valid_until=until,
            )
        )
    short = Message.objects.get(external_id=sent.id)
    long = Message.objects.get(external_id=later.id)
    assert short.valid_until is not None and long.valid_until is not None
    assert timedelta(seconds=50) < short.valid_until - short.created_at <= timedelta(seconds=61)
    assert abs(long.valid_until - until) < timedelta(seconds=1)

    # Time passes: a message past its validity is not handed out, and expires.
    Message.objects.filter(pk=short.pk).update(valid_until=timezone.now() - timedelta(seconds=1))
    assert [m.id for m in handoff.poll(phone).messages] == [
        Message.objects.get(external_id=later.id).pk
    ]
    assert messaging.expire_stale() == 1
    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
        state = client.get_state(sent.id)
    assert state.state == ProcessState.Failed
    assert state.recipients[0].error == "not sent before its validity ended"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"ttl": 4}, "ttl must be an integer from 5"),
        ({"ttl": 60, "validUntil": "2099-01-01T00:00:00Z"}, "must not be used together"),
        ({"validUntil": "2001-01-01T00:00:00Z"}, "validUntil must be in the future"),
        (
            {"validUntil": "2099-01-01T00:00:00Z", "scheduleAt": "2099-02-01T00:00:00Z"},
            "scheduleAt must not be after validUntil",
        ),
    ],
)
def test_bad_validity_is_refused(live_server, owner, extra, problem):
    user, _ = owner
    body = {"phoneNumbers": ["+4915752982212"], "textMessage": {"text": "x"}, **extra}
    basic = "Basic " + base64.b64encode(f"{user.email}:{PASSWORD}".encode()).decode()
    status, answer, _ = _raw(live_server, "POST", "/messages", body, auth=basic)
    assert status == 400 and problem in answer["message"]
    assert not Message.objects.exists()


class _AppPhone:
    """An SMSGate app phone over its own protocol (/api/mobile/v1) on the running server."""

    def __init__(self, live_server: Any, email: str) -> None:
        self.base = f"{live_server.url}/api/mobile/v1"
        basic = base64.b64encode(f"{email}:{PASSWORD}".encode()).decode()
        answer = requests.post(
            f"{self.base}/device",
            json={"name": "Pixel 8", "simCards": [{"slotIndex": 0, "simNumber": 1}]},
            headers={"Authorization": f"Basic {basic}"},
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        self.id, token = answer.json()["id"], answer.json()["token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def fetch(self) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.base}/message", headers=self.headers, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def report(self, item: dict[str, Any], state: str) -> None:
        recipients = [{"phoneNumber": n, "state": state} for n in item["phoneNumbers"]]
        answer = requests.patch(
            f"{self.base}/message",
            json=[{"id": item["id"], "state": state, "recipients": recipients}],
            headers=self.headers,
            timeout=10,
        )
        assert answer.status_code == 204, answer.text


def test_encrypted_and_data_sms_pass_through_an_smsgate_app_phone(live_server, owner):
    from android_sms_gateway.encryption import Encryptor

    user, ours = owner
    app = _AppPhone(live_server, user.email)
    secret = Encryptor("shared between the client and the phone", iterations=1000)
    with sdk.APIClient(
        user.email, PASSWORD, base_url=_base(live_server), encryptor=secret
    ) as client:
        sent = client.send(
            domain.Message(
                phone_numbers=["+4915752982212"], text_message=domain.TextMessage("a secret")
            )
        )
        # Sent to the SMSGate app phone (ours, of our own protocol, cannot decrypt).
        assert sent.device_id == app.id and sent.is_encrypted is False  # the SDK decrypted it
        assert [r.phone_number for r in sent.recipients] == ["+4915752982212"]
        row = Message.objects.get(external_id=sent.id)
        assert row.encrypted and row.body.startswith("$aes-256-cbc/pbkdf2-sha1$i=1000$")
        assert row.phone.startswith("$aes-256-cbc/") and "a secret" not in row.body

        (item,) = app.fetch()
        assert item["isEncrypted"] is True
        assert item["textMessage"] == {"text": row.body} and item["phoneNumbers"] == [row.phone]
        assert secret.decrypt(item["textMessage"]["text"]) == "a secret"
        app.report(item, "Sent")
        app.report(item, "Delivered")
        state = client.get_state(sent.id)
        assert state.state == ProcessState.Delivered
        assert [r.phone_number for r in state.recipients] == ["+4915752982212"]

    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
        with pytest.raises(ValueError, match="encryptor is not set"):
            client.get_state(sent.id)  # the SDK's own check: the state says isEncrypted
        data = client.send(
            domain.Message(
                phone_numbers=["+4915752982212"],
                data_message=domain.DataMessage.with_bytes(b"\x01\x02wake", 53739),
            )
        )
        assert data.device_id == app.id
        (item,) = app.fetch()
        assert item["dataMessage"] == {
            "data": base64.b64encode(b"\x01\x02wake").decode(),
            "port": 53739,
        }
        assert "textMessage" not in item and item["isEncrypted"] is False
        app.report(item, "Sent")
        assert client.get_state(data.id).state == ProcessState.Sent

        # Our own protocol's phone sends plain text only.
        basic = "Basic " + base64.b64encode(f"{user.email}:{PASSWORD}".encode()).decode()
        for body, problem in (
            ({"dataMessage": {"data": "AQID", "port": 9}, "deviceId": str(ours.pk)}, "SMSGate app"),
            ({"dataMessage": {"data": "not base64!", "port": 9}}, "base64"),
            ({"dataMessage": {"data": base64.b64encode(b"x" * 134).decode(), "port": 9}}, "1 to 133 bytes"),
            ({"dataMessage": {"data": "AQID", "port": 0}}, "port must be an integer"),
            ({"textMessage": {"text": "$x"}, "isEncrypted": True, "deviceId": str(ours.pk)}, "SMSGate app"),
        ):  # fmt: skip
            status, answer, _ = _raw(
                live_server,
                "POST",
                "/messages",
                {"phoneNumbers": ["+4915752982212"], **body},
                basic,
            )
            assert status == 400 and problem in answer["message"], answer
    assert ours.messages.count() == 0


def test_every_method_of_the_async_client(live_server, owner, paired, settings):
    """The async client (aiohttp), each of its methods against the running server. Its
    refresh_token posts without a body, which the SDK's own aiohttp wrapper cannot do
    (a TypeError inside the SDK, whatever the server): the same call is made at the wire."""
    from datetime import UTC, datetime, timedelta

    from android_sms_gateway.enums import WebhookEvent

    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    user, phone = owner
    app, _ = paired(account=user.account, protocol=Device.Protocol.SMSGATE, title="App phone")
    handoff.receive(phone, [messaging.IncomingSms("in-9", "+4915752982299", "Hi there")])
    base = _base(live_server)
    since, until = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(minutes=1)

    async def run() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with sdk.AsyncAPIClient(user.email, PASSWORD, base_url=base) as client:
            sent = await client.send(
                domain.Message(
                    phone_numbers=["+4915752982212"],
                    text_message=domain.TextMessage("async"),
                    device_id=str(phone.pk),
                ),
                skip_phone_validation=True,
                device_active_within=24,
            )
            seen["state"] = await client.get_state(sent.id)
            seen["listed"] = await client.get_messages(
                query=domain.MessagesQueryFilter(device_id=str(phone.pk)),
                pagination=domain.QueryPagination(limit=5),
            )
            await client.cancel_message(sent.id)
            seen["cancelled"] = await client.get_state(sent.id)
            seen["export"] = await client.export_inbox(
                domain.MessagesExportRequest(device_id=str(app.pk), since=since, until=until)
            )
            seen["refresh"] = await client.refresh_inbox(
                domain.InboxRefreshRequest(since=since, until=until)
            )
            seen["inbox"] = await client.list_inbox_messages()
            with pytest.raises(sdk.errors.NotFoundError):
                await client.download_attachment(seen["inbox"][0].id, 0)  # no MMS stored
            hook = await client.create_webhook(
                domain.Webhook(id=None, url="https://127.0.0.1:9/in", event=WebhookEvent.SMS_SENT)
            )
            seen["hooks"] = await client.get_webhooks()
            await client.delete_webhook(hook.id)
            seen["hooks after"] = await client.get_webhooks()
            await client.update_settings(
                domain.DeviceSettings(ping=domain.SettingsPing(interval_seconds=90))
            )
            await client.patch_settings(
                domain.DeviceSettings(logs=domain.SettingsLogs(lifetime_days=2))
            )
            seen["settings"] = await client.get_settings()
            seen["logs"] = await client.get_logs(from_=since.isoformat(), to=until.isoformat())
            seen["health"] = [
                (await probe()).status.value
                for probe in (client.health_check, client.liveness_check,
                              client.readiness_check, client.startup_check)
            ]  # fmt: skip
            pair = await client.generate_token(domain.TokenRequest(scopes=["devices:list"]))
            with pytest.raises(TypeError):
                await client.refresh_token(pair.refresh_token)  # inside the SDK
            seen["pair"] = pair
            seen["devices"] = await client.list_devices()
            await client.remove_device(str(app.pk))
            seen["devices after"] = await client.list_devices()
        async with sdk.AsyncAPIClient(None, pair.access_token, base_url=base) as bearer:
            seen["by token"] = await bearer.list_devices()
        async with sdk.AsyncAPIClient(user.email, PASSWORD, base_url=base) as client:
            await client.revoke_token(pair.id)
        return seen

    seen = asyncio.run(run())
    assert seen["state"].state == ProcessState.Pending and len(seen["listed"]) == 1
    assert seen["cancelled"].state == ProcessState.Cancelled
    assert seen["export"] == {} and seen["refresh"] == {}
    assert [m.content_preview for m in seen["inbox"]] == ["Hi there"]
    assert [h.url for h in seen["hooks"]] == ["https://127.0.0.1:9/in"] and not seen["hooks after"]
    assert seen["settings"] == domain.DeviceSettings(
        ping=domain.SettingsPing(interval_seconds=90), logs=domain.SettingsLogs(lifetime_days=2)
    )
    assert any("Cancelled" in entry.message for entry in seen["logs"])
    assert seen["health"] == ["pass"] * 4
    assert {d.name for d in seen["devices"]} == {"Pixel 7", "App phone"}
    assert (
        [d.name for d in seen["devices after"]] == ["Pixel 7"] == [d.name for d in seen["by token"]]
    )
    # The refresh the async SDK cannot send, at the wire: a new pair; the revoked one is gone.
    status, fresh, _ = _raw(
        live_server, "POST", "/auth/token/refresh", auth=f"Bearer {seen['pair'].refresh_token}"
    )
    assert status == 401  # revoked above, with its access token
    with sdk.APIClient(user.email, PASSWORD, base_url=base) as client:
        other = client.generate_token(domain.TokenRequest(scopes=["devices:list"]))
    status, fresh, _ = _raw(
        live_server, "POST", "/auth/token/refresh", auth=f"Bearer {other.refresh_token}"
    )
    assert status == 201 and fresh["accessToken"] and fresh["refreshToken"] != other.refresh_token


def test_the_sync_clients_attachment_download_gets_a_clear_404(live_server, owner):
    user, phone = owner
    handoff.receive(phone, [messaging.IncomingSms("in-7", "+4915752982299", "text only")])
    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
        (incoming,) = client.list_inbox_messages()
        with pytest.raises(sdk.errors.NotFoundError) as missing:
            client.download_attachment(incoming.id, 0)
    assert missing.value.response == {"message": "not found"}


def test_without_a_delivery_report_the_app_phone_is_told_so(live_server, owner):
    user, _ = owner
    app = _AppPhone(live_server, user.email)
    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
        quiet = client.send(
            domain.Message(
                phone_numbers=["+4915752982212"],
                text_message=domain.TextMessage("no report"),
                with_delivery_report=False,
                device_id=app.id,
            )
        )
        usual = client.send(
            domain.Message(
                phone_numbers=["+4915752982212"],
                text_message=domain.TextMessage("report"),
                device_id=app.id,
            )
        )
    served = {item["textMessage"]["text"]: item["withDeliveryReport"] for item in app.fetch()}
    assert served == {"no report": False, "report": True}
    assert not Message.objects.get(external_id=quiet.id).delivery_report
    assert Message.objects.get(external_id=usual.id).delivery_report


def test_logs_also_tell_the_phones_problems_found_and_resolved(live_server, owner):
    from datetime import timedelta

    from django.utils import timezone

    from messaging.models import Problem

    user, phone = owner
    now = timezone.now()
    Problem.objects.create(
        account=user.account, kind=Problem.Kind.DEVICE_SILENT, device=phone, sim=1,
        detail="3 SMS waiting", opened_at=now - timedelta(hours=2), resolved_at=now,
    )  # fmt: skip
    with sdk.APIClient(user.email, PASSWORD, base_url=_base(live_server)) as client:
        entries = client.get_logs()
    assert [(e.priority.value, e.module, e.message) for e in entries] == [
        ("INFO", "devices", "Resolved: Phone silent with SMS waiting"),
        ("WARN", "devices", "Phone silent with SMS waiting: 3 SMS waiting"),
    ]
    assert entries[0].context == {
        "problemId": Problem.objects.get().pk, "kind": "device_silent",
        "deviceId": str(phone.pk), "simNumber": 2,
    }  # fmt: skip
    assert len({e.id for e in entries}) == 2
