"""Pools: routing across SIMs of several phones, caps and quiet hours, failover, and the
pool as the public APIs show it."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.cache import cache
from django.db import close_old_connections, connection
from django.test import Client
from django.utils import timezone

from devices import handoff, pools, tasks
from devices.models import Device, Pool, PoolMember, SimSlot
from gateway import services as accounts
from messaging import lifecycle
from messaging import services as messaging
from messaging.lifecycle import Outcome
from messaging.models import Message, Status

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()


def online(*devices: Device) -> None:
    Device.objects.filter(pk__in=[d.pk for d in devices]).update(last_seen_at=timezone.now())


def make_pool(account: Any, sims: list[SimSlot], strategy: str = "round_robin", **kw: Any) -> Pool:
    pool = pools.create_pool(account, "Fleet", strategy, **kw)
    for sim in sims:
        PoolMember.objects.create(pool=pool, sim=sim)
    return pool


def send(account: Any, pool: Pool | None, n: int, phone: str = "+4915752982{:03d}") -> list[int]:
    target = pool.pk if pool is not None else None
    return messaging.submit(
        account,
        [messaging.OutgoingSms(target, phone.format(i), f"Hello {i}") for i in range(n)],
    )


def share(ids: list[int]) -> Counter[tuple[int | None, int]]:
    return Counter(Message.objects.filter(pk__in=ids).values_list("device_id", "sim"))


def app_phone(make_user: Any, account: Any, email: str) -> tuple[Any, Device]:
    """A phone of the SMSGate app registered with an account login, seen now."""
    from tests.devices.test_smsgate_app import App, basic

    make_user(email, account=account)
    app = App(Client())
    assert app.register(basic(email, "correct horse battery")).status_code == 201
    phone = Device.objects.get(pk=int(app.id))
    online(phone)
    return app, phone


@pytest.fixture
def fleet(account, make_device):
    """Two phones online: one with SIM 1 and 2, one with SIM 1; their slot rows."""
    first = make_device(account, slots=(0, 1), title="A")
    second = make_device(account, slots=(0,), title="B")
    online(first, second)
    return list(SimSlot.objects.filter(device__in=[first, second]).order_by("device_id", "slot"))


# --- Strategies -----------------------------------------------------------------------------


def test_round_robin_spreads_evenly_and_the_pool_id_never_collides_with_a_phone(account, fleet):
    pool = make_pool(account, fleet)
    assert not Device.objects.filter(pk=pool.pk).exists()  # not listed as a phone
    assert Device.all_rows.get(pk=pool.pk).protocol == Device.Protocol.POOL
    ids = send(account, pool, 299) + send(account, pool, 1)
    assert sorted(share(ids).values()) == [100, 100, 100]
    assert set(Message.objects.filter(pk__in=ids).values_list("pool_id", flat=True)) == {pool.pk}


def test_weighted_follows_the_weights(account, fleet):
    pool = pools.create_pool(account, "W", "weighted")
    for sim, weight in zip(fleet, (1, 2, 3), strict=True):
        PoolMember.objects.create(pool=pool, sim=sim, weight=weight)
    ids = send(account, pool, 600)
    counts = share(ids)
    assert [counts[(s.device_id, s.slot)] for s in fleet] == [100, 200, 300]


def test_least_loaded_fills_the_idle_and_fast_sims_first(account, fleet, make_message):
    slow = fleet[2].device
    Device.objects.filter(pk=slow.pk).update(delay_between_sms=20)  # 1 SMS / 20 s
    pool = make_pool(account, fleet, "least_loaded")
    # SIM 1 of phone A already has 30 messages waiting, sent to it directly.
    for _ in range(30):
        make_message(account, device=fleet[0].device, sim=0)
    counts = share(send(account, pool, 60))
    a1, a2, b1 = ((s.device_id, s.slot) for s in fleet)
    # A's SIMs pace at 2 s (30 segments/min), B at 20 s: B gets about a tenth of A2's share.
    assert counts[a2] > counts[a1] > counts[b1] >= 1
    assert counts[a1] + 30 <= counts[a2] + 2  # A1's queue evens out with A2's


def test_sticky_keeps_a_recipient_on_one_sim_and_moves_only_the_lost_sims_recipients(
    account, fleet
):
    pool = make_pool(account, fleet, "sticky")
    phones = [f"+49157529{i:05d}" for i in range(90)]
    first = {
        m.phone: (m.device_id, m.sim)
        for m in Message.objects.filter(pk__in=send(account, pool, 90, "+49157529{:05d}"))
    }
    again = {
        m.phone: (m.device_id, m.sim)
        for m in Message.objects.filter(pk__in=send(account, pool, 90, "+49157529{:05d}"))
    }
    assert first == again and len(set(first.values())) == 3
    assert min(Counter(first.values()).values()) >= 15  # spread, not all on one
    # Phone B goes offline: only its recipients move; the others stay where they were.
    Device.objects.filter(pk=fleet[2].device_id).update(last_seen_at=None)
    moved = {
        m.phone: (m.device_id, m.sim)
        for m in Message.objects.filter(pk__in=send(account, pool, 90, "+49157529{:05d}"))
    }
    b = (fleet[2].device_id, 0)
    for phone in phones:
        if first[phone] != b:
            assert moved[phone] == first[phone]
        else:
            assert moved[phone] != b


def test_offline_disabled_draining_and_failing_sims_are_skipped_with_their_reasons(
    account, fleet, make_device
):
    gone = make_device(account, slots=(0,), title="Gone")  # never seen
    off = make_device(account, slots=(0,), title="Off", enabled=False)
    online(off)
    sims = [*fleet, gone.sims.get(), off.sims.get()]
    pool = make_pool(account, sims)
    PoolMember.objects.filter(pool=pool, sim=fleet[0]).update(draining=True)
    PoolMember.objects.filter(pool=pool, sim=fleet[1]).update(failing=True)
    reasons = {c.slot.pk: c.reason for c in pools.candidates(pool)}
    assert reasons == {
        fleet[0].pk: "draining",
        fleet[1].pk: "failing: most of its recent SMS failed",
        fleet[2].pk: None,
        sims[3].pk: "phone offline",
        sims[4].pk: "phone disabled",
    }
    assert set(share(send(account, pool, 10))) == {(fleet[2].device_id, 0)}


def test_a_sim_whose_sms_mostly_fail_is_marked_failing_by_the_sweep(account, fleet):
    pool = make_pool(account, fleet[:2])
    device = fleet[0].device
    ids = send(account, pool, 12)
    leased = handoff.poll(device)
    handoff.confirm(device, [m.id for m in leased.messages], leased.lease_id)
    handoff.report(device, [Outcome(m.id, Status.GENERIC_FAILURE) for m in leased.messages])
    assert len(leased.messages) >= 10  # both SIMs' messages: one phone
    pools.sweep_pool(pool)
    assert set(PoolMember.objects.filter(pool=pool).values_list("failing", flat=True)) == {True}
    # Nothing more goes to a failing SIM: the next messages wait, saying why.
    held = Message.objects.filter(pk__in=send(account, pool, 1)).get()
    assert held.device_id is None and "failing" in held.hold_reason
    assert ids


# --- Caps and quiet hours ----------------------------------------------------------------


def test_hourly_and_daily_caps_are_never_exceeded_and_the_rest_waits_with_the_reason(
    account, fleet
):
    SimSlot.objects.filter(pk=fleet[0].pk).update(max_per_hour=3)
    SimSlot.objects.filter(pk=fleet[1].pk).update(max_per_day=2)
    pool = make_pool(account, fleet[:2])
    device = fleet[0].device
    Device.objects.filter(pk=device.pk).update(batch_size=100)
    device.refresh_from_db()
    ids = send(account, pool, 10)
    counts = share(ids)
    assert counts[(device.pk, 0)] == 3 and counts[(device.pk, 1)] == 2  # routed within caps
    held = Message.objects.filter(pk__in=ids, device__isnull=True)
    assert held.count() == 5
    assert all("no SIM of the pool may send it now" in m.hold_reason for m in held)
    # The phone is handed exactly its caps, however often it polls.
    for _ in range(3):
        result = handoff.poll(device)
        handoff.confirm(device, [m.id for m in result.messages], result.lease_id)
    leased = Counter(
        Message.objects.filter(pk__in=ids, status=Status.TAKEN).values_list("sim", flat=True)
    )
    assert leased == {0: 3, 1: 2}
    # Messages sent straight to a capped SIM wait too: the cap is the SIM's, not the pool's.
    (direct,) = messaging.submit(account, [messaging.OutgoingSms(device.pk, "+4915700000", "x")])
    assert direct not in {m.id for m in handoff.poll(device).messages}
    assert Message.objects.get(pk=direct).status == Status.NEW


def test_a_sim_filled_to_its_cap_by_its_queue_keeps_that_queue_and_only_the_excess_moves(
    account, fleet
):
    SimSlot.objects.filter(pk=fleet[0].pk).update(max_per_hour=3)
    pool = make_pool(account, [fleet[0], fleet[2]])
    ids = send(account, pool, 10)
    a, b = (fleet[0].device_id, 0), (fleet[2].device_id, 0)
    assert share(ids) == Counter({a: 3, b: 7})
    assert pools.sweep_pool(pool) == 0  # a full SIM is not emptied: no flapping
    assert pools.sweep_pool(pool) == 0 and share(ids) == Counter({a: 3, b: 7})
    # Its cap lowered to 1: the two it can no longer send this hour move, the first stays.
    SimSlot.objects.filter(pk=fleet[0].pk).update(max_per_hour=1)
    assert pools.sweep_pool(pool) == 2 and share(ids) == Counter({a: 1, b: 9})
    first = min(ids)
    assert Message.objects.get(pk=first).device_id == fleet[0].device_id


def test_a_pool_whose_every_sim_is_capped_waits_and_resumes_at_the_next_window(account, fleet):
    SimSlot.objects.filter(pk=fleet[0].pk).update(max_per_hour=2)
    pool = make_pool(account, fleet[:1])
    device = fleet[0].device
    ids = send(account, pool, 5)
    result = handoff.poll(device)
    assert len(result.messages) == 2
    handoff.confirm(device, [m.id for m in result.messages], result.lease_id)
    assert pools.sweep_pool(pool) == 0  # still capped: nothing to route
    waiting = Message.objects.filter(pk__in=ids, status=Status.NEW)
    assert waiting.count() == 3 and not waiting.filter(device__isnull=False).exists()
    assert "hourly cap reached until" in waiting.first().hold_reason
    # An hour later (the sends' paced times moved back an hour), the window has room.
    Message.objects.filter(pk__in=[m.id for m in result.messages]).update(
        not_before_at=timezone.now() - timedelta(minutes=61)
    )
    assert pools.sweep_pool(pool) == 2
    assert len(handoff.poll(device).messages) == 2


def test_distinct_recipient_caps_let_known_recipients_through(account, fleet):
    SimSlot.objects.filter(pk=fleet[0].pk).update(max_recipients_per_day=2)
    device = fleet[0].device
    Device.objects.filter(pk=device.pk).update(batch_size=100)
    device.refresh_from_db()
    requests = [
        messaging.OutgoingSms(device.pk, phone, "x", sim=0)
        for phone in ("+491570001", "+491570002", "+491570003", "+491570001", "+491570002")
    ]
    messaging.submit(account, requests)
    result = handoff.poll(device)
    assert sorted(m.phone for m in result.messages) == [
        "+491570001",
        "+491570001",
        "+491570002",
        "+491570002",
    ]


def _local(account: Any, at: time) -> datetime:
    zone = ZoneInfo(account.time_zone)
    return datetime.combine(timezone.now().astimezone(zone).date(), at, tzinfo=zone)


def test_quiet_hours_hand_out_nothing_in_the_accounts_zone(account, fleet):
    account.time_zone = "Asia/Tokyo"
    account.save()
    now = timezone.now().astimezone(ZoneInfo("Asia/Tokyo"))
    start = (now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (now + timedelta(hours=1)).time().replace(second=0, microsecond=0)
    SimSlot.objects.filter(pk=fleet[0].pk).update(quiet_from=start, quiet_until=end)
    device = fleet[0].device
    (message_id,) = messaging.submit(account, [messaging.OutgoingSms(device.pk, "+4915701", "x")])
    assert handoff.poll(device).messages == []
    (candidate,) = pools.candidates(make_pool(account, fleet[:1]))
    assert candidate.reason == f"quiet hours until {end:%H:%M}"
    # Outside them (the window moved to later today), the message goes.
    later = (now + timedelta(hours=2)).time().replace(second=0, microsecond=0)
    SimSlot.objects.filter(pk=fleet[0].pk).update(
        quiet_from=later, quiet_until=(now + timedelta(hours=3)).time()
    )
    assert [m.id for m in handoff.poll(device).messages] == [message_id]


def test_a_send_paced_into_quiet_hours_is_not_handed_out_before_them(account, fleet):
    device = fleet[2].device
    Device.objects.filter(pk=device.pk).update(delay_between_sms=15, delay_between_requests=60)
    device.refresh_from_db()
    ids = messaging.submit(
        account, [messaging.OutgoingSms(device.pk, f"+491570{i}", "x") for i in range(3)]
    )
    now = timezone.now()
    begins = (now + timedelta(seconds=20)).replace(microsecond=0)
    SimSlot.objects.filter(pk=fleet[2].pk).update(
        quiet_from=begins.time(), quiet_until=(begins + timedelta(hours=1)).time()
    )
    # Paced at now, now + 15 s and now + 30 s: the third would go in the quiet hours.
    handed = handoff.poll(device, now=now).messages
    assert [m.id for m in handed] == ids[:2]
    assert all(m.not_before_at < begins for m in handed)


def test_caps_hold_over_both_phone_protocols_over_http(account, make_user, make_device):
    from tests.devices.test_device_api import DeviceApi
    from tests.devices.test_smsgate_app import App, basic

    user = make_user("pools@example.com", account=account)
    app = App(Client())
    assert app.register(basic(user.email, "correct horse battery")).status_code == 201
    agent_device = make_device(account, slots=(0,), title="agent", imei="358240059999990")
    from devices import services as device_services

    paired, token = device_services.pair_with_login(
        account, device_services.DeviceDetails(imei=agent_device.imei)
    )
    agent = DeviceApi(paired, token)
    app_sim = SimSlot.objects.get(device_id=int(app.id), slot=0)
    agent_sim = SimSlot.objects.get(device=paired, slot=0)
    SimSlot.objects.filter(pk=app_sim.pk).update(max_per_hour=2)
    SimSlot.objects.filter(pk=agent_sim.pk).update(max_per_hour=3)
    online(paired, Device.objects.get(pk=int(app.id)))
    pool = make_pool(account, [app_sim, agent_sim])
    ids = send(account, pool, 12)
    got_app: set[str] = set()
    got_agent: set[int] = set()
    for _ in range(3):
        got_app |= {m["id"] for m in app.fetch()}
        answer = agent("poll").json()
        got_agent |= {m["id"] for m in answer["messages"]}
        pools.sweep_pool(pool)
    assert len(got_app) == 2 and len(got_agent) == 3
    assert Message.objects.filter(pk__in=ids, status=Status.TAKEN).count() == 5
    assert Message.objects.filter(pk__in=ids, status=Status.NEW).count() == 7


# --- Failover ---------------------------------------------------------------------------


def test_a_killed_phones_unconfirmed_leases_go_to_another_and_its_confirmed_ones_never(
    account, fleet
):
    a, b = fleet[0].device, fleet[2].device
    pool = make_pool(account, [fleet[0], fleet[2]])
    ids = send(account, pool, 6)
    on_a = list(Message.objects.filter(pk__in=ids, device=a).values_list("id", flat=True))
    first = handoff.poll(a)
    assert {m.id for m in first.messages} == set(on_a)
    confirmed = on_a[:1]
    handoff.confirm(a, confirmed, first.lease_id)
    # A dies: no more polls (seen long ago), and its unconfirmed leases run out.
    Device.objects.filter(pk=a.pk).update(last_seen_at=timezone.now() - timedelta(hours=1))
    Message.objects.filter(pk__in=on_a[1:]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    tasks.sweep_leases()
    tasks.route_pools()
    now_b = Message.objects.filter(pk__in=on_a[1:], device=b, status=Status.NEW)
    assert now_b.count() == len(on_a) - 1
    second = handoff.poll(b)
    assert set(on_a[1:]) <= {m.id for m in second.messages}
    # A comes back and confirms what its old poll offered: only what it still holds.
    result = handoff.confirm(a, on_a, first.lease_id)
    assert result.confirmed == [] or set(result.confirmed) <= set(confirmed)
    # The confirmed one is never offered elsewhere; with no outcome it ends as unknown.
    assert Message.objects.get(pk=confirmed[0]).device_id == a.pk
    Message.objects.filter(pk=confirmed[0]).update(
        outcome_deadline_at=timezone.now() - timedelta(seconds=1)
    )
    lifecycle.settle_overdue()
    assert Message.objects.get(pk=confirmed[0]).status == Status.UNKNOWN


def test_an_app_phone_that_fetched_and_went_silent_is_never_bypassed(
    account, fleet, make_user, settings
):
    """The app sends before it reports: a served pooled message it never reported may have
    gone out. Past its (short) validUntil it ends unknown, never on another phone."""
    settings.POOL_VALID_SECONDS = 300
    app, phone = app_phone(make_user, account, "fence@example.com")
    pool = make_pool(account, [SimSlot.objects.get(device=phone, slot=0), fleet[2]])
    send(account, pool, 2)
    (served,) = app.fetch()
    message = Message.objects.get(pk=int(served["id"].split("-")[0]))
    # The phone refuses to send it after validUntil: its paced time + POOL_VALID_SECONDS.
    valid, paced = datetime.fromisoformat(served["validUntil"]), message.not_before_at
    assert paced is not None and abs((valid - paced).total_seconds() - 300) < 1
    assert message.lease_expires_at == paced + timedelta(seconds=300) + handoff.FENCE_MARGIN
    # The phone goes silent. Before the fence runs out, the message stays its own.
    Device.objects.filter(pk=phone.pk).update(last_seen_at=timezone.now() - timedelta(hours=1))
    tasks.sweep_leases()
    tasks.route_pools()
    assert Message.objects.get(pk=message.pk).status == Status.TAKEN
    # Past the fence it may have sent it (a lost report): unknown, not offered elsewhere.
    Message.objects.filter(pk=message.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    tasks.sweep_leases()
    tasks.route_pools()
    ended = Message.objects.get(pk=message.pk)
    assert (ended.status, ended.device_id) == (Status.UNKNOWN, phone.pk)
    assert message.pk not in {m.id for m in handoff.poll(fleet[2].device).messages}
    # Its report, late, is still the truth.
    assert app.report(served["id"], "Sent").status_code == 204
    assert Message.objects.get(pk=message.pk).status == Status.SENT


def overdue(*ids: int) -> None:
    """As if the phone had confirmed these POOL_REVOKE_SECONDS (and more) ago."""
    long_ago = timezone.now() - timedelta(minutes=5)
    Message.objects.filter(pk__in=ids).update(
        not_before_at=long_ago, outcome_deadline_at=long_ago + timedelta(minutes=15)
    )


def test_a_stuck_confirmed_message_is_asked_back_and_goes_elsewhere_only_once_given(account, fleet):
    a, b = fleet[0].device, fleet[2].device
    pool = make_pool(account, [fleet[0], fleet[2]])
    ids = send(account, pool, 2)
    (on_a,) = Message.objects.filter(pk__in=ids, device=a).values_list("id", flat=True)
    first = handoff.poll(a)
    handoff.confirm(a, [on_a], first.lease_id)
    assert handoff.poll(a).revoke == []  # not overdue yet
    overdue(on_a)
    tasks.route_pools()
    assert handoff.poll(a).revoke == [on_a]
    # Asked is not given: it stays A's until A answers.
    tasks.route_pools()
    assert Message.objects.get(pk=on_a).device_id == a.pk
    back = handoff.report(a, [Outcome(on_a, handoff.REVOKED)])
    assert [r.result for r in back] == ["applied"]
    moved = Message.objects.get(pk=on_a)
    assert (moved.status, moved.device_id, moved.revoked_from) == (Status.NEW, b.pk, a.pk)
    assert moved.confirmed_at is None and moved.revoke_requested_at is None
    assert on_a in {m.id for m in handoff.poll(b).messages}
    # Repeated: unchanged; a late "sent" from A is refused: it is no longer A's.
    assert [r.result for r in handoff.report(a, [Outcome(on_a, handoff.REVOKED)])] == ["unchanged"]
    assert [r.result for r in handoff.report(a, [Outcome(on_a, Status.SENT)])] == ["refused"]
    # B's own message was never asked for: giving back what nobody asked for is refused.
    (on_b,) = (
        Message.objects.filter(pk__in=ids, device=b).exclude(pk=on_a).values_list("id", flat=True)
    )
    assert [r.result for r in handoff.report(b, [Outcome(on_b, handoff.REVOKED)])] == ["refused"]


def test_nothing_is_asked_back_when_no_other_phone_may_send_it(account, fleet):
    a = fleet[0].device
    pool = make_pool(account, [fleet[0], fleet[1]])  # two SIMs of one phone
    ids = send(account, pool, 2)
    lease = handoff.poll(a)
    handoff.confirm(a, ids, lease.lease_id)
    overdue(*ids)
    tasks.route_pools()
    assert handoff.poll(a).revoke == []
    assert not Message.objects.filter(revoke_requested_at__isnull=False).exists()


def test_an_app_phone_gives_back_a_stuck_message_by_answering_cancelling_with_cancelled(
    account, fleet, make_user
):
    app, phone = app_phone(make_user, account, "revoke@example.com")
    pool = make_pool(account, [SimSlot.objects.get(device=phone, slot=0), fleet[2]])
    ids = send(account, pool, 2)
    (served,) = app.fetch()
    assert app.fetch()[0]["id"] == served["id"]  # offered again until the phone answers
    assert app.report(served["id"], "Pending").status_code == 204  # "I have it"
    message_id = int(served["id"].split("-")[0])
    assert Message.objects.get(pk=message_id).confirmed_at is not None
    overdue(message_id)
    tasks.route_pools()
    (asked,) = app.fetch()
    assert (asked["id"], asked["state"]) == (served["id"], "Cancelling")
    # The app's PATCH may repeat a state (each one built when its worker runs).
    now = timezone.now().strftime("%Y-%m-%dT%H:%M:%S.123+05:30")
    twice = [
        {"id": served["id"], "state": "Cancelled", "states": {"Cancelled": now},
         "recipients": [{"phoneNumber": "+4915752982000", "state": "Cancelled"}]},
    ] * 2  # fmt: skip
    assert app.call("PATCH", "/message", twice).status_code == 204
    moved = Message.objects.get(pk=message_id)
    assert (moved.status, moved.device_id) == (Status.NEW, fleet[2].device_id)
    assert app.fetch() == []  # never offered to the app again
    assert {m.id for m in handoff.poll(fleet[2].device).messages} == set(ids)


def test_an_operator_move_takes_a_message_out_of_its_pool_and_a_resend_goes_through_it(
    account, fleet
):
    pool = make_pool(account, fleet[1:])
    (moved_id, copied_id) = send(account, pool, 2)
    assert messaging.reassign(account, [moved_id], fleet[0].device_id, 0) == 1
    pools.sweep_pool(pool)
    moved = Message.objects.get(pk=moved_id)
    assert (moved.pool_id, moved.device_id, moved.sim) == (None, fleet[0].device_id, 0)
    Device.objects.filter(pk__in={s.device_id for s in fleet}).update(enabled=False)
    pools.sweep_pool(pool)  # now held
    assert Message.objects.get(pk=copied_id).device_id is None
    (copy,) = messaging.resend(account, [copied_id])
    assert Message.objects.get(pk=copy).pool_id == pool.pk


def test_draining_or_removing_a_sim_moves_its_waiting_queue(account, fleet):
    pool = make_pool(account, fleet)
    ids = send(account, pool, 30)
    PoolMember.objects.filter(pool=pool, sim=fleet[0]).update(draining=True)
    PoolMember.objects.filter(pool=pool, sim=fleet[1]).delete()
    assert pools.sweep_pool(pool) == 20
    assert set(share(ids)) == {(fleet[2].device_id, 0)}
    assert Message.objects.filter(pk__in=ids, status=Status.NEW).count() == 30  # none lost


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_sweeps_and_polls_racing_never_hand_a_message_out_twice(account, fleet):
    pool = make_pool(account, fleet)
    Device.objects.filter(pk__in=[s.device_id for s in fleet]).update(batch_size=50)
    ids = set(send(account, pool, 600))
    got: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def phone(device_id: int) -> None:
        try:
            device = Device.objects.get(pk=device_id)
            for _ in range(30):
                result = handoff.poll(device)
                handoff.confirm(device, [m.id for m in result.messages], result.lease_id)
                with lock:
                    got.extend(m.id for m in result.messages)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            close_old_connections()

    def churn() -> None:
        try:
            for i in range(30):
                online_ids = [fleet[0].device_id] if i % 2 else [fleet[2].device_id]
                Device.objects.filter(pk__in=[s.device_id for s in fleet]).update(
                    last_seen_at=timezone.now() - timedelta(hours=1)
                )
                Device.objects.filter(pk__in=online_ids).update(last_seen_at=timezone.now())
                pools.sweep_pool(pool)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=phone, args=(d,)) for d in {s.device_id for s in fleet}]
    threads.append(threading.Thread(target=churn))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == len(set(got))  # none handed out twice
    confirmed = Message.objects.filter(pk__in=ids, status=Status.TAKEN)
    assert confirmed.count() == len(got)
    assert Message.objects.filter(pk__in=ids).count() == 600  # none lost
    assert connection.vendor == "postgresql"


# --- In the public APIs -------------------------------------------------------------------


def test_the_compat_api_shows_a_pool_as_a_device_and_sends_and_lists_through_it(
    account, fleet, make_user
):
    user = make_user("compat@example.com", account=account)
    token = accounts.compat_token(user.account)
    pool = make_pool(account, fleet)
    client = Client()
    answer = client.post(
        "/getdata/addsms",
        {"token": token, "sendto": "+4915752982212", "body": "via pool", "device_id": pool.pk},
    ).json()
    assert answer["error"] == 0
    message = Message.objects.get(pk=answer["sms_id"])
    assert message.pool_id == pool.pk and message.device_id in {s.device_id for s in fleet}
    listed = client.get("/getdata/getalldevices", {"token": token}).json()
    assert listed["count"] == 3
    entry = listed["device"][str(pool.pk)]
    assert entry["title"] == "Fleet" and entry["pool"] is True
    assert [s["Slot"] for s in entry["siminfo"]] == ["0", "1", "2"]
    status = client.get("/getdata/getdevicestatus", {"token": token, "device_id": pool.pk}).json()
    assert status["online"] is True and status["device_id"] == pool.pk
    bulk = client.post(
        "/getdata/addalotofsms",
        {
            "token": token,
            "datajson": json.dumps(
                {
                    "smsdata": [
                        {"sendto": f"+491575298{i:02d}", "body": "b", "device_id": pool.pk}
                        for i in range(4)
                    ]
                }
            ),
        },
    ).json()
    assert bulk["error"] == 0
    page = client.get("/getdata/getallsms", {"token": token, "device_id": pool.pk}).json()
    assert len(page["smss"]) == 5


def test_a_newsletter_to_a_pool_is_spread_over_its_sims(account, fleet, make_user):
    from contacts import services as contacts
    from contacts.models import Tag

    user = make_user("news@example.com", account=account)
    token = accounts.compat_token(user.account)
    tag = Tag.objects.create(account=account, title="all")
    for i in range(30):
        contacts.save_contact(account, f"+4915700000{i:03d}", tag_ids=[tag.pk])
    pool = make_pool(account, fleet)
    answer = (
        Client()
        .post(
            "/getdata/savepaket",
            {
                "token": token,
                "title": "Sale",
                "device_id": pool.pk,
                "body": "50% off",
                "tags": tag.pk,
            },
        )
        .json()
    )
    assert answer["error"] == 0, answer
    assert contacts.fan_out(answer["paket_id"]) == 30
    sent = Message.objects.filter(newsletter_id=answer["paket_id"])
    assert set(sent.values_list("pool_id", flat=True)) == {pool.pk}
    assert sorted(share(list(sent.values_list("pk", flat=True))).values()) == [10, 10, 10]
    # No SIM may send: the newsletter's messages are held with the reason, then routed.
    Device.objects.filter(pk__in={s.device_id for s in fleet}).update(enabled=False)
    later = contacts.create_newsletter(
        account, title="Later", device_id=pool.pk, sim=0, body="b", tag_ids=[tag.pk]
    )
    assert contacts.fan_out(later.pk) == 30
    held = Message.objects.filter(newsletter=later)
    assert set(held.values_list("device_id", flat=True)) == {None}
    assert "phone disabled" in held.first().hold_reason
    Device.objects.filter(pk__in={s.device_id for s in fleet}).update(enabled=True)
    assert pools.sweep() == 30 and not held.filter(device__isnull=True).exists()


def test_rest_sends_to_the_default_pool_or_a_named_one_and_shows_the_route(account, fleet):
    _, secret = accounts.create_api_token(account, "tests")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    post = lambda body: api.post("/api/v1/messages", body, content_type="application/json")  # noqa: E731
    no_pool = post({"to": "+4915752982212", "body": "hi"})
    assert no_pool.status_code == 422 and "default pool" in json.dumps(no_pool.json())
    pool = make_pool(account, fleet, is_default=True)
    created = post({"to": "+4915752982212", "body": "hi"})
    assert created.status_code == 201, created.content
    (shown,) = created.json()["messages"]
    assert shown["pool_id"] == pool.pk and shown["device_id"] in {s.device_id for s in fleet}
    assert shown["hold_reason"] == ""
    named = post({"to": "+4915752982212", "body": "hi", "pool": pool.pk})
    assert named.status_code == 201
    wrong = post({"to": "+4915752982212", "body": "hi", "pool": fleet[0].device_id})
    assert wrong.status_code == 400 and "pool" in wrong.json()["errors"]
    both = post({"to": "+4915752982212", "body": "hi", "pool": pool.pk, "device_id": 1})
    assert both.status_code == 400


def test_another_accounts_pool_is_not_found(account, fleet, make_account):
    pool = make_pool(account, fleet)
    other = make_account()
    with pytest.raises(messaging.InvalidBatch, match="Device not found"):
        messaging.submit(other, [messaging.OutgoingSms(pool.pk, "+4915752982212", "x")])


def test_the_admin_sends_sms_and_newsletters_through_a_pool(account, fleet, make_user):
    from django.urls import reverse

    from contacts.models import Contact, Newsletter, Tag

    user = make_user("ops@example.com", "pw-long-enough", account=account, is_staff=True)
    client = Client()
    client.force_login(user)
    pool = make_pool(account, fleet)
    page = client.get(reverse("admin:messaging_message_send")).content.decode()
    assert f"Pool: Fleet (#{pool.pk})" in page
    response = client.post(
        reverse("admin:messaging_message_send"),
        {"device": pool.pk, "sim": 0, "to": "+4915752982212", "body": "via pool"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    message = Message.objects.get(body="via pool")
    assert message.pool_id == pool.pk and message.device_id in {s.device_id for s in fleet}
    tag = Tag.objects.create(account=account, title="all")
    Contact.objects.create(account=account, phone="+4915700000001").tags.add(tag)
    assert (
        f"Pool: Fleet (#{pool.pk})"
        in client.get(reverse("admin:contacts_newsletter_add")).content.decode()
    )
    added = client.post(
        reverse("admin:contacts_newsletter_add"),
        {
            "title": "Sale",
            "device": pool.pk,
            "sim": 0,
            "body": "50% off",
            "tags": [tag.pk],
            "send_at_0": "2031-01-01",
            "send_at_1": "10:00:00",
        },
    )
    assert added.status_code == 302, added.content.decode()[:2000]
    assert Newsletter.objects.get().device_id == pool.pk


def test_webhooks_say_which_phone_and_sim_sent_a_pooled_message(account, fleet, settings):
    from messaging import webhooks
    from messaging.models import WebhookEvent

    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    webhooks.add_endpoint(account, "status", "http://127.0.0.1:9/hook")
    pool = make_pool(account, [fleet[1], fleet[2]])
    (message_id,) = send(account, pool, 1)
    taker = Message.objects.get(pk=message_id)
    device = Device.objects.get(pk=taker.device_id)
    lease = handoff.poll(device)
    handoff.confirm(device, [message_id], lease.lease_id)
    handoff.report(device, [Outcome(message_id, Status.SENT)])
    events = [e.payload for e in WebhookEvent.objects.order_by("id")]
    assert [(e["status_id"], e["device_id"], e["sim"]) for e in events] == [
        (Status.TAKEN, taker.device_id, taker.sim),
        (Status.SENT, taker.device_id, taker.sim),
    ]
    assert taker.device_id != pool.pk


def test_rest_lists_the_pools_with_their_sims_eligibility(account, fleet, make_account):
    _, secret = accounts.create_api_token(account, "tests")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    pool = make_pool(account, fleet, is_default=True)
    PoolMember.objects.filter(pool=pool, sim=fleet[1]).update(draining=True)
    send(account, pool, 3)
    listed = api.get("/api/v1/pools")
    assert listed.status_code == 200, listed.content
    (shown,) = listed.json()["results"]
    assert (shown["id"], shown["name"], shown["is_default"], shown["online"]) == (
        pool.pk,
        "Fleet",
        True,
        True,
    )
    assert shown["waiting"] == 3 and shown["held"] == 0
    members = {(m["device_id"], m["sim"]): m for m in shown["members"]}
    assert members[(fleet[1].device_id, 1)]["eligible"] is False
    assert members[(fleet[1].device_id, 1)]["reason"] == "draining"
    assert sum(m["waiting"] for m in members.values()) == 3
    assert api.get(f"/api/v1/pools/{pool.pk}").json()["id"] == pool.pk
    # Another account's pool is simply not there.
    other = make_account()
    theirs = pools.create_pool(other, "Theirs")
    assert api.get(f"/api/v1/pools/{theirs.pk}").status_code == 404
    assert api.get("/api/v1/pools/99999999").status_code == 404
    assert [p["id"] for p in api.get("/api/v1/pools").json()["results"]] == [pool.pk]


def test_an_app_phone_registering_again_keeps_its_sims_caps_pool_places_and_usage(
    account, fleet, make_user
):
    from tests.devices.test_smsgate_app import App, basic

    app, old = app_phone(make_user, account, "again@example.com")
    old_sim = SimSlot.objects.get(device=old, slot=0)
    SimSlot.objects.filter(pk=old_sim.pk).update(max_per_hour=2)
    pool = make_pool(account, [old_sim, fleet[2]])
    send(account, pool, 2)  # one each
    Message.objects.filter(pool=pool, device=fleet[2].device).update(device=old, sim=0)
    assert len(app.fetch()) == 2  # both, its cap for this hour
    # The phone's token is revoked; the app registers again with the same SIM cards.
    Device.objects.filter(pk=old.pk).update(token_hash=None)
    again = App(Client())
    assert again.register(basic("again@example.com", "correct horse battery")).status_code == 201
    new = Device.objects.get(pk=int(again.id))
    assert new.replaces_id == old.pk
    new_sim = SimSlot.objects.get(device=new, slot=0)
    assert new_sim.max_per_hour == 2
    assert PoolMember.objects.filter(pool=pool, sim=new_sim).exists()
    # What the old installation took counts: the SIM has used this hour's two.
    (candidate,) = [c for c in pools.candidates(pool) if c.device.pk == new.pk]
    assert candidate.reason is not None and candidate.reason.startswith("hourly cap reached")
    later = send(account, pool, 2, phone="+4915752983{:03d}")
    assert set(share(later)) == {(fleet[2].device_id, 0)}
    # A queue it had waiting moves to it, still pooled.
    SimSlot.objects.filter(pk=new_sim.pk).update(max_per_hour=None)
    third = App(Client())
    Device.objects.filter(pk=new.pk).update(token_hash=None)
    waiting = send(account, pool, 4, phone="+4915752984{:03d}")
    mine = list(Message.objects.filter(pk__in=waiting, device=new).values_list("pk", flat=True))
    assert mine
    assert third.register(basic("again@example.com", "correct horse battery")).status_code == 201
    newest = int(third.id)
    assert set(Message.objects.filter(pk__in=mine).values_list("device_id", flat=True)) == {newest}
    assert {m.pool_id for m in Message.objects.filter(pk__in=waiting)} == {pool.pk}
