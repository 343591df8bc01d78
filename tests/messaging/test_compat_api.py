"""Golden tests of /getdata/*: every wire format of spec Appendix A, exact JSON answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.utils import timezone

from contacts.models import Contact, Newsletter, Tag
from devices.models import SimSlot
from gateway import services as accounts
from messaging.models import Message, Status

PASSWORD = "p@ss+word&x"
SAVED = "Sms has been saved successfully"


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()  # login failure counters
    yield
    cache.clear()


@pytest.fixture
def client() -> Client:
    # CSRF checks on, as for any client in the field: the API must not need a CSRF token.
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def owner(make_user):
    return make_user("user@example.com", PASSWORD)


@pytest.fixture
def token(owner) -> str:
    return accounts.compat_token(owner.account)


@pytest.fixture
def device(owner, make_device):
    return make_device(owner.account, slots=(0, 1), title="SM-F NIK!")


def raw(response) -> bytes:
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    return response.content


def body(response) -> dict:
    return json.loads(raw(response))


def saved(ids: list[int]) -> bytes:
    return (
        f'{{"error":0,"sms_id":{ids[0]},"message":"{SAVED}","sms_ids":[{",".join(map(str, ids))}]}}'
    ).encode()


def last_ids(n: int = 1) -> list[int]:
    return sorted(Message.objects.order_by("-id").values_list("id", flat=True)[:n])


# --- gettoken -------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["multipart", "urlencoded", "query", "json"])
def test_gettoken_answers_the_same_token_in_every_encoding(client, owner, token, encoding):
    fields = {"email": "user@example.com", "pass": PASSWORD}
    if encoding == "multipart":
        response = client.post("/getdata/gettoken", fields)
    elif encoding == "urlencoded":
        response = client.post(
            "/getdata/gettoken", urlencode(fields), content_type="application/x-www-form-urlencoded"
        )
    elif encoding == "json":
        response = client.post("/getdata/gettoken", fields, content_type="application/json")
    else:
        response = client.get("/getdata/gettoken", fields)
    assert raw(response) == f'{{"error":0,"token":"{token}","message":"OK"}}'.encode()


def test_gettoken_ignores_the_java_clients_stray_token(client, owner, token):
    response = client.post(
        "/getdata/gettoken",
        "pass=p%40ss%2Bword%26x&email=user%40example.com&token=NO_TOKEN",
        content_type="application/x-www-form-urlencoded",
    )
    assert body(response)["token"] == token


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("user@example.com", "wrong"),
        ("nobody@example.com", PASSWORD),
        ("", ""),
        ("user@example.com", ""),
    ],
)
def test_gettoken_refuses_bad_credentials_with_one_message(client, owner, email, password):
    response = client.post("/getdata/gettoken", {"email": email, "pass": password})
    assert raw(response) == b'{"error":1,"message":"Login or password incorrect"}'


def test_ten_failed_logins_lock_the_account_for_the_window(client, owner, token):
    for attempt in range(10):
        response = client.post(
            "/getdata/gettoken",
            {"email": "user@example.com", "pass": "wrong"},
            REMOTE_ADDR=f"10.0.0.{attempt}",
        )
        assert body(response)["message"] == "Login or password incorrect"
    # Even the right password, from yet another address, is refused now.
    response = client.post(
        "/getdata/gettoken", {"email": "user@example.com", "pass": PASSWORD}, REMOTE_ADDR="10.0.1.1"
    )
    assert body(response) == {
        "error": 1,
        "message": "Too many failed logins; try again in 15 minutes",
    }
    response = client.post(
        "/getdata/smstosend",
        {"email": "user@example.com", "pass": PASSWORD},
        REMOTE_ADDR="10.0.1.1",
    )
    assert "Too many failed logins" in body(response)["message"]


def test_ten_failed_logins_from_one_address_lock_that_address(client, owner, make_user):
    make_user("other@example.com", "other-password")
    for attempt in range(10):
        client.post("/getdata/gettoken", {"email": f"guess{attempt}@example.com", "pass": "x"})
    response = client.post(
        "/getdata/gettoken", {"email": "other@example.com", "pass": "other-password"}
    )
    assert "Too many failed logins" in body(response)["message"]
    other_address = client.post(
        "/getdata/gettoken",
        {"email": "other@example.com", "pass": "other-password"},
        REMOTE_ADDR="192.0.2.7",
    )
    assert body(other_address)["error"] == 0


# --- addsms: the wire formats of Appendix A -------------------------------------------------


def test_addsms_phpex_multipart(client, token, device):
    response = client.post(
        "/getdata/addsms",
        {
            "token": token,
            "sendto": "+49 157 52982212",
            "body": "Test message from API",
            "device_id": str(device.pk),
            "sim": "0",
            "timetosend": "2031-08-01 12:00",
            "customerid": "19921",
            "urgent": "1",
        },
    )
    assert raw(response) == saved(last_ids())
    message = Message.objects.get()
    assert (message.phone, message.phone_raw) == ("+4915752982212", "+49 157 52982212")
    assert message.customer_id == 19921 and message.urgent and message.sim == 0
    assert message.send_at == datetime(2031, 8, 1, 12, 0, tzinfo=UTC)
    assert message.status == Status.NEW and message.account_id == device.account_id


def test_addsms_botman_query_only_post_with_empty_body(client, token, device):
    query = f"sendto=%2B4915752982212&body=Hi+%26+%2Bmore&token={token}&device_id={device.pk}&sim=0"
    response = client.post(
        f"/getdata/addsms?{query}", b"", content_type="application/x-www-form-urlencoded"
    )
    assert raw(response) == saved(last_ids())
    message = Message.objects.get()
    assert (message.phone, message.body) == ("+4915752982212", "Hi & +more")


def test_addsms_phpsdk_urlencoded_with_customerId_alias(client, token, device):
    response = client.post(
        "/getdata/addsms",
        f"sendto=%2B4915752982212&body=Hi+%26+%2Bmore&device_id={device.pk}"
        f"&timetosend=2031-01-01+10%3A00%3A00&sim=1&customerId=777&urgent=1&token={token}",
        content_type="application/x-www-form-urlencoded",
    )
    assert raw(response) == saved(last_ids())
    message = Message.objects.get()
    assert message.customer_id == 777 and message.sim == 1 and message.urgent


@pytest.mark.parametrize(("urgent", "expected"), [("false", False), ("true", True)])
def test_addsms_java_client_with_boolean_strings(client, token, device, urgent, expected):
    response = client.post(
        "/getdata/addsms",
        f"sendto=%2B4915752982212&device_id={device.pk}&sim=0&body=Hi+%26+%2Bmore"
        f"&urgent={urgent}&token={token}",
        content_type="application/x-www-form-urlencoded",
        HTTP_UPGRADE="h2c",
        HTTP_CONNECTION="Upgrade, HTTP2-Settings",
        HTTP_HTTP2_SETTINGS="AAMAAABkAARAAAAAAAIAAAAA",
    )
    assert raw(response) == saved(last_ids())
    assert Message.objects.get().urgent is expected


def test_addsms_unescaped_plus_from_python_requests(client, token, device):
    response = client.post(
        "/getdata/addsms",
        f"token={token}&sendto=+4915752982212&body=Hi there&device_id={device.pk}".encode(),
        content_type="application/x-www-form-urlencoded",
        HTTP_APIKEY="api key",
    )
    assert raw(response) == saved(last_ids())
    message = Message.objects.get()
    assert (message.phone, message.body) == ("+4915752982212", "Hi there")


def test_addsms_get_with_query_string(client, token, device):
    response = client.get(
        "/getdata/addsms/",
        {"token": token, "sendto": "+4915752982212", "body": "Hi", "device_id": device.pk},
    )
    assert raw(response) == saved(last_ids())


def test_addsms_json_body(client, token, device):
    response = client.post(
        "/getdata/addsms",
        {
            "token": token,
            "sendto": "+4915752982212",
            "body": "Hi",
            "device_id": device.pk,
            "urgent": 1,
        },
        content_type="application/json",
    )
    assert raw(response) == saved(last_ids())


def test_the_query_string_wins_over_the_body(client, token, device):
    client.post(
        f"/getdata/addsms?body=from-query&token={token}",
        {"body": "from-body", "sendto": "1234", "device_id": device.pk},
    )
    assert Message.objects.get().body == "from-query"


def test_comma_separated_recipients_make_one_sms_each(client, token, device):
    response = client.post(
        "/getdata/addsms",
        {
            "token": token,
            "sendto": "+4915752982212, +436641234567,015752982212",
            "body": "Hi",
            "device_id": device.pk,
        },
    )
    ids = last_ids(3)
    assert raw(response) == saved(ids)
    assert list(Message.objects.order_by("id").values_list("phone", flat=True)) == [
        "+4915752982212",
        "+436641234567",
        "015752982212",
    ]


@pytest.mark.parametrize(
    ("timetosend", "expected"),
    [
        ("2031-08-01", datetime(2031, 8, 1, tzinfo=UTC)),
        ("2031-08-01 12:00", datetime(2031, 8, 1, 12, tzinfo=UTC)),
        ("2031-08-01 12:00:30", datetime(2031, 8, 1, 12, 0, 30, tzinfo=UTC)),
    ],
)
def test_timetosend_formats_are_read_as_server_time(client, token, device, timetosend, expected):
    client.post(
        "/getdata/addsms",
        {
            "token": token,
            "sendto": "1234",
            "body": "x",
            "device_id": device.pk,
            "timetosend": timetosend,
        },
    )
    assert Message.objects.get().send_at == expected


def test_timetosend_in_the_past_means_now(client, token, device):
    before = timezone.now()
    client.post(
        "/getdata/addsms",
        {
            "token": token,
            "sendto": "1234",
            "body": "x",
            "device_id": device.pk,
            "timetosend": "2019-07-01 23:50:00",
        },
    )
    assert Message.objects.get().send_at >= before


def test_smstosend_logs_in_with_email_and_password(client, owner, device):
    response = client.post(
        "/getdata/smstosend",
        {
            "email": "user@example.com",
            "pass": PASSWORD,
            "sendto": "+4915752982212",
            "body": "OTP 1234",
            "device_id": device.pk,
            "urgent": "1",
        },
    )
    assert raw(response) == saved(last_ids())
    bad = client.post(
        "/getdata/smstosend",
        {
            "email": "user@example.com",
            "pass": "nope",
            "sendto": "+4915752982212",
            "body": "x",
            "device_id": device.pk,
        },
    )
    assert raw(bad) == b'{"error":1,"message":"Login or password incorrect"}'
    assert Message.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sendto": "", "body": "x"}, "sendto is required"),
        ({"sendto": "1234", "body": ""}, "body is required"),
        ({"sendto": "1234", "body": "x", "device_id": ""}, "device_id is required"),
        ({"sendto": "1234", "body": "x", "device_id": "abc"}, "device_id must be an integer"),
        ({"sendto": "1234", "body": "x", "device_id": "999999"}, "Device not found"),
        ({"sendto": "1234", "body": "x", "sim": "2"}, "WhatsApp Business"),
        ({"sendto": "1234", "body": "x", "sim": "5"}, "RCS channel 2"),
        ({"sendto": "1234", "body": "x", "sim": "7"}, "sim must be 0"),
        ({"sendto": "1234", "body": "x", "urgent": "maybe"}, "urgent must be 0 or 1"),
        ({"sendto": "1234", "body": "x", "customerid": "abc"}, "customerid must be an integer"),
        ({"sendto": "1234", "body": "x", "timetosend": "tomorrow"}, "timetosend must be a date"),
        ({"sendto": "+49 157 CALL", "body": "x"}, "characters other than digits"),
        ({"sendto": "1234", "body": "x" * 1601}, "longer than 1600"),
        ({"sendto": "1234", "body": "ж" * 700}, "at most 10"),
    ],
)
def test_addsms_bad_input_gets_a_clear_error_and_stores_nothing(
    client, token, device, fields, message
):
    fields = {"token": token, "device_id": device.pk, **fields}
    answer = body(client.post("/getdata/addsms", fields))
    assert answer["error"] == 1 and message in answer["message"], answer
    assert list(answer) == ["error", "message"]
    assert Message.objects.count() == 0


def test_a_sim_slot_the_device_lacks_is_refused(client, token, owner, make_device):
    single = make_device(owner.account, slots=(0,))
    answer = body(
        client.post(
            "/getdata/addsms",
            {"token": token, "sendto": "1234", "body": "x", "device_id": single.pk, "sim": "1"},
        )
    )
    assert answer == {"error": 1, "message": "Device has no SIM slot 1"}


@pytest.mark.parametrize(
    ("value", "message"), [("", "Token is required"), ("0" * 32, "Token is invalid")]
)
def test_a_missing_or_wrong_token_is_refused(client, device, value, message):
    answer = raw(
        client.post(
            "/getdata/addsms",
            {"token": value, "sendto": "1234", "body": "x", "device_id": device.pk},
        )
    )
    assert answer == f'{{"error":1,"message":"{message}"}}'.encode()


def test_client_cannot_set_status_owner_or_lease_fields(client, token, device, make_account):
    other = make_account()
    client.post(
        "/getdata/addsms",
        {
            "token": token,
            "sendto": "1234",
            "body": "x",
            "device_id": device.pk,
            "status": "7",
            "account": other.pk,
            "account_id": other.pk,
            "id": "5",
            "sent_at": "2020-01-01",
            "segments": "9",
            "lease_expires_at": "2030-01-01",
        },
    )
    message = Message.objects.get()
    assert message.status == Status.NEW and message.account_id == device.account_id
    assert message.sent_at is None and message.segments == 1


def test_unknown_methods_and_verbs_answer_in_the_error_shape(client, token):
    assert body(client.get("/getdata/nosuchthing", {"token": token}))["error"] == 1
    assert body(client.put("/getdata/addsms"))["message"] == "Use GET or POST"


def test_malformed_json_body_is_a_clear_error(client, token):
    answer = body(
        client.post("/getdata/addsms", b'{"token": "x", ', content_type="application/json")
    )
    assert answer["error"] == 1 and "not valid JSON" in answer["message"]


def test_addsmstosenderid_explains_sender_ids_do_not_exist_here(client, token):
    answer = body(
        client.post(
            "/getdata/addsmstosenderid",
            {"token": token, "send_to": "+4915752982212", "sender_id": 2, "template_id": 9},
            content_type="application/json",
        )
    )
    assert answer["error"] == 1 and "Sender IDs are not available" in answer["message"]


# --- addalotofsms ---------------------------------------------------------------------------


def _bulk(token, device, n=2, **extra):
    return {
        "token": token,
        "smsdata": [
            {
                "sendto": "+49 157 52982212",
                "body": f"test message {i}",
                "device_id": str(device.pk),
                "sim": 0,
                "timetosend": "2019-07-01 23:50:00",
                "urgent": "1",
                **extra,
            }
            for i in range(n)
        ],
    }


BULK_OK = f'{{"error":0,"message":"{SAVED}"}}'.encode()


def test_addalotofsms_datajson_in_multipart(client, token, device):
    response = client.post("/getdata/addalotofsms", {"datajson": json.dumps(_bulk(token, device))})
    assert raw(response) == BULK_OK
    stored = list(
        Message.objects.order_by("id").values_list("body", "customer_id", "urgent", "phone")
    )
    assert stored == [
        ("test message 0", 0, True, "+4915752982212"),
        ("test message 1", 0, True, "+4915752982212"),
    ]


def test_addalotofsms_datajson_urlencoded(client, token, device):
    response = client.post(
        "/getdata/addalotofsms",
        "datajson=" + quote(json.dumps(_bulk(token, device))),
        content_type="application/x-www-form-urlencoded",
    )
    assert raw(response) == BULK_OK
    assert Message.objects.count() == 2


def test_addalotofsms_raw_json_body_as_the_npm_client_sends(client, token, device):
    payload = {
        "token": token,
        "smsdata": [{"sendto": "+49157", "body": "b1", "device_id": device.pk, "sim": 0}],
    }
    response = client.post("/getdata/addalotofsms", payload, content_type="application/json")
    assert raw(response) == BULK_OK
    assert Message.objects.get().body == "b1"


def test_addalotofsms_token_may_sit_beside_datajson(client, token, device):
    data = _bulk(token, device)
    del data["token"]
    response = client.post("/getdata/addalotofsms", {"token": token, "datajson": json.dumps(data)})
    assert raw(response) == BULK_OK


def test_addalotofsms_with_one_bad_item_saves_nothing_and_names_it(client, token, device):
    data = _bulk(token, device, n=5)
    data["smsdata"][3]["device_id"] = 999999
    data["smsdata"][1]["body"] = ""
    answer = body(client.post("/getdata/addalotofsms", {"datajson": json.dumps(data)}))
    assert answer["error"] == 1
    assert answer["message"].startswith(
        "Nothing was saved: item 1: body is required; item 3: Device not found"
    )
    assert answer["errors"] == [
        {"index": 1, "message": "body is required"},
        {"index": 3, "message": "Device not found"},
    ]
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    ("datajson", "message"),
    [
        ("{not json", "datajson is not valid JSON"),
        ('["a"]', "datajson must be a JSON object"),
        ('{"smsdata": "x"}', "smsdata must be a list"),
        ('{"smsdata": []}', "smsdata is empty"),
        ('{"smsdata": [1]}', "item 0: must be an object"),
    ],
)
def test_addalotofsms_malformed_payloads(client, token, datajson, message):
    answer = body(client.post("/getdata/addalotofsms", {"token": token, "datajson": datajson}))
    assert answer["error"] == 1 and message in answer["message"]


def test_addalotofsms_over_the_item_bound_is_refused(client, token, device):
    data = _bulk(token, device, n=10_001)
    answer = body(client.post("/getdata/addalotofsms", data, content_type="application/json"))
    assert answer == {"error": 1, "message": "At most 10000 SMS per request; got 10001"}
    assert Message.objects.count() == 0


def test_addalotofsms_over_the_byte_bound_is_refused(client, token, device):
    data = _bulk(token, device, n=2)
    data["smsdata"][0]["body"] = "x" * (11 * 1024 * 1024)
    answer = body(client.post("/getdata/addalotofsms", data, content_type="application/json"))
    assert answer["error"] == 1 and "larger than 10240 KB" in answer["message"]


# --- getallsms ------------------------------------------------------------------------------


def _message_at(account, device, created: datetime, **fields) -> Message:
    from messaging import services

    phone = fields.pop("phone", "+4915752982212")
    body = fields.pop("body", "Test message from API")
    (message_id,) = services.submit(
        account, [services.OutgoingSms(device.pk, phone, body, **fields)]
    )
    Message.objects.filter(pk=message_id).update(created_at=created, send_at=created)
    return Message.objects.get(pk=message_id)


def test_getallsms_exact_shape_in_the_accounts_time_zone(client, token, owner, device):
    owner.account.time_zone = "Europe/Paris"
    owner.account.save()
    first = _message_at(owner.account, device, datetime(2021, 7, 11, 10, 59, 26, tzinfo=UTC))
    second = _message_at(
        owner.account,
        device,
        datetime(2021, 7, 11, 12, 6, 50, tzinfo=UTC),
        urgent=True,
        customer_id=0,
        body="test message 1",
    )
    response = client.get(
        "/getdata/getallsms", {"token": token, "device_id": device.pk, "status": "1"}
    )
    paris = '"timezone_type":3,"timezone":"Europe/Paris"'
    expected = (
        '{"error":0,"smss":{'
        f'"{first.pk}":{{"id":{first.pk},"sendto":"+4915752982212","body":"Test message from API","customerid":null,"status":1,"statustitle":"new","deviceid":{device.pk},"urgent":null,'
        f'"created":{{"date":"2021-07-11 12:59:26.000000",{paris}}},"senttime":null,"timetosend":{{"date":"2021-07-11 12:59:26.000000",{paris}}},"sim":0,"paketid":null,"pakettitle":null,"paketbody":null}},'
        f'"{second.pk}":{{"id":{second.pk},"sendto":"+4915752982212","body":"test message 1","customerid":0,"status":1,"statustitle":"new","deviceid":{device.pk},"urgent":true,'
        f'"created":{{"date":"2021-07-11 14:06:50.000000",{paris}}},"senttime":null,"timetosend":{{"date":"2021-07-11 14:06:50.000000",{paris}}},"sim":0,"paketid":null,"pakettitle":null,"paketbody":null}}'
        '},"count":2,"message":"Ok"}'
    )
    assert raw(response).decode() == expected


def test_getallsms_timezone_parameter_overrides_the_account(client, token, owner, device):
    _message_at(owner.account, device, datetime(2021, 7, 11, 10, 0, tzinfo=UTC))
    answer = body(
        client.get("/getdata/getallsms", {"token": token, "timezone": "Australia/Sydney"})
    )
    (item,) = answer["smss"].values()
    assert item["created"] == {
        "date": "2021-07-11 20:00:00.000000",
        "timezone_type": 3,
        "timezone": "Australia/Sydney",
    }
    bad = body(client.get("/getdata/getallsms", {"token": token, "timezone": "Mars/Base"}))
    assert bad["error"] == 1 and "Unknown timezone" in bad["message"]


def test_getallsms_empty_result_is_an_empty_object(client, token):
    assert (
        raw(client.get("/getdata/getallsms", {"token": token}))
        == b'{"error":0,"smss":{},"count":0,"message":"Ok"}'
    )


def test_getallsms_filters(client, token, owner, device, make_device):
    account = owner.account
    other_device = make_device(account, slots=(0, 1))
    old = _message_at(account, device, datetime(2021, 1, 5, 8, tzinfo=UTC), customer_id=5)
    new = _message_at(
        account, device, datetime(2021, 3, 5, 8, tzinfo=UTC), phone="+436641234567", sim=1
    )
    elsewhere = _message_at(account, other_device, datetime(2021, 2, 5, 8, tzinfo=UTC))
    Message.objects.filter(pk=new.pk).update(status=Status.DELIVERED)

    def ids(**filters) -> list[int]:
        answer = body(client.get("/getdata/getallsms", {"token": token, **filters}))
        assert answer["error"] == 0, answer
        return [int(i) for i in answer["smss"]]

    # ordered by id (creation order), whatever the dates
    assert ids() == [old.pk, new.pk, elsewhere.pk]
    assert ids(orderbydesc="1") == [elsewhere.pk, new.pk, old.pk]
    assert ids(device_id=other_device.pk) == [elsewhere.pk]
    assert ids(status=7) == [new.pk]
    # a date window lists in creation order
    assert ids(begindate="2021-02-01", enddate="2021-03-05") == [elsewhere.pk, new.pk]
    assert ids(begindate="2021-01-01", orderbydesc=1) == [new.pk, elsewhere.pk, old.pk]
    assert ids(enddate="2021-02-05 07:59:59") == [old.pk]
    assert ids(sim=1) == [new.pk]
    assert ids(customerid=5) == [old.pk]
    assert ids(phone="+43 664 1234567") == [new.pk]
    assert ids(device_id=999999) == []
    onlycount = raw(
        client.get("/getdata/getallsms", {"token": token, "device_id": device.pk, "onlycount": "1"})
    )
    assert onlycount == b'{"error":0,"count":2,"message":"Ok"}'


def test_getallsms_pages_through_everything(client, token, owner, device):
    created = [
        _message_at(owner.account, device, datetime(2021, 1, 1, tzinfo=UTC)).pk for _ in range(5)
    ]
    seen: list[int] = []
    after = None
    for _ in range(5):
        params = {"token": token, "limit": 2, **({"after_id": after} if after else {})}
        answer = body(client.get("/getdata/getallsms", params))
        seen += [int(i) for i in answer["smss"]]
        if not answer.get("more"):
            break
        after = answer["next_after_id"]
    assert seen == created
    # the same through a date window (keyset on creation time, then id)
    seen, after = [], None
    for _ in range(5):
        params = {
            "token": token,
            "limit": 2,
            "begindate": "2020-12-31",
            "orderbydesc": 1,
            **({"after_id": after} if after else {}),
        }
        answer = body(client.get("/getdata/getallsms", params))
        seen += [int(i) for i in answer["smss"]]
        if not answer.get("more"):
            break
        after = answer["next_after_id"]
    assert seen == created[::-1]
    too_big = body(client.get("/getdata/getallsms", {"token": token, "limit": 5000}))
    assert too_big["error"] == 1 and "limit must be between 1 and 1000" in too_big["message"]


def test_getallsms_includes_incoming_and_newsletter_fields(client, token, owner, device):
    account = owner.account
    Message.objects.create(
        account=account, device=device, phone="+4915752982212", body="STOP", status=Status.INCOMING
    )
    newsletter = Newsletter.objects.create(
        account=account, title="Sale", device=device, body="50% off"
    )
    Message.objects.create(
        account=account,
        device=device,
        phone="+4915752982212",
        body="50% off",
        newsletter=newsletter,
    )
    answer = body(client.get("/getdata/getallsms", {"token": token}))
    incoming, from_newsletter = answer["smss"].values()
    assert (incoming["status"], incoming["statustitle"], incoming["body"]) == (5, "income", "STOP")
    assert (
        from_newsletter["paketid"],
        from_newsletter["pakettitle"],
        from_newsletter["paketbody"],
    ) == (newsletter.pk, "Sale", "50% off")
    only_incoming = body(client.get("/getdata/getallsms", {"token": token, "status": 5}))
    assert len(only_incoming["smss"]) == 1


# --- getsmsstatus ---------------------------------------------------------------------------


def test_getsmsstatus_exact_shape(client, token, owner, device):
    message = _message_at(owner.account, device, timezone.now())
    response = client.get("/getdata/getsmsstatus", {"sms_id": message.pk, "token": token})
    assert (
        raw(response)
        == f'{{"error":0,"sms_id":{message.pk},"status":1,"status_description":"New","message":"Ok"}}'.encode()
    )
    Message.objects.filter(pk=message.pk).update(status=Status.NULL_PDU)
    answer = body(client.post("/getdata/getsmsstatus", {"sms_id": str(message.pk), "token": token}))
    assert (answer["status"], answer["status_description"]) == (11, "Not Sent - Null PDU")


def test_getsmsstatus_of_a_missing_id(client, token):
    assert (
        raw(client.get("/getdata/getsmsstatus", {"sms_id": 424242, "token": token}))
        == b'{"error":1,"message":"Sms not found"}'
    )


# --- devices --------------------------------------------------------------------------------


def test_getdevicestatus_exact_shape(client, token, owner, device):
    seen = timezone.now().replace(microsecond=0) - timedelta(seconds=30)
    type(device).objects.filter(pk=device.pk).update(last_seen_at=seen)
    response = client.get("/getdata/getdevicestatus", {"device_id": device.pk, "token": token})
    text = raw(response).decode()
    answer = json.loads(text)
    assert list(answer) == [
        "online",
        "error",
        "message",
        "device_id",
        "lastseen",
        "diffseconds",
        "title",
    ]
    assert answer["online"] is True and answer["error"] == 0 and answer["message"] == "OK"
    assert answer["device_id"] == device.pk and answer["title"] == "SM-F NIK!"
    assert answer["lastseen"] == {
        "date": f"{seen:%Y-%m-%d %H:%M:%S}.000000",
        "timezone_type": 3,
        "timezone": "UTC",
    }
    assert 30 <= answer["diffseconds"] <= 32


def test_a_device_is_offline_after_two_missed_polls_and_the_long_poll_window(client, token, device):
    # delay_between_requests 10 s: offline after 2*10 + 25 + 30 = 75 s
    type(device).objects.filter(pk=device.pk).update(
        last_seen_at=timezone.now() - timedelta(seconds=76)
    )
    assert (
        body(client.get("/getdata/getdevicestatus", {"device_id": device.pk, "token": token}))[
            "online"
        ]
        is False
    )


def test_a_device_never_seen_reports_its_creation_time(client, token, device):
    answer = body(client.get("/getdata/getdevicestatus", {"device_id": device.pk, "token": token}))
    assert answer["online"] is False and answer["lastseen"]["date"].startswith(
        f"{device.created_at:%Y-%m-%d %H:%M}"
    )


def test_getdevicestatus_of_a_missing_device(client, token):
    assert (
        raw(client.get("/getdata/getdevicestatus", {"device_id": 424242, "token": token}))
        == b'{"error":1,"message":"Device not found"}'
    )


def test_getalldevices_exact_shape(client, token, owner, make_device):
    first = make_device(
        owner.account,
        slots=(),
        title="AOSP_on_IA_Emulator",
        imei="358240051111110",
        serial_number="EMULATOR30X0X5X0",
        app_version="12.1.21",
        delay_between_requests=1,
    )
    SimSlot.objects.create(
        device=first,
        slot=0,
        iccid="89014103211118510720",
        number=" 15555215554",
        country_iso="us",
        carrier_name="Android (T-Mobile)",
    )
    created = datetime(2020, 3, 28, 20, 10, 29, tzinfo=UTC)
    type(first).objects.filter(pk=first.pk).update(
        created_at=created, last_seen_at=datetime(2020, 4, 23, 17, 2, 21, tzinfo=UTC)
    )
    second = make_device(owner.account, title="Android_SDK_built_for_x86", delay_between_sms=5)
    answer = body(client.get("/getdata/getalldevices", {"token": token}))
    assert list(answer) == ["count", "device"]
    assert answer["count"] == 2 and list(answer["device"]) == [str(second.pk), str(first.pk)]
    assert answer["device"][str(first.pk)] == {
        "id": first.pk,
        "title": "AOSP_on_IA_Emulator",
        "number": None,
        "imei": "358240051111110",
        "created": {"date": "2020-03-28 20:10:29.000000", "timezone_type": 3, "timezone": "UTC"},
        "createdhumanformat": "28.03.2020 20:10:29",
        "lastseen": {"date": "2020-04-23 17:02:21.000000", "timezone_type": 3, "timezone": "UTC"},
        "lastseenhumanformat": "23.04.2020 17:02:21",
        "serialnumber": "EMULATOR30X0X5X0",
        "siminfo": [
            {
                "Slot": "0",
                "IccId": "89014103211118510720",
                "Number": " 15555215554",
                "Roaming": "0",
                "CountryIso": "us",
                "CarrierName": "Android (T-Mobile)",
            }
        ],
        "appversion": "12.1.21",
        "isappversionactual": True,
        "delaybetweeneachsms": None,
        "delaybetweenrequest": 1,
        "subscription": True,
    }
    assert answer["device"][str(second.pk)]["delaybetweeneachsms"] == 5


# --- tags, contacts, newsletters ------------------------------------------------------------


def test_savetag_and_the_phpex_savepaket_bug_posting_to_savetag(client, token, device):
    response = client.post("/getdata/savetag", {"token": token, "title": "Rich customers"})
    tag = Tag.objects.get()
    assert raw(response) == f'{{"error":0,"message":"Ok","tag_id":{tag.pk}}}'.encode()
    # PHPEX savepaket.php posts newsletter fields to savetag: a tag comes back.
    bug = body(
        client.post(
            "/getdata/savetag",
            {
                "token": token,
                "title": "Title",
                "device_id": device.pk,
                "sim": 0,
                "body": "Body",
                "tags": f"{tag.pk}",
            },
        )
    )
    assert bug["error"] == 0 and Tag.objects.get(pk=bug["tag_id"]).title == "Title"
    assert Newsletter.objects.count() == 0
    # the same title again is the same tag
    assert (
        body(client.post("/getdata/savetag", {"token": token, "title": "Rich customers"}))["tag_id"]
        == tag.pk
    )


@pytest.mark.parametrize(("tag_field", "name_field"), [("tag_id", "fullname"), ("ctag_id", "name")])
def test_savecontact_with_either_alias(client, token, owner, tag_field, name_field):
    tag = Tag.objects.create(account=owner.account, title="VIP")
    response = client.post(
        "/getdata/savecontact",
        {
            "token": token,
            "phone": "+49 157 52982212",
            tag_field: tag.pk,
            name_field: "Support Team",
        },
    )
    contact = Contact.objects.get()
    assert raw(response) == f'{{"error":0,"message":"Ok","contact_id":{contact.pk}}}'.encode()
    assert (contact.phone, contact.name, list(contact.tags.all())) == (
        "+4915752982212",
        "Support Team",
        [tag],
    )
    again = body(client.post("/getdata/savecontact", {"token": token, "phone": "+4915752982212"}))
    assert again["contact_id"] == contact.pk and Contact.objects.get().name == "Support Team"


def test_savecontact_errors(client, token, make_account):
    foreign_tag = Tag.objects.create(account=make_account(), title="theirs")
    assert body(
        client.post(
            "/getdata/savecontact", {"token": token, "phone": "1234", "tag_id": foreign_tag.pk}
        )
    ) == {"error": 1, "message": "Tag not found"}
    assert (
        body(client.post("/getdata/savecontact", {"token": token}))["message"]
        == "phone is required"
    )
    assert Contact.objects.count() == 0


def test_savepaket_as_phpsdk_sends_it(client, token, owner, device):
    tags = [Tag.objects.create(account=owner.account, title=t).pk for t in ("a", "b")]
    response = client.post(
        "/getdata/savepaket",
        f"title=Title&device_id={device.pk}&body=Body&tags={tags[0]}%2C{tags[1]}&token={token}",
        content_type="application/x-www-form-urlencoded",
    )
    newsletter = Newsletter.objects.get()
    assert (
        raw(response)
        == f'{{"error":0,"message":"Ok","paket_id":{newsletter.pk},"paket":{newsletter.pk}}}'.encode()
    )
    assert newsletter.sim == 0 and sorted(newsletter.tags.values_list("pk", flat=True)) == tags
    assert newsletter.state == Newsletter.State.SCHEDULED


def test_savepaket_time_to_send_in_the_documented_format(client, token, owner, device):
    tag = Tag.objects.create(account=owner.account, title="a")
    client.post(
        "/getdata/savepaket",
        {
            "token": token,
            "title": "T",
            "device_id": device.pk,
            "body": "B",
            "tags": str(tag.pk),
            "sim": "1",
            "time_to_send": "24.12.2031 18:30:00",
        },
    )
    newsletter = Newsletter.objects.get()
    assert newsletter.send_at == datetime(2031, 12, 24, 18, 30, tzinfo=UTC) and newsletter.sim == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tags": ""}, "tags is required"),
        ({"tags": "999999"}, "Tag not found"),
        ({"device_id": "999999"}, "Device not found"),
        ({"time_to_send": "soon"}, "time_to_send must be a date"),
        ({"title": ""}, "title is required"),
    ],
)
def test_savepaket_errors(client, token, owner, device, fields, message):
    tag = Tag.objects.create(account=owner.account, title="a")
    answer = body(
        client.post(
            "/getdata/savepaket",
            {
                "token": token,
                "title": "T",
                "device_id": device.pk,
                "body": "B",
                "tags": str(tag.pk),
                **fields,
            },
        )
    )
    assert answer["error"] == 1 and message in answer["message"]
    assert Newsletter.objects.count() == 0


# --- Hostile input: clear errors, never a stored row that breaks a listing ----------------


def _json_call(client, method: str, payload: dict | str):
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return body(client.post(f"/getdata/{method}", text, content_type="application/json"))


def test_a_send_time_that_is_year_10000_in_utc_is_refused_and_the_listings_keep_working(
    client, token, device
):
    # 9999-12-31 23:59:59 at UTC-12 is 10000-01-01 11:59:59 UTC: PostgreSQL stored it, and
    # then getallsms, the REST list and the device poll all failed reading it back.
    answer = body(
        client.post(
            "/getdata/addsms",
            {
                "token": token,
                "sendto": "+4915752982212",
                "body": "x",
                "device_id": device.pk,
                "timetosend": "9999-12-31 23:59:59",
                "timezone": "Etc/GMT+12",
            },
        )
    )
    assert answer == {
        "error": 1,
        "message": "timetosend is out of range: in UTC it must fall within the years 1 to 9999",
    }
    assert Message.objects.count() == 0
    assert body(client.get("/getdata/getallsms", {"token": token}))["error"] == 0


def test_savepaket_refuses_a_time_to_send_that_is_year_10000_in_utc(client, token, owner, device):
    tag = Tag.objects.create(account=owner.account, title="a")
    fields = {"token": token, "title": "T", "device_id": device.pk, "body": "B", "tags": tag.pk}
    answer = body(
        client.post(
            "/getdata/savepaket",
            {**fields, "time_to_send": "31.12.9999 23:59:59", "timezone": "Etc/GMT+12"},
        )
    )
    assert answer["error"] == 1 and answer["message"].startswith("time_to_send is out of range")
    assert Newsletter.objects.count() == 0


@pytest.mark.parametrize(
    ("timetosend", "message"),
    [
        ("9999-12-31 12:00:00", "timetosend is too far ahead: at most 10 years from now"),
        ("2030-01-01T10:00:00+16:00", "timetosend has a UTC offset beyond ±15:59"),
        ("0001-01-01 00:00:00", "timetosend is out of range"),
    ],
)
def test_a_send_time_beyond_the_bounds_is_a_clear_error(client, token, device, timetosend, message):
    answer = body(
        client.post(
            "/getdata/addsms",
            {
                "token": token,
                "sendto": "1234",
                "body": "x",
                "device_id": device.pk,
                "timetosend": timetosend,
            },
        )
    )
    assert answer["error"] == 1 and answer["message"].startswith(message), answer
    assert Message.objects.count() == 0


def test_a_send_time_ten_years_ahead_is_stored_and_read_back_in_any_zone(client, token, device):
    ahead = timezone.now() + timedelta(days=3650)
    answer = body(
        client.post(
            "/getdata/addsms",
            {
                "token": token,
                "sendto": "1234",
                "body": "x",
                "device_id": device.pk,
                "timetosend": f"{ahead:%Y-%m-%d %H:%M:%S}",
            },
        )
    )
    assert answer["error"] == 0
    listed = body(
        client.get("/getdata/getallsms", {"token": token, "timezone": "Pacific/Kiritimati"})
    )
    (item,) = listed["smss"].values()
    assert item["timetosend"]["timezone"] == "Pacific/Kiritimati"


def test_bulk_items_with_a_send_time_out_of_range_are_named(client, token, device):
    item = {"sendto": "1234", "body": "x", "device_id": device.pk}
    answer = _json_call(
        client,
        "addalotofsms",
        {
            "token": token,
            "smsdata": [item, {**item, "timetosend": "9999-12-31 23:59:59"}],
        },
    )
    (error,) = answer["errors"]
    assert error["index"] == 1
    assert error["message"].startswith("timetosend is too far ahead: at most 10 years from now")
    assert Message.objects.count() == 0


@pytest.mark.parametrize("name", ["begindate", "enddate"])
def test_getallsms_date_filters_out_of_range_in_utc_are_a_clear_error(client, token, name):
    value, zone = (
        ("9999-12-31", "Etc/GMT+12") if name == "enddate" else ("0001-01-01", "Asia/Tokyo")
    )
    answer = body(client.get("/getdata/getallsms", {"token": token, name: value, "timezone": zone}))
    assert answer == {
        "error": 1,
        "message": f"{name} is out of range: in UTC it must fall within the years 1 to 9999",
    }


def test_getallsms_accepts_the_widest_filter_bounds_that_exist_in_utc(client, token):
    answer = body(
        client.get(
            "/getdata/getallsms",
            {"token": token, "begindate": "0001-01-01", "enddate": "9999-12-31"},
        )
    )
    assert answer["error"] == 0


@pytest.mark.parametrize(
    "zone", ["../../etc/passwd", "Europe/Berlin\x00", "Europe Berlin", "+02:00"]
)
def test_a_timezone_that_is_not_a_zone_name_is_refused(client, token, zone):
    answer = body(client.get("/getdata/getallsms", {"token": token, "timezone": zone}))
    assert answer["error"] == 1 and answer["message"].startswith("Unknown timezone"), answer


@pytest.mark.parametrize("field", ["body", "sendto", "token"])
def test_a_nul_character_in_a_text_field_is_refused_naming_the_field(client, token, device, field):
    fields = {"token": token, "sendto": "+4915752982212", "body": "hi", "device_id": device.pk}
    fields[field] = fields[field] + "\x00"
    answer = body(client.post("/getdata/addsms", fields))
    assert answer == {"error": 1, "message": f"{field} must not contain NUL characters (U+0000)"}
    assert Message.objects.count() == 0


def test_a_nul_character_in_a_contact_name_or_tag_title_is_refused(client, token):
    contact = body(
        client.post("/getdata/savecontact", {"token": token, "phone": "1234", "name": "A\x00"})
    )
    tag = body(client.post("/getdata/savetag", {"token": token, "title": "T\x00"}))
    assert contact["message"] == "fullname must not contain NUL characters (U+0000)"
    assert tag["message"] == "title must not contain NUL characters (U+0000)"
    assert Contact.objects.count() == 0 and Tag.objects.count() == 0


def test_a_lone_surrogate_in_a_json_field_is_refused_naming_the_field(client, token, device):
    single = _json_call(
        client,
        "addsms",
        f'{{"token": "{token}", "sendto": "1234", "body": "a\\ud800", "device_id": {device.pk}}}',
    )
    assert single == {
        "error": 1,
        "message": "body contains an unpaired UTF-16 surrogate (U+D800); send valid Unicode text",
    }
    datajson = (
        '{"token": "%s", "smsdata": [{"sendto": "1234", "body": "\\udfff", "device_id": %d}]}'
    )
    bulk = body(client.post("/getdata/addalotofsms", {"datajson": datajson % (token, device.pk)}))
    assert bulk["message"].startswith("smsdata[0].body contains an unpaired UTF-16 surrogate")
    assert Message.objects.count() == 0


@pytest.mark.parametrize("method", ["addsms", "getallsms", "gettoken"])
def test_json_nested_a_thousand_deep_is_a_clear_error(client, token, method):
    too_deep = {"error": 1, "message": "Request body is nested deeper than 32 levels"}
    for depth in (1000, 100_000):
        nested = "[" * depth + "]" * depth
        assert _json_call(client, method, f'{{"token": "{token}", "x": {nested}}}') == too_deep
    # Deep, but not so deep that Python's parser gives up: the field is named.
    nested = "[" * 100 + "]" * 100
    answer = _json_call(client, method, f'{{"token": "{token}", "x": {nested}}}')
    assert answer == {"error": 1, "message": "x is nested deeper than 32 levels"}


def test_datajson_nested_a_thousand_deep_is_a_clear_error(client, token):
    for depth, named in ((1000, "datajson"), (100, "smsdata")):
        nested = f'{{"token": "{token}", "smsdata": {"[" * depth + "]" * depth}}}'
        answer = body(client.post("/getdata/addalotofsms", {"datajson": nested}))
        assert answer == {"error": 1, "message": f"{named} is nested deeper than 32 levels"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2**70, "customerid must be an integer between -9223372036854775808 and "),
        ("9" * 25, "customerid must be an integer between -9223372036854775808 and "),
        (1e300, "customerid must be an integer between"),
        ("--5", "customerid must be an integer"),
        ("²", "customerid must be an integer"),
    ],
)
def test_integers_beyond_64_bits_are_refused_naming_the_field(
    client, token, device, value, message
):
    fields = {"token": token, "sendto": "1234", "body": "x", "device_id": device.pk}
    answer = _json_call(client, "addsms", {**fields, "customerid": value})
    assert answer["error"] == 1 and answer["message"].startswith(message), answer
    assert Message.objects.count() == 0


def test_the_largest_customer_id_is_stored_and_listed(client, token, device):
    fields = {"token": token, "sendto": "1234", "body": "x", "device_id": device.pk}
    assert _json_call(client, "addsms", {**fields, "customerid": 2**63 - 1})["error"] == 0
    listed = body(client.get("/getdata/getallsms", {"token": token, "customerid": 2**63 - 1}))
    assert [i["customerid"] for i in listed["smss"].values()] == [2**63 - 1]


@pytest.mark.parametrize("field", ["device_id", "sim", "customerid"])
def test_true_is_not_an_integer(client, token, device, field):
    # JSON's true used to be read as 1: "device_id": true sent to device 1.
    fields = {"token": token, "sendto": "1234", "body": "x", "device_id": device.pk}
    answer = _json_call(client, "addsms", {**fields, field: True})
    assert answer == {"error": 1, "message": f"{field} must be an integer"}
    assert Message.objects.count() == 0


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/St_Johns", "Asia/Kathmandu", "UTC"])
def test_listed_local_times_agree_with_python_on_every_backend(owner, device, zone, monkeypatch):
    """getallsms's times come formatted by PostgreSQL (by Python on SQLite, or for a zone
    PostgreSQL does not know): across daylight-saving changes and odd offsets, the same."""
    from zoneinfo import ZoneInfo

    from messaging import services

    instants = [
        datetime(2021, 3, 28, 0, 59, 59, 999999, tzinfo=UTC),  # Berlin: the last second of CET
        datetime(2021, 3, 28, 1, 0, 0, tzinfo=UTC),  # the first of CEST
        datetime(2021, 10, 31, 0, 30, 0, 500000, tzinfo=UTC),  # the repeated hour, twice
        datetime(2021, 10, 31, 1, 30, 0, tzinfo=UTC),
        datetime(2021, 11, 7, 3, 45, 12, tzinfo=UTC),  # St. John's: -02:30 -> -03:30
        datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
    ]
    for instant in instants:
        _message_at(owner.account, device, instant)
    local = ZoneInfo(zone)
    expected = [f"{i.astimezone(local):%Y-%m-%d %H:%M:%S}" for i in instants]
    rows, _ = services.list_messages(owner.account, services.MessageFilter(), local_times=local)
    created, sent, send_at = (services.LISTED_FIELDS.index(t) for t in services.LISTED_TIMES)
    assert [r[created] for r in rows] == [r[send_at] for r in rows] == expected
    assert {r[sent] for r in rows} == {None}
    # On PostgreSQL, that was PostgreSQL's formatting; now Python's, as for a zone it lacks.
    assert services._POSTGRESQL_ZONES.get(zone, False) is (connection.vendor == "postgresql")
    monkeypatch.setitem(services._POSTGRESQL_ZONES, zone, False)
    rows, _ = services.list_messages(owner.account, services.MessageFilter(), local_times=local)
    assert [r[created] for r in rows] == expected
