"""REST API v1: every resource, errors as problem documents, tenancy, idempotency, limits."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.utils import timezone

from contacts.models import Contact, Newsletter, Tag
from devices.models import Device
from gateway import services as accounts
from gateway.models import ApiToken
from messaging import services as messaging
from messaging.models import IdempotencyKey, Message, Status, WebhookEndpoint, WebhookEvent

API = "/api/v1/"


class Api:
    def __init__(self, secret: str) -> None:
        self.client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")

    def get(self, path, params=None, **extra):
        return self.client.get(API + path, params or {}, **extra)

    def post(self, path, payload=None, **extra):
        return self.client.post(API + path, payload or {}, content_type="application/json", **extra)

    def patch(self, path, payload, **extra):
        return self.client.patch(API + path, payload, content_type="application/json", **extra)

    def delete(self, path):
        return self.client.delete(API + path)


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()


@pytest.fixture
def setup(paired):
    device, _ = paired(title="Pixel")
    _, secret = accounts.create_api_token(device.account, "tests")
    return Api(secret), device.account, device


@pytest.fixture
def foreign(paired):
    device, _ = paired(title="Theirs")
    (message_id,) = messaging.submit(
        device.account, [messaging.OutgoingSms(device.pk, "1234", "their secret")]
    )
    tag = Tag.objects.create(account=device.account, title="their tag")
    contact = Contact.objects.create(account=device.account, phone="+4915799999999")
    newsletter = Newsletter.objects.create(
        account=device.account, title="their news", device=device, body="b"
    )
    endpoint = WebhookEndpoint.objects.create(
        account=device.account, kind="status", url="https://example.com/h"
    )
    token, _ = accounts.create_api_token(device.account, "theirs")
    return {
        "messages": message_id,
        "devices": device.pk,
        "tags": tag.pk,
        "contacts": contact.pk,
        "newsletters": newsletter.pk,
        "webhooks": endpoint.pk,
        "tokens": token.pk,
    }


def is_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body


# --- auth, errors ---------------------------------------------------------------------------


def test_requests_need_a_valid_bearer_token(setup):
    _api, account, _ = setup
    body = is_problem(Client().get(API + "messages"), 401)
    assert "credentials" in body["detail"].lower() or "authentication" in body["detail"].lower()
    assert Client().get(API + "messages")["WWW-Authenticate"].startswith("Bearer")
    is_problem(Api("sgw_wrong").get("messages"), 401)
    token, secret = accounts.create_api_token(account, "soon revoked")
    accounts.revoke_token(account, token.pk)
    is_problem(Api(secret).get("messages"), 401)


def test_the_rate_limit_answers_429_with_retry_after(setup, settings):
    api, account, _ = setup
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api": "3/min"},
    }
    for _ in range(3):
        assert api.get("tags").status_code == 200
    response = api.get("tags")
    is_problem(response, 429)
    assert 0 < int(response["Retry-After"]) <= 60
    # the limit is per token: another token of the account is not held back
    _, other = accounts.create_api_token(account, "other")
    assert Api(other).get("tags").status_code == 200


# --- messages -------------------------------------------------------------------------------


def test_create_reports_encoding_and_segments_per_message(setup):
    api, _account, device = setup
    response = api.post(
        "messages",
        {
            "to": ["+49 157 52982212", "+436641234567"],
            "body": "Grüße €",
            "device_id": device.pk,
            "urgent": True,
        },
    )
    assert response.status_code == 201, response.content
    created = response.json()["messages"]
    assert [m["to"] for m in created] == ["+4915752982212", "+436641234567"]
    assert {
        (m["encoding"], m["segments"], m["status"], m["status_name"], m["direction"])
        for m in created
    } == {("GSM-7", 1, 1, "new", "outgoing")}
    emoji = api.post("messages", {"to": "1234", "body": "Hi 😀", "device_id": device.pk}).json()[
        "messages"
    ][0]
    assert (emoji["encoding"], emoji["segments"]) == ("UCS-2", 1)


def test_create_validation_errors_name_the_fields(setup):
    api, _, device = setup
    body = is_problem(api.post("messages", {"to": [], "body": "", "device_id": "x"}), 400)
    assert set(body["errors"]) == {"to", "body", "device_id"}
    bad_phone = is_problem(
        api.post("messages", {"to": "CALL ME", "body": "x", "device_id": device.pk}), 422
    )
    assert "digits" in bad_phone["detail"]
    assert Message.objects.count() == 0


def test_mass_assignment_of_status_owner_and_lease_fields_is_ignored(setup, foreign):
    api, account, device = setup
    response = api.post(
        "messages",
        {
            "to": "1234",
            "body": "x",
            "device_id": device.pk,
            "status": 7,
            "account": 99,
            "account_id": 99,
            "lease_expires_at": "2030-01-01T00:00:00Z",
            "confirmed_at": "2030-01-01T00:00:00Z",
        },
    )
    message = Message.objects.get(pk=response.json()["messages"][0]["id"])
    assert (message.status, message.account_id, message.lease_expires_at, message.confirmed_at) == (
        Status.NEW,
        account.pk,
        None,
        None,
    )
    patched = api.patch(
        f"devices/{device.pk}",
        {
            "account": 99,
            "last_seen_at": "2000-01-01T00:00:00Z",
            "segments_per_minute": 999,
            "delay_between_sms": 7,
        },
    )
    assert patched.status_code == 200
    device.refresh_from_db()
    assert (device.account_id, device.segments_per_minute, device.delay_between_sms) == (
        account.pk,
        30,
        7,
    )


def test_batch_create_and_its_bounds(setup):
    api, _, device = setup
    response = api.post(
        "messages/batch",
        {"messages": [{"to": "1234", "body": f"m{i}", "device_id": device.pk} for i in range(3)]},
    )
    assert response.status_code == 201 and len(response.json()["messages"]) == 3
    too_many = api.post(
        "messages/batch", {"messages": [{"to": "1", "body": "x", "device_id": device.pk}] * 10_001}
    )
    is_problem(too_many, 413)
    one_bad = api.post(
        "messages/batch",
        {
            "messages": [
                {"to": "1234", "body": "ok", "device_id": device.pk},
                {"to": "1234", "body": "x", "device_id": 999999},
            ]
        },
    )
    assert "item 1: Device not found" in is_problem(one_bad, 422)["detail"]
    assert Message.objects.count() == 3


def test_list_pages_with_cursors_and_filters(setup):
    api, account, device = setup
    ids = messaging.submit(
        account,
        [
            messaging.OutgoingSms(device.pk, f"+4915700000{i:03d}", f"m{i}", sim=i % 2)
            for i in range(7)
        ],
    )
    Message.objects.create(
        account=account, device=device, phone="+4915711111111", body="STOP", status=Status.INCOMING
    )
    seen, url = [], "messages?page_size=3&direction=outgoing"
    while url:
        page = api.client.get(url if url.startswith("http") else API + url).json()
        assert "count" not in page
        seen += [m["id"] for m in page["results"]]
        url = page["next"]
    assert seen == sorted(ids, reverse=True)
    assert [
        m["body"] for m in api.get("messages", {"direction": "incoming"}).json()["results"]
    ] == ["STOP"]
    assert {m["sim"] for m in api.get("messages", {"sim": 1}).json()["results"]} == {1}
    assert [
        m["id"] for m in api.get("messages", {"phone": "+49 157 00000 003"}).json()["results"]
    ] == [ids[3]]
    messaging.cancel(account, [ids[0]])
    assert [m["id"] for m in api.get("messages", {"status": 20}).json()["results"]] == [ids[0]]
    assert api.get(
        "messages", {"created_after": "2000-01-01T00:00:00Z", "device": device.pk}
    ).json()["results"]
    is_problem(api.get("messages", {"status": "x"}), 400)


def test_retrieve_shows_history_and_cancel_goes_through_the_lifecycle(setup):
    api, account, device = setup
    (message_id,) = messaging.submit(account, [messaging.OutgoingSms(device.pk, "1234", "x")])
    cancelled = api.post(f"messages/{message_id}/cancel").json()
    assert cancelled["status"] == 20 and cancelled["history"][0]["to_status"] == 20
    assert api.get(f"messages/{message_id}").json()["history"][0]["by"] == "api"
    assert api.post(f"messages/{message_id}/cancel").status_code == 200  # again: unchanged
    (sent_id,) = messaging.submit(account, [messaging.OutgoingSms(device.pk, "1234", "y")])
    Message.objects.filter(pk=sent_id).update(status=Status.DELIVERED)
    is_problem(api.post(f"messages/{sent_id}/cancel"), 422)


# --- idempotency ----------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_answers_the_original(setup):
    api, _, device = setup
    payload = {"to": "1234", "body": "once", "device_id": device.pk}
    first = api.post("messages", payload, HTTP_IDEMPOTENCY_KEY="order-17")
    again = api.post("messages", payload, HTTP_IDEMPOTENCY_KEY="order-17")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Message.objects.count() == 1
    other = api.post("messages", {**payload, "body": "twice?"}, HTTP_IDEMPOTENCY_KEY="order-17")
    assert "different request" in is_problem(other, 422)["detail"]
    assert Message.objects.count() == 1


def test_a_duplicate_while_the_first_is_running_gets_409(setup):
    api, account, device = setup
    payload = {"to": "1234", "body": "slow", "device_id": device.pk}
    from messaging.api.v1.idempotency import _fingerprint

    class Probe:
        method, path, data = "POST", API + "messages", payload

    IdempotencyKey.objects.create(account=account, key="k-1", request_hash=_fingerprint(Probe()))  # type: ignore[arg-type]
    is_problem(api.post("messages", payload, HTTP_IDEMPOTENCY_KEY="k-1"), 409)
    assert Message.objects.count() == 0


def test_a_first_request_that_never_finished_stops_holding_its_key(setup):
    # Its process was killed, or the database went away between the key and the work.
    api, account, device = setup
    payload = {"to": "1234", "body": "lost", "device_id": device.pk}
    from messaging.api.v1.idempotency import IN_FLIGHT_LIMIT, _fingerprint

    class Probe:
        method, path, data = "POST", API + "messages", payload

    IdempotencyKey.objects.create(
        account=account, key="k-lost", request_hash=_fingerprint(Probe()),  # type: ignore[arg-type]
        created_at=timezone.now() - IN_FLIGHT_LIMIT - timedelta(seconds=1),
    )  # fmt: skip
    assert api.post("messages", payload, HTTP_IDEMPOTENCY_KEY="k-lost").status_code == 201
    replay = api.post("messages", payload, HTTP_IDEMPOTENCY_KEY="k-lost")
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert Message.objects.count() == 1


def test_a_failed_request_does_not_use_up_its_key(setup):
    api, _, _device = setup
    bad = api.post(
        "messages", {"to": "1234", "body": "x", "device_id": 999999}, HTTP_IDEMPOTENCY_KEY="k-2"
    )
    assert bad.status_code == 422
    assert not IdempotencyKey.objects.filter(key="k-2").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_create_one_set(paired):
    device, _ = paired()
    _, secret = accounts.create_api_token(device.account, "t")
    payload = {"to": ["1234", "5678"], "body": "race", "device_id": device.pk}
    results: list[int] = []

    def call():
        try:
            results.append(
                Api(secret).post("messages", payload, HTTP_IDEMPOTENCY_KEY="race-1").status_code
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Message.objects.count() == 2
    assert set(results) <= {201, 409} and 201 in results


# --- other resources ------------------------------------------------------------------------


def test_devices_list_update_disable_and_pairing_codes(setup):
    api, _account, device = setup
    listed = api.get("devices").json()["results"]
    assert [d["title"] for d in listed] == ["Pixel"] and listed[0]["queue"] == {
        "waiting": 0,
        "with_phone": 0,
    }
    assert (
        api.patch(f"devices/{device.pk}", {"delay_between_requests": 5, "batch_size": 20}).json()[
            "batch_size"
        ]
        == 20
    )
    is_problem(api.patch(f"devices/{device.pk}", {"delay_between_requests": 0}), 400)
    assert api.post(f"devices/{device.pk}/disable").json()["enabled"] is False
    code = api.post("devices/pairing-codes")
    assert (
        code.status_code == 201
        and len(code.json()["code"]) == 9
        and "--code" in code.json()["command"]
    )


def test_tags_and_contacts_crud_with_membership_and_import(setup):
    api, _account, _ = setup
    tag = api.post("tags", {"title": "vip"}).json()
    contact = api.post(
        "contacts", {"phone": "+49 157 00000001", "name": "Anna", "tags": [tag["id"]]}
    )
    assert contact.status_code == 201 and contact.json()["phone"] == "+4915700000001"
    cid = contact.json()["id"]
    assert api.patch(f"contacts/{cid}", {"opted_out": True, "tags": []}).json()["opted_out"] is True
    assert Contact.objects.get(pk=cid).events.get().reason == "changed through the API"
    assert api.get("contacts", {"tag": tag["id"]}).json()["results"] == []
    result = api.post(
        "contacts/import",
        {"contacts": [{"phone": "+4915700000002", "tags": "news"}, {"phone": "nope"}]},
    ).json()
    assert (result["created"], list(result["errors"])) == (1, ["3"])
    csv_file = SimpleUploadedFile(
        "c.csv",
        b"phone,name\n+4915700000003,Ben\n+49 157 00000003,Benny\n",
        content_type="text/csv",
    )
    uploaded = api.client.post(API + "contacts/import", {"file": csv_file}).json()
    assert (uploaded["created"], uploaded["updated"]) == (1, 1)
    assert uploaded["duplicates"] == {
        "3": "+4915700000003 is also on line 2: tags merged, this line's name kept"
    }
    assert api.delete(f"tags/{tag['id']}").status_code == 204
    is_problem(api.post("contacts", {"phone": "x"}), 400)


def test_newsletters_lifecycle(setup):
    api, account, device = setup
    tag = Tag.objects.create(account=account, title="all")
    created = api.post(
        "newsletters",
        {
            "title": "Sale",
            "device_id": device.pk,
            "body": "50% off",
            "tags": [tag.pk],
            "send_at": "2031-01-01T10:00:00Z",
        },
    )
    assert created.status_code == 201 and created.json()["state"] == "scheduled"
    nid = created.json()["id"]
    assert api.post(f"newsletters/{nid}/pause").json()["state"] == "paused"
    assert api.post(f"newsletters/{nid}/resume").json()["state"] == "scheduled"
    assert api.post(f"newsletters/{nid}/cancel").json()["state"] == "cancelled"
    is_problem(api.post(f"newsletters/{nid}/start"), 422)
    is_problem(api.patch(f"newsletters/{nid}", {"title": "too late"}), 422)
    assert api.delete(f"newsletters/{nid}").status_code == 204
    draft = api.post(
        "newsletters",
        {
            "title": "Draft",
            "device_id": device.pk,
            "body": "b",
            "tags": [tag.pk],
            "send_at": "2031-01-01T10:00:00Z",
        },
    ).json()
    changed = api.patch(f"newsletters/{draft['id']}", {"title": "Final", "body": "new text"}).json()
    assert (changed["title"], changed["body"]) == ("Final", "new text")
    is_problem(api.patch(f"newsletters/{draft['id']}", {"body": ""}), 400)
    is_problem(
        api.post("newsletters", {"title": "x", "device_id": device.pk, "body": "b", "tags": []}),
        400,
    )


def test_a_wrong_sim_slot_for_a_newsletter_is_reported_under_sim(setup):
    api, account, device = setup
    tag = Tag.objects.create(account=account, title="all")
    fields = {"title": "x", "device_id": device.pk, "body": "b", "tags": [tag.pk]}
    refused = is_problem(api.post("newsletters", {**fields, "sim": 5}), 400)
    assert set(refused["errors"]) == {"sim"}
    draft = api.post("newsletters", {**fields, "send_at": "2031-01-01T10:00:00Z"}).json()
    changed = is_problem(api.patch(f"newsletters/{draft['id']}", {"sim": 5}), 400)
    assert set(changed["errors"]) == {"sim"}
    assert Newsletter.objects.get(pk=draft["id"]).sim == 0


def test_webhooks_crud_test_delivery_and_log(setup, settings):
    api, _account, _ = setup
    refused = is_problem(
        api.post("webhooks", {"kind": "status", "url": "http://127.0.0.1:9/x"}), 400
    )
    assert "private" in str(refused["errors"])
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    created = api.post("webhooks", {"kind": "status", "url": "http://127.0.0.1:9/x"}).json()
    assert len(created["secret"]) == 64
    tested = api.post(f"webhooks/{created['id']}/test").json()
    assert (
        tested["kind"] == "webhook.test"
        and tested["attempts"] == 1
        and "Connection" in tested["last_error"]
    )
    events = api.get(f"webhooks/{created['id']}/events").json()["results"]
    assert [e["id"] for e in events] == [tested["id"]]
    again = api.post(f"webhooks/{created['id']}/events/{tested['id']}/redeliver").json()
    assert again["state"] == "pending"
    assert api.delete(f"webhooks/{created['id']}").status_code == 204
    assert not WebhookEvent.objects.exists()


def test_tokens_list_create_once_and_revoke(setup):
    api, _account, _ = setup
    created = api.post("tokens", {"name": "crm"}).json()
    secret = created["secret"]
    assert accounts.authenticate_token(secret).name == "crm"
    listed = api.get("tokens").json()["results"]
    assert secret not in str(listed) and {t["name"] for t in listed} == {"tests", "crm"}
    assert api.post(f"tokens/{created['token']['id']}/revoke").json()["revoked_at"] is not None
    assert accounts.authenticate_token(secret) is None


@pytest.mark.parametrize(
    "resource", ["messages", "devices", "tags", "contacts", "newsletters", "webhooks", "tokens"]
)
def test_another_accounts_ids_are_not_found_and_not_changed(setup, foreign, resource):
    api, _, _ = setup
    pk = foreign[resource]
    theirs = Device.objects.get(pk=foreign["devices"]).account_id

    def snapshot():
        return {
            m: list(m.objects.filter(account_id=theirs).values())
            for m in (Message, Device, Tag, Contact, Newsletter, WebhookEndpoint, ApiToken)
        }

    before = snapshot()
    is_problem(api.get(f"{resource}/{pk}"), 404)
    for method, suffix in (
        ("patch", ""),
        ("delete", ""),
        ("post", "/cancel"),
        ("post", "/revoke"),
        ("post", "/disable"),
        ("post", "/pause"),
    ):
        call = getattr(api, method)
        response = (
            call(f"{resource}/{pk}{suffix}", {"title": "x", "name": "x", "enabled": False})
            if method != "delete"
            else call(f"{resource}/{pk}")
        )
        assert response.status_code in (404, 405), (method, suffix, response.status_code)
    listed = api.get(resource).json()["results"]
    assert pk not in [item["id"] for item in listed]
    assert snapshot() == before


def test_the_schema_and_its_documentation_are_served_without_a_cdn(setup, client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/v1/messages" in schema.content
    docs = client.get("/api/docs/").content.decode()
    assert (
        "swagger-ui" in docs
        and "cdn" not in docs.lower()
        and "/static/drf_spectacular_sidecar/" in docs
    )
    assert client.get("/api/redoc/").status_code == 200
    # POST /messages documents its body, its example and its Idempotency-Key header.
    document = client.get("/api/schema/", {"format": "json"}).json()
    create = document["paths"]["/api/v1/messages"]["post"]
    assert "MessageCreate" in json.dumps(create["requestBody"])
    assert "Idempotency-Key" in {p["name"] for p in create.get("parameters", [])}
    assert "/api/v1/pools" in document["paths"]


def test_a_creation_time_window_pages_completely(setup):
    api, account, device = setup
    ids = messaging.submit(
        account, [messaging.OutgoingSms(device.pk, "1234", f"w{i}") for i in range(5)]
    )
    seen, url = [], API + "messages?page_size=2&created_after=2000-01-01T00:00:00Z"
    while url:
        page = api.client.get(url).json()
        seen += [m["id"] for m in page["results"]]
        url = page["next"]
    assert sorted(seen) == sorted(ids) and len(seen) == 5


# --- Hostile input: a 400 naming the field, never a 500 or a row that breaks a listing -----


def _post_raw(api, path, text, **extra):
    return api.client.post(API + path, text, content_type="application/json", **extra)


@pytest.mark.parametrize(
    ("send_at", "problem"),
    [
        ("9999-12-31T23:59:59-12:00", "send_at is out of range"),
        ("9999-12-31T12:00:00Z", "send_at is too far ahead: at most 10 years from now"),
        ("2030-01-01T10:00:00+16:00", "send_at has a UTC offset beyond ±15:59"),
    ],
)
def test_a_send_time_out_of_range_is_a_400_naming_send_at(setup, send_at, problem):
    api, _account, device = setup
    response = api.post(
        "messages", {"to": "1234", "body": "x", "device_id": device.pk, "send_at": send_at}
    )
    (message,) = is_problem(response, 400)["errors"]["send_at"]
    assert message.startswith(problem), message
    assert Message.objects.count() == 0
    assert api.get("messages").status_code == 200


def test_a_newsletter_send_time_out_of_range_is_a_400_on_create_and_on_change(setup):
    api, account, device = setup
    tag = Tag.objects.create(account=account, title="t")
    fields = {"title": "T", "device_id": device.pk, "body": "b", "tags": [tag.pk]}
    created = api.post("newsletters", {**fields, "send_at": "9999-12-31T12:00:00Z"})
    assert is_problem(created, 400)["errors"]["send_at"][0].startswith("send_at is too far")
    newsletter = api.post("newsletters", {**fields, "send_at": "2030-01-01T00:00:00Z"}).json()
    changed = api.patch(f"newsletters/{newsletter['id']}", {"send_at": "9999-12-31T23:00:00-12:00"})
    assert is_problem(changed, 400)["errors"]["send_at"][0].startswith("send_at is out of range")
    assert Newsletter.objects.get().send_at.year == 2030
    assert api.get("newsletters").status_code == 200


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("created_after=9999-12-31T23:59:59-12:00", "created_after is out of range"),
        ("created_before=2024-02-30T00:00:00Z", "an ISO 8601 date-time"),
        ("created_after=2030-01-01T00:00:00+20:00", "created_after has a UTC offset beyond"),
    ],
)
def test_a_time_filter_out_of_range_is_a_400_naming_it(setup, query, problem):
    api, _account, _device = setup
    name, value = query.split("=")
    body = is_problem(api.get("messages", {name: value}), 400)
    (name,) = body["errors"]
    # Field errors are lists, as for every field of every request body
    (message,) = body["errors"][name]
    assert message.startswith(problem)


@pytest.mark.parametrize(
    "path",
    ["contacts?tag=abc", "messages?status=abc", "messages?device=--1", "messages?sim=1.5"],
)
def test_a_non_integer_query_filter_is_a_400_naming_it(setup, path):
    api, _account, _device = setup
    name = path.split("?")[1].split("=")[0]
    assert is_problem(api.client.get(API + path), 400)["errors"] == {name: ["an integer"]}


def test_an_integer_query_filter_beyond_64_bits_is_a_400(setup):
    api, _account, _device = setup
    body = is_problem(api.client.get(f"{API}messages?customer_id={2**64}"), 400)
    assert body["errors"]["customer_id"][0].startswith("customer_id must be between")


def test_a_customer_id_beyond_64_bits_is_a_400_and_the_largest_is_stored(setup):
    api, _account, device = setup
    fields = {"to": "1234", "body": "x", "device_id": device.pk}
    too_big = api.post("messages", {**fields, "customer_id": 2**63})
    assert "customer_id" in is_problem(too_big, 400)["errors"]
    largest = api.post("messages", {**fields, "customer_id": 2**63 - 1})
    assert largest.status_code == 201
    listed = api.get("messages", {"customer_id": 2**63 - 1}).json()["results"]
    assert [m["customer_id"] for m in listed] == [2**63 - 1]


@pytest.mark.parametrize("resource", ["messages", "newsletters", "webhooks"])
def test_true_is_not_a_device_id(setup, resource):
    api, account, _device = setup
    tag = Tag.objects.create(account=account, title="t")
    payloads: dict[str, dict[str, object]] = {
        "messages": {"to": "1234", "body": "x"},
        "newsletters": {"title": "T", "body": "b", "tags": [tag.pk]},
        "webhooks": {"kind": "status", "url": "https://example.com/h"},
    }
    response = api.post(resource, {**payloads[resource], "device_id": True})
    assert "device_id" in is_problem(response, 400)["errors"]


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_json_nested_deeply_is_a_400_problem(setup, depth):
    api, _account, _device = setup
    response = _post_raw(api, "messages", f'{{"to": {"[" * depth + "]" * depth}}}')
    assert is_problem(response, 400)["detail"].endswith("is nested deeper than 32 levels")


def test_a_lone_surrogate_in_json_is_a_400_naming_the_field(setup):
    api, _account, device = setup
    # A choice field quotes the value it refuses; rendering the surrogate back was a 500.
    hooked = _post_raw(api, "webhooks", '{"kind": "\\ud800", "url": "https://example.com/h"}')
    assert is_problem(hooked, 400)["detail"].startswith("kind contains an unpaired UTF-16")
    sent = _post_raw(
        api, "messages", f'{{"to": "1234", "body": "\\udc00", "device_id": {device.pk}}}'
    )
    assert is_problem(sent, 400)["detail"].startswith("body contains an unpaired UTF-16")
    assert Message.objects.count() == 0 and WebhookEndpoint.objects.count() == 0


def test_a_nul_in_a_recipient_is_a_400_naming_to(setup):
    api, _account, device = setup
    response = api.post("messages", {"to": ["1234\x00"], "body": "x", "device_id": device.pk})
    assert is_problem(response, 400)["errors"]["to"] == [
        "to must not contain NUL characters (U+0000)"
    ]


def test_a_json_body_over_the_upload_limit_is_a_413(setup, settings):
    api, _account, device = setup
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post("messages", {"to": "1234", "body": "x" * 2000, "device_id": device.pk})
    assert is_problem(response, 413)["detail"].startswith("The request body is larger than")


def test_an_idempotency_key_with_a_nul_is_refused(setup):
    api, _account, device = setup
    response = api.post(
        "messages",
        {"to": "1234", "body": "x", "device_id": device.pk},
        HTTP_IDEMPOTENCY_KEY="k\x00",
    )
    assert is_problem(response, 422)["detail"] == "Idempotency-Key must be printable text"
    assert Message.objects.count() == 0


def test_a_csv_import_with_a_nul_or_an_oversized_field_reports_those_rows(setup):
    api, _account, _device = setup
    content = (
        b"phone,name\n+4915700000001,Anna\n+4915700000002,Be\x00n\n+4915700000003,"
        + b"y" * 200_000
        + b"\n+4915700000004,Dora\n"
    )
    uploaded = api.client.post(
        API + "contacts/import", {"file": SimpleUploadedFile("c.csv", content)}
    )
    assert uploaded.status_code == 200, uploaded.content
    result = uploaded.json()
    assert result["created"] == 2
    assert result["errors"] == {
        "3": "name must not contain NUL characters (U+0000)",
        "4": "the row cannot be read: field larger than field limit (131072)",
    }
    assert sorted(Contact.objects.values_list("name", flat=True)) == ["Anna", "Dora"]
    assert api.get("contacts").status_code == 200


def test_a_csv_import_without_a_phone_column_is_a_400(setup):
    api, _account, _device = setup
    csv_file = SimpleUploadedFile("c.csv", b"name,tags\nAnna,vip\n")
    response = api.client.post(API + "contacts/import", {"file": csv_file})
    assert is_problem(response, 400)["errors"] == {
        "file": "The first row must name the columns, with at least 'phone'"
    }


def test_a_list_page_reads_messages_in_one_statement_whatever_its_size(setup):
    """The list reads only the columns a message shows: a page of 1 and a page of 20
    issue the same statements (a column left out would cost one query per item)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    api, account, device = setup
    messaging.submit(account, [messaging.OutgoingSms(device.pk, f"+49157000{i:04d}", f"m{i}")
                               for i in range(20)])  # fmt: skip
    Message.objects.filter(account=account).update(
        sent_at=timezone.now(), delivered_at=timezone.now(), error_detail="x"
    )
    api.get("messages")  # the token's first use is recorded once
    counts = []
    for size in (1, 20):
        with CaptureQueriesContext(connection) as queries:
            page = api.get("messages", {"page_size": size}).json()
        assert len(page["results"]) == size
        reads = [q["sql"] for q in queries.captured_queries if "messaging_message" in q["sql"]]
        assert len(reads) == 1, reads
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1]
    assert '"lease_id"' not in reads[0] and '"body"' in reads[0]


