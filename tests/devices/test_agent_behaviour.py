"""How the reference agent behaves for its user, against a running server over real HTTP.

A paced batch does not make the agent deaf: an urgent SMS created while it waits between
paced sends goes out first, and each outcome reaches the server as soon as it is known.
The simulator can inject an incoming SMS. Expected failures are one plain line on stderr.

The pacing tests use a long delay between SMS (12 s and more) so that the order of sends
is unambiguous even on a slow machine: the agent has that long to hear of the urgent SMS.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core.cache import cache

from devices import handoff, services
from devices.agent import sms_agent
from devices.models import Device
from gateway.services import compat_token
from messaging.models import Message, Status
from tests.devices.test_agent_e2e import getdata

AGENT = Path(sms_agent.__file__)
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _clear_cache():
    # Failed pairings are counted per address in the cache, which outlives a test run.
    cache.clear()


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def sent_bodies(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [json.loads(line)["body"] for line in log.read_text().splitlines() if line]


def pair(live_server, state: Path, user) -> Device:
    _, code = services.create_pairing_code(user.account)
    sms_agent.main(["--state", str(state), "pair", "--server", live_server.url, "--code", code])
    return Device.objects.get(pk=json.loads((state / "device.json").read_text())["device_id"])


def agent_command(state: Path, *args: str) -> list[str]:
    return [sys.executable, str(AGENT), "--state", str(state), *args]


@pytest.fixture
def running_agent() -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(state: Path, sent_log: Path) -> subprocess.Popen:
        # The default long poll: held by a server with Redis, plain polling without it.
        process = subprocess.Popen(
            agent_command(
                state,
                "run",
                "--sender",
                "simulated",
                "--sent-log",
                str(sent_log),
                "--duration",
                "120",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def add(live_server, user, device: Device, body: str, urgent: int = 0) -> int:
    answer = getdata(
        live_server.url,
        "addsms",
        token=compat_token(user.account),
        sendto="+4915752982212",
        body=body,
        device_id=device.pk,
        urgent=urgent,
    )
    assert answer["error"] == 0, answer
    return answer["sms_id"]


def test_an_urgent_sms_created_mid_batch_goes_out_before_the_paced_ones_left(
    live_server, tmp_path, make_user, running_agent
):
    user = make_user("pace@example.com", "pace-password")
    state = tmp_path / "agent"
    device = pair(live_server, state, user)
    # Paced 12 s apart; a poll hands out what falls due within 1 + 30 s: all three at once.
    Device.objects.filter(pk=device.pk).update(delay_between_sms=12, delay_between_requests=1)
    paced = [add(live_server, user, device, f"paced {i}") for i in range(3)]
    sent_log = tmp_path / "sent.jsonl"
    running_agent(state, sent_log)

    wait_for(lambda: sent_bodies(sent_log), 60, "the first paced send")
    # The rest of the batch is the agent's already: confirmed, waiting for its turn.
    assert sent_bodies(sent_log) == ["paced 0"]
    waiting = Message.objects.filter(id__in=paced[1:])
    assert all(m.status == Status.TAKEN and m.confirmed_at for m in waiting)

    add(live_server, user, device, "urgent", urgent=1)
    wait_for(lambda: len(sent_bodies(sent_log)) >= 2, 60, "a second send")
    assert sent_bodies(sent_log) == ["paced 0", "urgent"]


def test_each_outcome_is_reported_as_it_happens_not_at_the_end_of_the_batch(
    live_server, tmp_path, make_user, running_agent
):
    user = make_user("report@example.com", "report-password")
    state = tmp_path / "agent"
    device = pair(live_server, state, user)
    Device.objects.filter(pk=device.pk).update(delay_between_sms=20, delay_between_requests=1)
    first, second = (add(live_server, user, device, f"paced {i}") for i in range(2))
    sent_log = tmp_path / "sent.jsonl"
    running_agent(state, sent_log)

    wait_for(
        lambda: Message.objects.get(pk=first).status == Status.DELIVERED,
        60,
        "the first outcome on the server",
    )
    # The batch is not over: its second message waits for its paced turn, 20 s later.
    assert sent_bodies(sent_log) == ["paced 0"]
    later = Message.objects.get(pk=second)
    assert later.status == Status.TAKEN and later.confirmed_at is not None


def test_a_stop_ends_a_long_poll_at_once_and_cleanly(live_server, tmp_path, make_user):
    # With Redis the server holds the poll for --wait seconds; without it the agent waits
    # between plain polls. Either way SIGTERM ends the agent long before the hold would.
    user = make_user("stop@example.com", "stop-password")
    state = tmp_path / "agent"
    device = pair(live_server, state, user)
    process = subprocess.Popen(
        agent_command(
            state, "run", "--sender", "simulated", "--wait", str(handoff.MAX_WAIT_SECONDS)
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: Device.objects.get(pk=device.pk).last_seen_at is not None, 60, "a first poll"
        )
        time.sleep(0.5)  # into the held poll
        stopped_at = time.monotonic()
        process.terminate()
        _, errors = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, errors.decode()
    # Held to its end it would take MAX_WAIT_SECONDS (30 s); a slow machine still stops in a few.
    assert time.monotonic() - stopped_at < handoff.MAX_WAIT_SECONDS / 2


def test_the_simulator_injects_an_incoming_sms(live_server, tmp_path, make_user, capsys):
    user = make_user("inbox@example.com", "inbox-password")
    state = tmp_path / "agent"
    device = pair(live_server, state, user)
    capsys.readouterr()
    sms_agent.main(
        ["--state", str(state), "simulate-incoming", "--from", "+15551234567", "--text", "Hello"]
    )
    stored = Message.objects.get(status=Status.INCOMING)
    assert (stored.device_id, stored.phone, stored.body) == (device.pk, "+15551234567", "Hello")
    assert f"Stored as incoming SMS {stored.pk}" in capsys.readouterr().out
    listed = getdata(live_server.url, "getallsms", token=compat_token(user.account))["smss"]
    assert (listed[str(stored.pk)]["status"], listed[str(stored.pk)]["body"]) == (5, "Hello")


def plain_error(command: list[str]) -> str:
    """Run the agent; it must fail with exit status 1 and end with one error line on stderr
    (after the log lines of what it did before, if any)."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("sms_agent: error: ")]
    assert errors == lines[-1:], result.stderr
    return errors[0]


