"""Every /getdata endpoint called with one account's token and another account's ids.

A foreign id must answer exactly like an id that does not exist, and nothing of the other
account may be read or changed.
"""

import json

import pytest
from django.core.cache import cache
from django.test import Client

from contacts.models import Contact, Newsletter, Tag
from devices.models import Device
from gateway import services as accounts
from messaging.models import Message, MessageStatusChange

MISSING = 987_654_321


@pytest.fixture
def victim(make_user, make_device, make_message):
    user = make_user("victim@example.com", "victim-password")
    account = user.account
    device = make_device(account, slots=(0, 1), title="victim phone")
    message = make_message(account, device=device, body="victim secret")
    tag = Tag.objects.create(account=account, title="victim tag")
    contact = Contact.objects.create(account=account, phone="+4915700000001", name="V")
    contact.tags.add(tag)
    newsletter = Newsletter.objects.create(
        account=account, title="victim news", device=device, body="b"
    )
    newsletter.tags.add(tag)
    return {"device": device.pk, "sms": message.pk, "tag": tag.pk}


@pytest.fixture
def attacker(make_user, make_device):
    cache.clear()
    user = make_user("attacker@example.com", "attacker-password")
    make_device(user.account, slots=(0,), title="attacker phone")
    return accounts.compat_token(user.account)


def snapshot() -> str:
    """Everything the victim owns, as text, to compare before and after."""
    mine = {"account__name": "victim@example.com"}
    return json.dumps(
        [
            list(Message.objects.filter(**mine).order_by("id").values()),
            list(
                MessageStatusChange.objects.filter(
                    message__account__name=mine["account__name"]
                ).values()
            ),
            list(Device.objects.filter(**mine).values()),
            list(Tag.objects.filter(**mine).values()),
            list(Contact.objects.filter(**mine).values("id", "phone", "name", "tags")),
            list(Newsletter.objects.filter(**mine).values()),
        ],
        default=str,
    )


def calls(ids: dict[str, int], token: str) -> list[tuple[str, dict]]:
    return [
        ("addsms", {"token": token, "sendto": "1234", "body": "x", "device_id": ids["device"]}),
        (
            "addalotofsms",
            {
                "token": token,
                "smsdata": [{"sendto": "1234", "body": "x", "device_id": ids["device"]}],
            },
        ),
        (
            "smstosend",
            {
                "email": "attacker@example.com",
                "pass": "attacker-password",
                "sendto": "1234",
                "body": "x",
                "device_id": ids["device"],
            },
        ),
        ("getsmsstatus", {"token": token, "sms_id": ids["sms"]}),
        ("getdevicestatus", {"token": token, "device_id": ids["device"]}),
        ("getallsms", {"token": token, "device_id": ids["device"]}),
        (
            "savecontact",
            {"token": token, "phone": "+4915700000001", "tag_id": ids["tag"], "fullname": "X"},
        ),
        (
            "savepaket",
            {
                "token": token,
                "title": "t",
                "device_id": ids["device"],
                "body": "b",
                "tags": str(ids["tag"]),
            },
        ),
    ]


def test_foreign_ids_answer_like_missing_ids_and_change_nothing(victim, attacker):
    client = Client(enforce_csrf_checks=True)
    missing = {key: MISSING for key in victim}
    before = snapshot()
    for (method, foreign), (_, absent) in zip(
        calls(victim, attacker), calls(missing, attacker), strict=True
    ):
        foreign_answer = client.post(
            f"/getdata/{method}", foreign, content_type="application/json"
        ).json()
        absent_answer = client.post(
            f"/getdata/{method}", absent, content_type="application/json"
        ).json()
        assert foreign_answer == absent_answer, method
        assert "victim" not in json.dumps(foreign_answer), method
    assert snapshot() == before


def test_listing_calls_show_only_the_callers_own_objects(victim, attacker):
    client = Client()
    everything = client.get("/getdata/getallsms", {"token": attacker}).json()
    assert everything["smss"] == {} and everything["count"] == 0
    assert (
        client.get("/getdata/getallsms", {"token": attacker, "onlycount": 1}).json()["count"] == 0
    )
    devices = client.get("/getdata/getalldevices", {"token": attacker}).json()
    assert [d["title"] for d in devices["device"].values()] == ["attacker phone"]
    before = snapshot()
    tag = client.post("/getdata/savetag", {"token": attacker, "title": "victim tag"}).json()
    assert tag["tag_id"] != victim["tag"]
    contact = client.post(
        "/getdata/savecontact", {"token": attacker, "phone": "+4915700000001"}
    ).json()
    assert contact["error"] == 0
    assert snapshot() == before


def test_paging_after_another_accounts_message_answers_like_a_missing_id(
    victim, attacker, make_device
):
    # The attacker's own messages in a date window, paged after the victim's message id.
    account = accounts.authenticate_token(attacker).account
    device = Device.objects.get(account=account)
    client = Client()
    for _ in range(2):
        sent = client.post(
            "/getdata/addsms",
            {"token": attacker, "sendto": "1234", "body": "x", "device_id": device.pk},
        ).json()
        assert sent["error"] == 0
    window = {"token": attacker, "begindate": "2000-01-01", "enddate": "2999-12-31"}
    foreign = client.get("/getdata/getallsms", {**window, "after_id": victim["sms"]}).json()
    absent = client.get("/getdata/getallsms", {**window, "after_id": MISSING}).json()
    assert foreign == absent
