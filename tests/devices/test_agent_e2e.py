"""The reference agent against a running server, over real HTTP.

End to end: addsms -> agent (simulated sender) -> sent -> delivered, seen through the
compatibility API. Then crash injection: agents killed between poll and confirm and while
sending, poll answers dropped, reports duplicated and reordered; afterwards no message was
sent twice, none was lost, and each ended in exactly one final status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from django.utils import timezone

from devices import handoff, services
from devices.agent import sms_agent
from devices.models import Device
from gateway.services import compat_token
from messaging import lifecycle
from messaging.models import FINAL, Message, MessageStatusChange, Status

AGENT = Path(sms_agent.__file__)
pytestmark = pytest.mark.django_db(transaction=True)


def getdata(server: str, method: str, **params) -> dict:
    body = urllib.parse.urlencode(params).encode()
    with urllib.request.urlopen(f"{server}/getdata/{method}", data=body, timeout=10) as response:
        return json.loads(response.read())


def test_addsms_reaches_delivered_through_the_agent(live_server, tmp_path, make_user):
    user = make_user("ops@example.com", "ops-password")
    _, code = services.create_pairing_code(user.account)
    state = str(tmp_path / "agent")
    sms_agent.main(
        [
            "--state",
            state,
            "pair",
            "--server",
            live_server.url,
            "--code",
            code,
            "--sim-slots",
            "0,1",
        ]
    )
    device_id = json.loads((tmp_path / "agent" / "device.json").read_text())["device_id"]
    token = compat_token(user.account)

    answer = getdata(
        live_server.url,
        "addsms",
        token=token,
        sendto="+4915752982212",
        body="Hello from the API",
        device_id=device_id,
        sim=1,
    )
    assert answer["error"] == 0
    sms_id = answer["sms_id"]
    assert getdata(live_server.url, "getsmsstatus", token=token, sms_id=sms_id)["status"] == 1

    sent_log = tmp_path / "sent.jsonl"
    sms_agent.main(
        [
            "--state",
            state,
            "run",
            "--sender",
            "simulated",
            "--wait",
            "0",
            "--loops",
            "1",
            "--sent-log",
            str(sent_log),
        ]
    )

    status = getdata(live_server.url, "getsmsstatus", token=token, sms_id=sms_id)
    assert (status["status"], status["status_description"]) == (7, "Delivered")
    (sent,) = [json.loads(line) for line in sent_log.read_text().splitlines()]
    assert (sent["to"], sent["body"], sent["sim"]) == ("+4915752982212", "Hello from the API", 1)
    listed = getdata(live_server.url, "getallsms", token=token)["smss"][str(sms_id)]
    assert listed["status"] == 7 and listed["senttime"] is not None
    assert [
        h
        for h in MessageStatusChange.objects.filter(message_id=sms_id).values_list(
            "to_status", flat=True
        )
    ] == [2, 6, 7]


def test_a_restarted_agent_sends_what_it_confirmed_and_never_twice(
    live_server, tmp_path, make_user
):
    user = make_user("ops@example.com", "ops-password")
    state = tmp_path / "agent"
    sms_agent.main(
        [
            "--state",
            str(state),
            "pair",
            "--server",
            live_server.url,
            "--email",
            "ops@example.com",
            "--password",
            "ops-password",
        ]
    )
    device = Device.objects.get()
    token = compat_token(user.account)
    ids = [
        getdata(
            live_server.url, "addsms", token=token, sendto="1234", body=f"m{i}", device_id=device.pk
        )["sms_id"]
        for i in range(3)
    ]
    sent_log = tmp_path / "sent.jsonl"
    run = [
        sys.executable,
        str(AGENT),
        "--state",
        str(state),
        "run",
        "--sender",
        "simulated",
        "--wait",
        "0",
        "--loops",
        "1",
        "--sent-log",
        str(sent_log),
    ]
    crashed = subprocess.run(
        [*run, "--chaos-crash-after-confirm", "1"], capture_output=True, timeout=60
    )
    assert crashed.returncode == 18  # died right after the server confirmed, before sending
    assert not sent_log.exists()
    subprocess.run(run, check=True, capture_output=True, timeout=60)
    subprocess.run(run, check=True, capture_output=True, timeout=60)
    bodies = Counter(json.loads(line)["body"] for line in sent_log.read_text().splitlines())
    assert bodies == Counter({"m0": 1, "m1": 1, "m2": 1})
    assert set(Message.objects.filter(id__in=ids).values_list("status", flat=True)) == {
        Status.DELIVERED
    }


def test_crash_injection_loses_nothing_and_sends_nothing_twice(
    live_server, tmp_path, make_user, settings
):
    settings.DEVICE_LEASE_SECONDS = 2
    settings.DEVICE_OUTCOME_SECONDS = 3
    user = make_user("ops@example.com", "ops-password")
    token = compat_token(user.account)
    states = []
    for index in range(3):
        state = tmp_path / f"agent{index}"
        sms_agent.main(
            [
                "--state",
                str(state),
                "pair",
                "--server",
                live_server.url,
                "--email",
                "ops@example.com",
                "--password",
                "ops-password",
                "--imei",
                f"CHAOS{index}",
            ]
        )
        states.append(state)
    devices = list(Device.objects.order_by("id"))
    Device.objects.update(delay_between_requests=1, batch_size=4)
    bodies = []
    for i in range(45):
        device = devices[i % 3]
        body = f"chaos {i}"
        urgent = 1 if i % 5 == 0 else 0
        assert (
            getdata(
                live_server.url,
                "addsms",
                token=token,
                sendto=f"+49157{i:07d}",
                body=body,
                device_id=device.pk,
                urgent=urgent,
            )["error"]
            == 0
        )
        bodies.append(body)

    sent_log = tmp_path / "sent.jsonl"
    chaos = [
        "--chaos-drop-poll",
        "0.2",
        "--chaos-crash-before-confirm",
        "0.1",
        "--chaos-crash-after-confirm",
        "0.1",
        "--chaos-crash-while-sending",
        "0.05",
        "--chaos-duplicate-reports",
        "0.5",
    ]

    def agent(state: Path, extra: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                str(AGENT),
                "--state",
                str(state),
                "run",
                "--sender",
                "simulated",
                "--wait",
                "0",
                "--duration",
                "6",
                "--sent-log",
                str(sent_log),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )

    def open_work() -> int:
        return Message.objects.exclude(status__in=FINAL | {Status.UNKNOWN}).count()

    deadline = time.monotonic() + 60
    crashes = 0
    processes = {state: agent(state, chaos) for state in states}
    while time.monotonic() < deadline and open_work():
        time.sleep(0.2)
        handoff.return_expired_leases()
        lifecycle.settle_overdue()
        for state, process in list(processes.items()):
            if process.poll() is not None:
                crashes += process.returncode in (17, 18, 19)
                processes[state] = agent(state, chaos)  # restart, like a supervisor would
    for process in processes.values():
        process.kill()
        process.wait()
    # A last calm round drains whatever the chaos left pending.
    for state in states:
        agent(state, ["--loops", "3"]).wait(timeout=60)
    time.sleep(3.5)
    handoff.return_expired_leases()
    lifecycle.settle_overdue()

    assert crashes > 0, "the chaos settings injected no crash; the test proved nothing"
    sends = Counter(json.loads(line)["body"] for line in sent_log.read_text().splitlines())
    assert max(sends.values()) == 1, f"sent twice: {[b for b, n in sends.items() if n > 1]}"
    final = dict(Message.objects.values_list("body", "status"))
    assert set(final) == set(bodies)
    not_final = {b: s for b, s in final.items() if s not in FINAL | {Status.UNKNOWN}}
    assert not_final == {}, f"lost (still pending): {not_final}"
    for body, status in final.items():
        if body in sends:
            assert status in (Status.DELIVERED, Status.UNKNOWN), (body, status)
        else:
            # never sent: only "unknown" (the agent died as it started sending) is possible
            assert status == Status.UNKNOWN, (body, status)
    # no message was ever leased to a device other than its own
    for message_id, device_id, source in MessageStatusChange.objects.filter(
        to_status=Status.TAKEN
    ).values_list("message_id", "message__device_id", "source"):
        assert source == f"poll by device {device_id}", (message_id, source)
    # every message moved into a final status once, and never out of one
    for message_id in Message.objects.values_list("id", flat=True):
        moves = list(
            MessageStatusChange.objects.filter(message_id=message_id)
            .order_by("id")
            .values_list("from_status", "to_status")
        )
        into_final = [m for m in moves if m[1] in FINAL]
        assert len(into_final) <= 1 and not any(m[0] in FINAL for m in moves), moves


def test_the_agent_needs_a_sender_and_a_simulated_one_says_so(live_server, tmp_path, make_user):
    user = make_user("sim@example.com", "sim-password")
    _, code = services.create_pairing_code(user.account)
    state = str(tmp_path / "agent")
    sms_agent.main(["--state", state, "pair", "--server", live_server.url, "--code", code])
    # Forgetting --sender on a real phone must not "send" everything into a simulator.
    with pytest.raises(SystemExit) as refused:
        sms_agent.main(["--state", state, "run", "--wait", "0", "--loops", "1"])
    assert refused.value.code == 2
    sms_agent.main(
        ["--state", state, "run", "--sender", "simulated", "--wait", "0", "--loops", "1"]
    )
    device = Device.objects.get(account=user.account)
    assert device.app_version == f"{sms_agent.AGENT_VERSION}+simulated"


def test_two_agents_with_one_device_token_never_send_a_message_twice(
    live_server, tmp_path, make_user
):
    # A phone restored from a backup next to the original: two installations, one token.
    user = make_user("twins@example.com", "twins-password")
    _, code = services.create_pairing_code(user.account)
    first, second = tmp_path / "first", tmp_path / "second"
    sms_agent.main(["--state", str(first), "pair", "--server", live_server.url, "--code", code])
    second.mkdir()
    (second / "device.json").write_text((first / "device.json").read_text())
    device = Device.objects.get(account=user.account)
    Device.objects.filter(pk=device.pk).update(batch_size=10, delay_between_requests=1)
    token = compat_token(user.account)
    bodies = [f"twin {i}" for i in range(25)]  # within the 30 segments a minute of one SIM
    for body in bodies:
        answer = getdata(
            live_server.url, "addsms", token=token, sendto="1234", body=body, device_id=device.pk
        )
        assert answer["error"] == 0
    sent_log = tmp_path / "sent.jsonl"
    command = [sys.executable, str(AGENT), "--state"]
    options = ["run", "--sender", "simulated", "--wait", "0", "--sent-log", str(sent_log)]
    agents = [
        subprocess.Popen(
            [*command, str(state), *options, "--duration", "8"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for state in (first, second)
    ]
    for agent in agents:
        agent.wait(timeout=60)
    # Whatever one left leased (taken over by the other) returns and is sent by one of them.
    Message.objects.filter(status=Status.TAKEN, confirmed_at=None).update(
        lease_expires_at=timezone.now()
    )
    handoff.return_expired_leases()
    for state in (first, second):
        subprocess.run([*command, str(state), *options, "--loops", "2"], timeout=60, check=True)
    sends = Counter(json.loads(line)["body"] for line in sent_log.read_text().splitlines())
    assert max(sends.values()) == 1, f"sent twice: {[b for b, n in sends.items() if n > 1]}"
    assert set(sends) == set(bodies)
    assert set(Message.objects.values_list("status", flat=True)) == {Status.DELIVERED}