def test_a_used_pairing_code_is_a_plain_error(live_server, tmp_path, make_user):
    user = make_user("used@example.com", "used-password")
    _, code = services.create_pairing_code(user.account)
    pair_with = ["pair", "--server", live_server.url, "--code", code]
    sms_agent.main(["--state", str(tmp_path / "first"), *pair_with])
    line = plain_error(agent_command(tmp_path / "second", *pair_with))
    assert "pairing refused" in line and "used or expired" in line
    assert not (tmp_path / "second" / "device.json").exists()


def test_an_unreachable_server_is_a_plain_error(tmp_path):
    # A bound socket that does not listen: connecting to it is refused.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        server = f"http://127.0.0.1:{closed.getsockname()[1]}"
        line = plain_error(agent_command(tmp_path, "pair", "--server", server, "--code", "X"))
        assert f"cannot reach the server at {server}/" in line
        (tmp_path / "device.json").write_text(json.dumps({"server": server, "token": "dev_x"}))
        line = plain_error(
            agent_command(tmp_path, "simulate-incoming", "--from", "+15551234567", "--text", "x")
        )
        assert f"cannot reach the server at {server}/" in line


def test_running_before_pairing_is_a_plain_error(tmp_path):
    line = plain_error(agent_command(tmp_path, "run", "--sender", "simulated", "--loops", "1"))
    assert "not paired yet" in line and "sms_agent.py pair" in line


