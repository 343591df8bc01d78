"""Long poll: a waiting phone gets an urgent SMS within a second of its creation."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request

import pytest

from gateway.services import compat_token

pytestmark = pytest.mark.django_db(transaction=True)


def _post(
    url: str, payload: dict, token: str | None = None, timeout: float = 40
) -> tuple[dict, float]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read()), time.monotonic()


@pytest.mark.redis
def test_an_urgent_sms_reaches_a_long_polling_phone_within_a_second(live_server, paired):
    device, device_token = paired()
    token = compat_token(device.account)
    result: dict = {}

    def long_poll():
        result["answer"], result["at"] = _post(
            f"{live_server.url}/api/device/v1/poll", {"wait": 10}, device_token
        )

    waiter = threading.Thread(target=long_poll)
    started = time.monotonic()
    waiter.start()
    time.sleep(1.0)  # the phone is waiting now
    form = urllib.parse.urlencode(
        {
            "token": token,
            "sendto": "+4915752982212",
            "body": "OTP 4711",
            "device_id": device.pk,
            "urgent": 1,
        }
    )
    with urllib.request.urlopen(
        f"{live_server.url}/getdata/addsms", data=form.encode(), timeout=10
    ) as response:
        sms_id = json.loads(response.read())["sms_id"]
    created = time.monotonic()
    waiter.join(timeout=15)
    assert [m["id"] for m in result["answer"]["messages"]] == [sms_id]
    assert result["at"] - created < 1.0
    assert created - started >= 1.0  # it really waited for the SMS


@pytest.mark.redis
def test_a_long_poll_with_nothing_to_do_returns_after_its_wait(live_server, paired):
    _device, device_token = paired()
    started = time.monotonic()
    answer, finished = _post(f"{live_server.url}/api/device/v1/poll", {"wait": 2}, device_token)
    assert answer["messages"] == [] and 1.9 <= finished - started < 5


def test_without_redis_a_long_poll_degrades_to_a_plain_poll(live_server, paired, settings):
    settings.REDIS_URL = ""
    device, device_token = paired()
    started = time.monotonic()
    answer, finished = _post(f"{live_server.url}/api/device/v1/poll", {"wait": 20}, device_token)
    assert answer["messages"] == [] and finished - started < 2
    assert answer["poll_interval"] == device.delay_between_requests


@pytest.mark.redis
def test_a_scheduled_sms_reaches_a_waiting_phone_when_it_falls_due(live_server, paired):
    from datetime import timedelta

    from django.utils import timezone

    from messaging import services as messaging

    device, device_token = paired()
    due = timezone.now() + timedelta(seconds=1.5)
    (sms_id,) = messaging.submit(
        device.account, [messaging.OutgoingSms(device.pk, "1234", "later", send_at=due)]
    )
    answer, _finished = _post(f"{live_server.url}/api/device/v1/poll", {"wait": 10}, device_token)
    assert [m["id"] for m in answer["messages"]] == [sms_id]
    assert timezone.now() - due < timedelta(seconds=1)
