"""Exactly-once with the SMSGate app under faults (bounded, seeded loops): a simulated app
that behaves as v1.68.0 does (its local database keyed by message id, never sending an id
it knows twice; state reports retried, lost, repeated, reordered) against our server, with
answers lost, the app dying between fetch and report, operators cancelling, and (second
test) the server process killed and restarted. Then: no SMS sent twice, none lost."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from devices.models import Device
from gateway.services import enrollment_token
from messaging import services as messaging
from messaging.models import Message, Status, served_pk

BASE = "/api/mobile/v1"


class Lost(Exception):
    """The request or its answer never arrived."""


Transport = Callable[[str, str, Any, str], tuple[int, Any]]


class SimulatedApp:
    def __init__(self, transport: Transport, rng: random.Random, faults: float) -> None:
        self.transport = transport
        self.rng = rng
        self.faults = faults
        self.token = ""
        self.local: dict[str, str] = {}  # the app's database: id -> its state
        self.radio: Counter[int] = Counter()  # SMS handed to the radio, per message

    def call(self, method: str, path: str, body: Any = None, auth: str = "") -> tuple[int, Any]:
        return self.transport(method, BASE + path, body, auth or f"Bearer {self.token}")

    def lossy(self, method: str, path: str, body: Any = None) -> Any:
        """A call whose request (or answer) may be lost, and that may be sent twice."""
        if self.rng.random() < self.faults:
            if self.rng.random() < 0.5:
                raise Lost()
            self.call(method, path, body)  # processed, answer lost
            raise Lost()
        status, answer = self.call(method, path, body)
        if self.rng.random() < self.faults:
            self.call(method, path, body)  # a retry of a report that had arrived
        return status, answer

    def register(self, token: str) -> None:
        status, body = self.call(
            "POST", "/device", {"name": "sim/app", "simCards": []}, f"Bearer {token}"
        )
        assert status == 201, body
        self.token = body["token"]

    def report(self, message_id: str) -> None:
        state = self.local[message_id]
        item = {"id": message_id, "state": state,
                "recipients": [{"phoneNumber": "+4915752982212", "state": state}]}  # fmt: skip
        # The app's retries may give up: the next fetch or change heals it.
        with contextlib.suppress(Lost):
            self.lossy("PATCH", "/message", [item])

    def fetch(self) -> None:
        try:
            _status, items = self.lossy("GET", "/message?order=fifo")
        except Lost:
            return
        for item in items:
            known = item["id"] in self.local
            if item.get("state") == "Cancelling":
                if not known or self.local[item["id"]] == "Pending":
                    self.local[item["id"]] = "Cancelled"
                    self.report(item["id"])
            elif known:
                self.report(item["id"])  # never sent again: its current state instead
            else:
                self.local[item["id"]] = "Pending"

    def send_some(self, everything: bool = False) -> None:
        for message_id, state in list(self.local.items()):
            if state != "Pending" or (not everything and self.rng.random() < 0.3):
                continue
            self.local[message_id] = "Processed"
            self.report(message_id)
            pk = served_pk(message_id)
            assert pk is not None
            self.radio[pk] += 1
            self.local[message_id] = "Sent"
            self.report(message_id)
            if self.rng.random() < 0.7:
                self.local[message_id] = "Delivered"
                self.report(message_id)

    def heal(self) -> None:
        """Fault-free end: every state the app holds is reported once more (its workers'
        retries succeeding), and what is still pending goes out."""
        self.faults = 0.0
        for _ in range(3):
            self.fetch()
            self.send_some(everything=True)
            for message_id in list(self.local):
                self.report(message_id)


def _run(app: SimulatedApp, device: Device, rng: random.Random, rounds: int,
         between: Callable[[], None] = lambda: None) -> list[int]:  # fmt: skip
    # Pacing (the platform limit) is not what is tested here: let it all through.
    Device.objects.filter(pk=device.pk).update(segments_per_minute=1000, batch_size=100)
    created: list[int] = []
    for _ in range(rounds):
        requests = [messaging.OutgoingSms(device.pk, "+4915752982212", "Hi")
                    for _ in range(rng.randint(0, 3))]  # fmt: skip
        if requests:
            created += messaging.submit(device.account, requests)
        if created and rng.random() < 0.15:
            messaging.cancel(device.account, [rng.choice(created)])
        app.fetch()
        if rng.random() < 0.1:
            # The app dies between fetch and send (its database survives): a restart
            # only fetches again.
            continue
        app.send_some()
        between()
    app.heal()
    return created


def _check(app: SimulatedApp, created: list[int]) -> None:
    twice = [pk for pk, n in app.radio.items() if n > 1]
    assert twice == [], f"sent twice: {twice}"
    for message in Message.objects.filter(pk__in=created):
        if app.radio[message.pk]:
            assert message.status in (Status.SENT, Status.DELIVERED), message.status
        else:
            # Never sent: only because it was cancelled before the phone sent it.
            assert message.status == Status.CANCELLED, (message.pk, message.status)


def _django_transport(client: Client) -> Transport:
    def call(method: str, path: str, body: Any, auth: str) -> tuple[int, Any]:
        data = json.dumps(body) if body is not None else ""
        answer = client.generic(method, path, data, content_type="application/json",
                                headers={"Authorization": auth})  # fmt: skip
        return answer.status_code, (answer.json() if answer.content else None)

    return call


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_sms_is_sent_twice_or_lost_under_lost_and_repeated_calls(seed, client, make_account):
    account = make_account()
    rng = random.Random(seed)
    app = SimulatedApp(_django_transport(client), rng, faults=0.25)
    app.register(enrollment_token(account))
    device = Device.objects.get(account=account)
    created = _run(app, device, rng, rounds=40)
    assert len(created) > 20
    _check(app, created)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_no_sms_is_sent_twice_or_lost_when_the_server_process_is_killed(
    tmp_path: Path, make_account
):
    from tests.devices.test_smsgate_events import Server

    server = [Server(tmp_path / "uvicorn.log")]

    def transport(method: str, path: str, body: Any, auth: str) -> tuple[int, Any]:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server[0].port, timeout=10)
            conn.request(method, path, json.dumps(body) if body is not None else None,
                         {"Authorization": auth, "Content-Type": "application/json"})  # fmt: skip
            answer = conn.getresponse()
            data = answer.read()
            conn.close()
        except OSError:
            raise Lost() from None
        return answer.status, (json.loads(data) if data else None)

    rng = random.Random(7)
    account = make_account()
    app = SimulatedApp(transport, rng, faults=0.1)
    app.register(enrollment_token(account))
    device = Device.objects.get(account=account)

    def maybe_kill() -> None:
        if rng.random() < 0.2:
            os.killpg(server[0].process.pid, signal.SIGKILL)
            server[0].process.wait()
            server[0] = Server(tmp_path / "uvicorn.log")

    try:
        created = _run(app, device, rng, rounds=20, between=maybe_kill)
    finally:
        server[0].stop()
    assert created
    _check(app, created)