def test_polling_between_paced_sends_sends_nothing_twice_through_crashes(
    live_server, tmp_path, make_user, settings
):
    settings.DEVICE_LEASE_SECONDS = 2
    user = make_user("chaos@example.com", "chaos-password")
    state = tmp_path / "agent"
    device = pair(live_server, state, user)
    # Paced 2 s apart, so the agent polls between sends; some polls bring urgent work.
    Device.objects.filter(pk=device.pk).update(
        delay_between_sms=2, delay_between_requests=1, batch_size=3
    )
    bodies = [f"chaos {i}" for i in range(8)]
    for i, body in enumerate(bodies):
        add(live_server, user, device, body, urgent=int(i % 3 == 2))
    sent_log = tmp_path / "sent.jsonl"
    chaos = [
        *("--chaos-drop-poll", "0.2"),
        *("--chaos-crash-before-confirm", "0.3"),
        *("--chaos-crash-after-confirm", "0.3"),
        *("--chaos-duplicate-reports", "0.5"),
    ]
    command = agent_command(
        state, "run", "--sender", "simulated", "--wait", "0", "--sent-log", str(sent_log)
    )

    def unfinished() -> int:
        return Message.objects.exclude(status=Status.DELIVERED).count()

    crashes = 0
    deadline = time.monotonic() + 120
    while unfinished() and time.monotonic() < deadline:
        # Restarted after each crash, as a supervisor would; a calm run once in a while.
        # The first run crashes right after its first confirm for sure (the chaos is
        # random: without this, a lucky run sometimes crashed nowhere and proved nothing).
        calm = crashes and crashes % 4 == 0
        first = ["--chaos-crash-after-confirm", "1"] if crashes == 0 else []
        process = subprocess.run(
            [*command, "--duration", "8", *([] if calm else chaos), *first],
            capture_output=True,
            timeout=90,
        )
        crashes += process.returncode in (17, 18)
        handoff.return_expired_leases()

    sends = Counter(sent_bodies(sent_log))
    assert max(sends.values()) == 1, f"sent twice: {[b for b, n in sends.items() if n > 1]}"
    assert set(sends) == set(bodies)
    assert unfinished() == 0
    assert crashes > 0, "the chaos settings injected no crash; the test proved nothing"


def test_a_replaced_token_is_a_plain_error_that_says_pair_again(live_server, tmp_path, make_user):
    make_user("again@example.com", "again-password")
    old, new = tmp_path / "old", tmp_path / "new"
    for state in (old, new):  # the same phone paired again: the old token stops working
        sms_agent.main(
            [
                *("--state", str(state), "pair", "--server", live_server.url),
                *("--email", "again@example.com", "--password", "again-password"),
                *("--imei", "358240051111110"),
            ]
        )
    line = plain_error(agent_command(old, "run", "--sender", "simulated", "--loops", "1"))
    assert "no longer accepts this device's token" in line and "pair it again" in line


def test_the_agent_gives_back_what_it_was_asked_for_and_had_not_sent(
    live_server, tmp_path, make_user, make_device
):
    from datetime import timedelta

    from django.utils import timezone

    from devices import pools, tasks
    from devices.models import PoolMember, SimSlot
    from messaging import services as messaging

    user = make_user("revoke@example.com", "revoke-password")
    device = pair(live_server, tmp_path, user)
    other = make_device(user.account, title="other")
    Device.objects.filter(pk__in=[device.pk, other.pk]).update(last_seen_at=timezone.now())
    pool = pools.create_pool(user.account, "Fleet")
    for sim in SimSlot.objects.filter(device__in=[device, other], slot=0):
        PoolMember.objects.create(pool=pool, sim=sim)
    ids = messaging.submit(
        user.account, [messaging.OutgoingSms(pool.pk, f"+4915752982{i:03d}", "hi") for i in (1, 2)]
    )
    mine = Message.objects.get(pk__in=ids, device=device)
    token = json.loads((tmp_path / "device.json").read_text())["token"]
    sender = sms_agent.SimulatedSender()
    agent = sms_agent.Agent(
        sms_agent.Api(live_server.url, token), sender, sms_agent.Journal(tmp_path / "j.log"), wait=0
    )
    agent.poll_once(0)  # offered and confirmed, not sent yet
    assert Message.objects.get(pk=mine.pk).confirmed_at is not None
    long_ago = timezone.now() - timedelta(minutes=5)
    Message.objects.filter(pk=mine.pk).update(
        not_before_at=long_ago, outcome_deadline_at=long_ago + timedelta(minutes=15)
    )
    tasks.route_pools()  # the server asks for it back
    agent.poll_once(0)
    agent.report_pending()
    agent.send_confirmed()
    assert sender.sent == []  # given back, never sent
    moved = Message.objects.get(pk=mine.pk)
    assert (moved.status, moved.device_id, moved.revoked_from) == (
        Status.NEW,
        other.pk,
        device.pk,
    )