def test_a_message_is_rendered_as_its_fields_declare(setup):
    """MessageSerializer builds its dict directly; DRF's field-by-field rendering of the
    same fields is the reference: equal values, equal key order, for every kind of row."""
    from rest_framework import serializers

    from messaging.api.v1.serializers import MessageSerializer

    _, account, device = setup
    ids = messaging.submit(account, [
        messaging.OutgoingSms(device.pk, "+4915752982212", "plain"),
        messaging.OutgoingSms(device.pk, "+4915752982213", "Привет 📦", sim=0, urgent=True,
                              customer_id=77),
    ])  # fmt: skip
    Message.objects.filter(pk=ids[0]).update(
        status=Status.DELIVERED, sent_at=timezone.now(),
        delivered_at=timezone.now() + timedelta(microseconds=123456), error_detail="late",
    )  # fmt: skip
    Message.objects.filter(pk=ids[1]).update(send_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    Message.objects.create(
        account=account, device=device, phone="+4915700000001", body="in", status=Status.INCOMING
    )
    rows = list(Message.objects.filter(account=account).order_by("id"))
    assert len(rows) == 3
    assert rows[1].send_at.microsecond == 0  # ISO 8601 without a fraction
    for row in rows:
        fast = MessageSerializer(row).data
        reference = serializers.Serializer.to_representation(MessageSerializer(), row)
        assert list(fast.items()) == list(reference.items()), row.pk
