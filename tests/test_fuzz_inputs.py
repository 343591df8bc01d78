"""Hostile input never reaches a 500, and never plants a row that breaks a listing.

Against the compatibility API, the REST API, the device protocol and the SMSGate app's
protocol, through the Django test client. Two nets over the same probes:

- a sweep puts every value of a list of known-hostile ones (NUL characters, lone
  surrogates, huge text, integers past 64 bits, booleans and floats for integers, deep JSON,
  times at the ends of the calendar with offsets at the ends of the clock, zone names that
  are none) into every field of every endpoint, one at a time;
- Hypothesis then varies fields, values and their combinations (derandomized, FUZZ_EXAMPLES
  examples per test, default 30, no example database), so the class stays closed.

Each probe asserts: no 5xx (the compatibility API: never its "Server error" answer, which is
for our own failures), and whatever was stored reads back through every listing:
getallsms in the zones furthest east and west of UTC, getsmsstatus, the REST list and detail,
the device poll. The last test stores the edge values that are allowed and reads them back
everywhere, the admin included.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contacts.models import Newsletter, Tag
from devices import pools
from devices import services as devices
from devices.models import PoolMember, SimSlot
from gateway import inputs
from gateway import services as accounts
from messaging.encoding import segment_count
from messaging.models import Message, served_id
from messaging.services import OutgoingSms, submit

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
PHONE = "+4915752982212"
# The zones furthest east (+14:00) and west (-12:00): a stored time must render in both.
EDGE_ZONES = ("UTC", "Pacific/Kiritimati", "Etc/GMT+12")


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


# --- Hostile values ----------------------------------------------------------------------

TEXTS = ["", "\x00", "\ud800", "x\udfff", "\ud83d\ude00", "😀" * 400, "x" * 20_000, "\u202eevil"]
TEXTS += ["9" * 40]
NUMBERS = [2**63 - 1, 2**63, -(2**63) - 1, 10**300, True, 1.5, 1e300, float("nan")]
# Deep enough to be refused, shallow enough for json.dumps and Hypothesis's printer; deeper
# documents are sent as text (DEEP_JSON).
SHAPES = [None, [], {}, _nested(33), {"a": "\ud800"}]
TIMES = [
    "9999-12-31 23:59:59",
    "9999-12-31",
    "0001-01-01 00:00:00",
    "31.12.9999 23:59:59",
    "2024-02-30",
    "9999-12-31T23:59:59-12:00",
    "0001-01-01T00:00:00+14:00",
    "2030-01-01T00:00:00+16:00",
    "9999-12-30T23:59:59Z",
]
ZONES = ["Etc/GMT+12", "../../etc/passwd", "Europe/Berlin\x00", "+02:00"]
HOSTILE = TEXTS + NUMBERS + SHAPES + TIMES + ZONES
DEPTHS = (33, 990, 3000, 100_000)
DEEP_JSON = ["[" * d + "]" * d for d in DEPTHS]

OFFSETS = ["", "Z", "+00:00", "-12:00", "+14:00", "+15:59", "-15:59", "+16:00", "-23:59"]


@st.composite
def local_times(draw: Any) -> str:
    """Times as clients write them, many at the ends of the calendar."""
    year = draw(st.sampled_from([1, 2, 1969, 2030, 9998, 9999]))
    month, day = draw(st.integers(1, 12)), draw(st.integers(1, 31))
    clock = draw(st.sampled_from(["", " 00:00", " 23:59:59", "T12:00:00", "T23:59:59.999999"]))
    offset = draw(st.sampled_from(OFFSETS)) if clock.startswith("T") else ""
    return f"{year:04d}-{month:02d}-{day:02d}{clock}{offset}"


values = st.one_of(
    st.sampled_from(HOSTILE),
    local_times(),
    st.text(max_size=30),
    st.integers(),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def form_safe(value: Any) -> str:
    """A value as a form or query string carries it (no surrogates: a client cannot send
    them, the decoding replaces them)."""
    return str(value).encode("utf-8", "replace").decode()


# --- The account and its three faces ----------------------------------------------------


class Faces:
    """One account with a paired device (SIM slots 0 and 1), through every API."""

    def __init__(self, device: Any, device_token: str) -> None:
        self.account = device.account
        self.device = device
        self.token = accounts.compat_token(self.account)
        self.tag = Tag.objects.create(account=self.account, title="fuzz")
        _, secret = accounts.create_api_token(self.account, "fuzz")
        self.web = Client(raise_request_exception=False)
        self.rest = Client(HTTP_AUTHORIZATION=f"Bearer {secret}", raise_request_exception=False)
        self.phone = Client(
            HTTP_AUTHORIZATION=f"Bearer {device_token}", raise_request_exception=False
        )
        # A phone of the SMSGate app, with one message served to it.
        self.app_device, app_token = devices.register_app(self.account, "fuzz/app", ())
        self.app = Client(HTTP_AUTHORIZATION=f"Bearer {app_token}", raise_request_exception=False)
        (served,) = submit(self.account, [OutgoingSms(self.app_device.pk, PHONE, "to the app")])
        self.served = Message.objects.get(pk=served)
        self.enroll = accounts.enrollment_token(self.account)
        # A pool of the phone's first SIM (offline: what is sent to it is held, and listed).
        self.pool = pools.create_pool(self.account, "Fuzz pool")
        PoolMember.objects.create(pool=self.pool, sim=SimSlot.objects.get(device=device, slot=0))

    # Each call asserts the API's promise for bad input: a clear answer, never a 5xx.

    def compat(self, method: str, fields: dict[str, Any], *, as_form: bool = False) -> dict:
        fields = {"token": self.token, **fields}
        if as_form:
            data = {k: form_safe(v) for k, v in fields.items()}
            response = self.web.post(f"/getdata/{method}", data)
        else:
            response = self.web.post(f"/getdata/{method}", json.dumps(fields), "application/json")
        return self._compat_answer(response, method, fields)

    def compat_raw(self, method: str, body: str) -> dict:
        response = self.web.post(f"/getdata/{method}", body, content_type="application/json")
        return self._compat_answer(response, method, body[:100])

    def _compat_answer(self, response: Any, method: str, sent: Any) -> dict:
        assert response.status_code == 200, (method, sent, response.content[:300])
        answer = dict(response.json())
        # "Server error" is for our own failures; input that can never succeed gets a
        # message saying what is wrong with it.
        # (Its start: a refusal may quote what was sent, e.g. "Unknown timezone 'Server error'".)
        assert not str(answer.get("message")).startswith("Server error"), (method, sent, answer)
        return answer

    def api(self, method: str, path: str, payload: Any = None) -> Any:
        call = getattr(self.rest, method)
        if method == "get":
            response = call(f"/api/v1/{path}", {k: form_safe(v) for k, v in payload.items()})
        else:
            body = payload if isinstance(payload, str) else json.dumps(payload)
            response = call(f"/api/v1/{path}", body, content_type="application/json")
        assert response.status_code < 500, (method, path, payload, response.content[:300])
        return response

    def device_call(self, name: str, payload: Any, *, client: Client | None = None) -> Any:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        response = (client or self.phone).post(
            f"/api/device/v1/{name}", body, content_type="application/json"
        )
        assert response.status_code < 500, (name, payload, response.content[:300])
        return response

    def app_call(self, method: str, path: str, payload: Any, **headers: str) -> Any:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        response = self.app.generic(
            method, f"/api/mobile/v1/{path}", body, content_type="application/json", headers=headers
        )
        assert response.status_code < 500, (method, path, payload, response.content[:300])
        if response.content:
            assert response["Content-Type"] == "application/json", response.content[:100]
        return response

    def assert_listings_read_everything(self) -> None:
        """Every stored row of the account reads back through every listing."""
        stored = set(Message.objects.filter(account=self.account).values_list("id", flat=True))
        for zone in EDGE_ZONES:
            seen: set[int] = set()
            after = 0
            while True:
                page = self.compat("getallsms", {"timezone": zone, "after_id": after})
                assert page["error"] == 0, page
                seen |= {int(i) for i in page["smss"]}
                if not page.get("more"):
                    break
                after = page["next_after_id"]
            assert seen == stored, zone
        for message_id in sorted(stored)[-3:]:
            assert self.compat("getsmsstatus", {"sms_id": message_id})["error"] == 0
            assert self.api("get", f"messages/{message_id}", {}).status_code == 200
        listed = self.api("get", "messages", {"page_size": 500})
        assert listed.status_code == 200
        assert {m["id"] for m in listed.json()["results"]} >= set(sorted(stored)[-500:])
        for listing in ("newsletters", "contacts", "tags", "devices"):
            assert self.api("get", listing, {}).status_code == 200
        assert self.device_call("poll", {"wait": 0}).status_code == 200
        assert self.app_call("GET", "message", "").status_code == 200


@pytest.fixture
def faces(paired) -> Faces:
    cache.clear()
    return Faces(*paired(title="Fuzzed phone"))


# --- Probes: hostile fields in an otherwise good request -------------------------------
# Each probe sends one kind of request and says whether it stored a message.


def _message(faces: Faces, overrides: dict[str, Any]) -> dict[str, Any]:
    return {"sendto": PHONE, "body": "hello", "device_id": faces.device.pk, **overrides}


def probe_addsms(faces: Faces, overrides: dict[str, Any]) -> bool:
    fields = _message(faces, overrides)
    json_ok = faces.compat("addsms", fields)["error"] == 0
    return faces.compat("addsms", fields, as_form=True)["error"] == 0 or json_ok


def probe_addalotofsms(faces: Faces, overrides: dict[str, Any]) -> bool:
    zone = overrides.pop("timezone", "UTC")
    items = [_message(faces, {}), _message(faces, overrides)]
    body_ok = faces.compat("addalotofsms", {"smsdata": items, "timezone": zone})["error"] == 0
    datajson = json.dumps({"token": faces.token, "smsdata": items})
    field = faces.compat("addalotofsms", {"datajson": datajson, "timezone": zone}, as_form=True)
    return field["error"] == 0 or body_ok


def probe_getallsms(faces: Faces, overrides: dict[str, Any]) -> bool:
    faces.compat("getallsms", overrides)
    return False


def probe_compat_lookups(faces: Faces, overrides: dict[str, Any]) -> bool:
    faces.compat("getsmsstatus", {"sms_id": 1, **overrides})
    faces.compat("getdevicestatus", {"device_id": faces.device.pk, **overrides})
    faces.compat("getalldevices", overrides)
    return False


def probe_savepaket(faces: Faces, overrides: dict[str, Any]) -> bool:
    paket = {"title": "T", "body": "B", "tags": str(faces.tag.pk), "device_id": faces.device.pk}
    faces.compat("savepaket", {**paket, **overrides})
    return False


def probe_pools(faces: Faces, overrides: dict[str, Any]) -> bool:
    pool = faces.pool.pk
    sent = faces.compat("addsms", {"sendto": PHONE, "body": "p", "device_id": pool, **overrides})
    paket = {"title": "T", "body": "B", "tags": str(faces.tag.pk), "device_id": pool}
    faces.compat("savepaket", {**paket, **overrides})
    faces.compat("getdevicestatus", {"device_id": pool, **overrides})
    rest = {"to": PHONE, "body": "p", "pool": pool, **overrides}
    created = faces.api("post", "messages", rest).status_code == 201
    return sent["error"] == 0 or created


def probe_savecontact(faces: Faces, overrides: dict[str, Any]) -> bool:
    faces.compat("savetag", {"title": "t", **overrides})
    faces.compat("savecontact", {"phone": PHONE, "name": "n", **overrides})
    return False


def probe_rest_send(faces: Faces, overrides: dict[str, Any]) -> bool:
    payload = {"to": PHONE, "body": "hello", "device_id": faces.device.pk, **overrides}
    created = faces.api("post", "messages", payload).status_code == 201
    return (
        faces.api("post", "messages/batch", {"messages": [payload]}).status_code == 201 or created
    )


def probe_rest_lists(faces: Faces, overrides: dict[str, Any]) -> bool:
    faces.api("get", "messages", overrides)
    if "tag" in overrides:
        faces.api("get", "contacts", overrides)
    return False


def probe_rest_newsletters(faces: Faces, overrides: dict[str, Any]) -> bool:
    letter = {"title": "T", "body": "b", "device_id": faces.device.pk, "tags": [faces.tag.pk]}
    faces.api("post", "newsletters", {**letter, **overrides})
    scheduled = Newsletter.objects.filter(account=faces.account, state="scheduled").first()
    if scheduled is not None:
        faces.api("patch", f"newsletters/{scheduled.pk}", overrides)
    return False


def probe_rest_contacts(faces: Faces, overrides: dict[str, Any]) -> bool:
    faces.api("post", "contacts/import", {"contacts": [{"phone": PHONE, **overrides}]})
    faces.api("post", "contacts", {"phone": PHONE, **overrides})
    faces.api("post", "tags", {"title": "t", **overrides})
    return False


def probe_incoming(faces: Faces, overrides: dict[str, Any]) -> bool:
    item = {"id": f"in-{uuid.uuid4().hex[:8]}", "sender": PHONE, "body": "hi", **overrides}
    return faces.device_call("incoming", {"messages": [item]}).status_code == 200


def probe_poll(faces: Faces, overrides: dict[str, Any]) -> bool:
    wait = overrides.get("wait")
    if isinstance(wait, int) and not isinstance(wait, bool) and 0 < wait <= 10**6:
        overrides = {**overrides, "wait": 0}  # a valid wait would hold the test in a long poll
    faces.device_call("poll", {"wait": 0, **overrides})
    faces.device_call("heartbeat", overrides)
    return False


def probe_confirm_report(faces: Faces, overrides: dict[str, Any]) -> bool:
    faces.device_call("confirm", {"ids": [1], "lease": str(uuid.uuid4()), **overrides})
    faces.device_call("report", {"reports": [{"id": 1, "status": "sent", **overrides}]})
    return False


def probe_pair(faces: Faces, overrides: dict[str, Any]) -> bool:
    faces.device_call("pair", {"code": "AAAA-AAAA", **overrides}, client=faces.web)
    faces.device_call("pair", {"device": overrides}, client=faces.web)
    return False


def probe_app_device(faces: Faces, overrides: dict[str, Any]) -> bool:
    sims = {k: v for k, v in overrides.items() if k in ("slotIndex", "simNumber", "iccid")}
    body = {"name": "fuzz/phone", "simCards": [{"slotIndex": 0, **sims}], **overrides}
    faces.app_call("POST", "device", body, Authorization=f"Bearer {faces.enroll}")
    faces.app_call("PATCH", "device", {"id": str(faces.app_device.pk), **overrides})
    return False


def probe_app_states(faces: Faces, overrides: dict[str, Any]) -> bool:
    item = {"id": served_id(faces.served.pk, faces.served.created_at), "state": "Sent",
            "recipients": [{"phoneNumber": PHONE, "state": "Sent"}], **overrides}  # fmt: skip
    faces.app_call("GET", "message", "")
    faces.app_call("PATCH", "message", [item])
    return True


def probe_app_hook(faces: Faces, overrides: dict[str, Any]) -> bool:
    event = overrides.pop("event", "sms:received")
    payload = {"message": "hi", "receivedAt": "2025-03-01T17:04:05.123+05:30",
               "messageId": uuid.uuid4().hex[:8], "sender": PHONE, "simNumber": 1, **overrides}  # fmt: skip
    envelope = {"id": uuid.uuid4().hex, "event": event, "deviceId": str(faces.app_device.pk),
                "payload": payload}  # fmt: skip
    body = json.dumps(envelope)
    stamp = str(int(timezone.now().timestamp()))
    signature = hmac.new(
        faces.app_device.webhook_key.encode(), (body + stamp).encode(), hashlib.sha256
    ).hexdigest()
    response = faces.app_call(
        "POST", "hook", body, **{"X-Timestamp": stamp, "X-Signature": signature}
    )
    return response.status_code == 200


MESSAGE_FIELDS = ["sendto", "body", "device_id", "sim", "timetosend", "customerid", "urgent"]
PROBES = {
    "addsms": (probe_addsms, [*MESSAGE_FIELDS, "timezone", "token"]),
    "addalotofsms": (probe_addalotofsms, [*MESSAGE_FIELDS, "timezone"]),
    "getallsms": (
        probe_getallsms,
        [
            "device_id",
            "status",
            "begindate",
            "enddate",
            "sim",
            "customerid",
            "phone",
            "timezone",
            "limit",
            "after_id",
            "orderbydesc",
            "onlycount",
        ],
    ),
    "compat lookups": (probe_compat_lookups, ["token", "sms_id", "device_id", "timezone"]),
    "savepaket": (
        probe_savepaket,
        ["title", "body", "tags", "sim", "time_to_send", "timezone", "device_id"],
    ),
    "savecontact": (probe_savecontact, ["title", "phone", "name", "fullname", "tag_id"]),
    "REST create": (
        probe_rest_send,
        ["to", "body", "device_id", "sim", "send_at", "urgent", "customer_id"],
    ),
    "REST lists": (
        probe_rest_lists,
        [
            "status",
            "device",
            "sim",
            "customer_id",
            "newsletter",
            "created_after",
            "created_before",
            "phone",
            "direction",
            "page_size",
            "cursor",
            "tag",
        ],
    ),
    "REST newsletters": (
        probe_rest_newsletters,
        ["title", "body", "device_id", "sim", "send_at", "tags"],
    ),
    "pools": (
        probe_pools,
        ["device_id", "pool", "sim", "body", "sendto", "to", "timetosend", "send_at", "urgent"],
    ),
    "REST contacts": (probe_rest_contacts, ["phone", "name", "tags", "opted_out", "title"]),
    "device incoming": (probe_incoming, ["id", "sender", "body", "sim", "received_at"]),
    "device poll": (
        probe_poll,
        ["slots", "wait", "sims", "battery_percent", "signal_dbm", "app_version", "charging"],
    ),
    "device confirm/report": (
        probe_confirm_report,
        ["ids", "lease", "id", "status", "parts", "error"],
    ),
    "device pair": (probe_pair, ["code", "email", "password", "device", "title", "sims"]),
    "app device": (
        probe_app_device,
        ["name", "simCards", "id", "slotIndex", "simNumber", "iccid", "pushToken"],
    ),
    "app states": (probe_app_states, ["id", "state", "recipients", "states"]),
    "app hook": (
        probe_app_hook,
        [
            "event",
            "message",
            "receivedAt",
            "messageId",
            "sender",
            "simNumber",
            "health",
            "simCards",
            "reason",
        ],
    ),
}


@pytest.mark.parametrize("probe", list(PROBES))
def test_every_hostile_value_in_every_field_gets_a_clear_answer_and_lists(faces, probe):
    check, fields = PROBES[probe]
    stored = False
    for field in fields:
        for value in HOSTILE:
            stored |= check(faces, {field: value})
    if stored:
        faces.assert_listings_read_everything()


@pytest.mark.parametrize("probe", list(PROBES))
@FUZZ
@given(data=st.data())
def test_generated_hostile_requests_get_a_clear_answer_and_list(faces, probe, data):
    check, fields = PROBES[probe]
    overrides = data.draw(st.dictionaries(st.sampled_from(fields), values, min_size=1, max_size=3))
    if check(faces, overrides):
        faces.assert_listings_read_everything()


@pytest.mark.parametrize("deep", DEEP_JSON, ids=[f"{d} deep" for d in DEPTHS])
def test_deep_json_anywhere_gets_a_clear_answer(faces, deep):
    for method in ("addsms", "getallsms", "addalotofsms", "gettoken", "savepaket"):
        for body in (deep, f'{{"token": "{faces.token}", "body": {deep}}}'):
            assert faces.compat_raw(method, body)["error"] == 1
    as_field = {"datajson": f'{{"token": "{faces.token}", "smsdata": {deep}}}'}
    assert faces.compat("addalotofsms", as_field, as_form=True)["error"] == 1
    for path in ("messages", "messages/batch", "contacts/import", "tags", "newsletters"):
        for body in (deep, f'{{"to": {deep}}}'):
            assert faces.api("post", path, body).status_code == 400
    for name in ("poll", "confirm", "report", "incoming", "heartbeat"):
        assert faces.device_call(name, f'{{"slots": {deep}}}').status_code == 400
    assert faces.device_call("pair", f'{{"device": {deep}}}', client=faces.web).status_code == 400


# --- The edge values that are allowed: stored, and read back everywhere -------------------


def _longest(unit: str) -> str:
    text = unit
    while segment_count(text + unit) <= 10 and len(text + unit) <= 1600:
        text += unit
    return text


def test_edge_values_stored_through_every_api_read_back_through_every_listing(faces, make_user):
    far = timezone.now() + timedelta(days=3650)
    bodies = [_longest("a"), _longest("😀"), "שלום \u202e עולם", "e\u0301" * 10, "€[]{}"]
    for body in bodies:
        compat = {"body": body, "customerid": 2**63 - 1, "timetosend": f"{far:%Y-%m-%d %H:%M:%S}"}
        sent = faces.compat("addsms", {"sendto": PHONE, "device_id": faces.device.pk, **compat})
        assert sent["error"] == 0, sent
        rest = {"to": PHONE, "body": body, "device_id": faces.device.pk}
        created = faces.api(
            "post", "messages", {**rest, "customer_id": -(2**63), "send_at": str(far)}
        )
        assert created.status_code == 201, created.content
    due = faces.compat("addsms", {"sendto": PHONE, "device_id": faces.device.pk, "body": "now"})
    assert due["error"] == 0
    paket = faces.compat(
        "savepaket",
        {
            "title": "😀" * 150,
            "device_id": faces.device.pk,
            "body": bodies[1],
            "tags": str(faces.tag.pk),
            "time_to_send": f"{far:%d.%m.%Y %H:%M:%S}",
        },
    )
    assert paket["error"] == 0, paket
    letter = {"title": "edge", "device_id": faces.device.pk, "body": bodies[0]}
    newsletter = faces.api(
        "post", "newsletters", {**letter, "tags": [faces.tag.pk], "send_at": str(far)}
    )
    assert newsletter.status_code == 201, newsletter.content
    incoming = [
        {"id": "first", "sender": PHONE, "body": bodies[2], "received_at": "0001-01-02T00:00:00Z"},
        {"id": "last", "sender": PHONE, "body": bodies[1], "received_at": str(inputs.LATEST)},
    ]
    assert faces.device_call("incoming", {"messages": incoming}).status_code == 200

    faces.assert_listings_read_everything()
    stored = Message.objects.filter(account=faces.account).exclude(device=faces.app_device)
    assert stored.count() == 2 * len(bodies) + 3
    assert {m.send_at.year for m in stored} >= {1, far.year, 9999}
    root = make_user("root@example.com", is_staff=True, is_superuser=True)
    admin = Client(raise_request_exception=False)
    admin.force_login(root)
    for name in ("messaging_message", "contacts_newsletter"):
        assert admin.get(reverse(f"admin:{name}_changelist")).status_code == 200, name
    for message in stored:
        page = admin.get(reverse("admin:messaging_message_change", args=[message.pk]))
        assert page.status_code == 200, message.pk
    for item in Newsletter.objects.filter(account=faces.account):
        page = admin.get(reverse("admin:contacts_newsletter_change", args=[item.pk]))
        assert page.status_code == 200, item.pk
