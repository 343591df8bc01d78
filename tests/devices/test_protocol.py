"""The device protocol's rules, at the service layer: pairing, leases, pacing, reports."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from devices import handoff, services
from devices.models import Device, PairingCode, SimSlot
from messaging import lifecycle
from messaging import services as messaging
from messaging.models import Message, MessageStatusChange, Status
from messaging.services import IncomingSms
from tests.devices.conftest import age


def send(account, device, n=1, **fields):
    requests = [
        messaging.OutgoingSms(
            device.pk, fields.pop("phone", "+4915752982212"), f"msg {i}", **fields
        )
        for i in range(n)
    ]
    return messaging.submit(account, requests)


# --- pairing --------------------------------------------------------------------------------


def test_a_pairing_code_works_once(account):
    _, code = services.create_pairing_code(account)
    assert len(code) == 9 and code[4] == "-"
    details = services.DeviceDetails(
        title="Pixel 7",
        imei="358240051111110",
        app_version="1.0.0",
        sims=(services.SimInfo(0, carrier_name="A1"), services.SimInfo(1)),
    )
    device, token = services.pair_with_code(code.lower().replace("-", " "), details)
    assert device.account_id == account.pk and device.title == "Pixel 7"
    assert list(device.sims.values_list("slot", "carrier_name")) == [(0, "A1"), (1, "")]
    assert services.authenticate_device(token) == device
    assert token not in str(list(Device.objects.values()))
    with pytest.raises(services.PairingRefused):
        services.pair_with_code(code, details)


def test_an_expired_or_unknown_code_is_refused(account):
    pairing, code = services.create_pairing_code(account)
    PairingCode.objects.filter(pk=pairing.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(services.PairingRefused):
        services.pair_with_code(code, services.DeviceDetails())
    with pytest.raises(services.PairingRefused):
        services.pair_with_code("ZZZZ-ZZZZ", services.DeviceDetails())


def test_re_pairing_the_same_phone_reuses_its_device_and_replaces_its_token(paired):
    device, old_token = paired()
    account = device.account
    leased, confirmed = send(account, device, 2)
    lease = handoff.poll(device).lease_id
    handoff.confirm(device, [confirmed], lease)
    again, new_token = services.pair_with_login(account, services.DeviceDetails(imei=device.imei))
    assert again.pk == device.pk and Device.objects.filter(account=account).count() == 1
    assert services.authenticate_device(old_token) is None
    assert services.authenticate_device(new_token) == again
    # the new installation cannot know the old one's unconfirmed lease: it is queued again
    assert Message.objects.get(pk=leased).status == Status.NEW
    assert Message.objects.get(pk=confirmed).status == Status.TAKEN


def test_a_phone_without_imei_is_recognised_by_serial_number(account):
    details = services.DeviceDetails(serial_number="EMULATOR30X0X5X0")
    first, _ = services.pair_with_login(account, details)
    second, _ = services.pair_with_login(account, details)
    assert first.pk == second.pk


def test_the_same_imei_in_another_account_is_another_device(make_account):
    details = services.DeviceDetails(imei="358240051111110")
    mine, _ = services.pair_with_login(make_account(), details)
    theirs, _ = services.pair_with_login(make_account(), details)
    assert mine.pk != theirs.pk


# --- poll and lease -------------------------------------------------------------------------


def test_poll_hands_out_due_messages_urgent_first_then_by_send_time(paired):
    device, _ = paired()
    account = device.account
    normal_old, normal_new = send(account, device, 2)
    age(Message.objects.get(pk=normal_old), minutes=5)
    age(Message.objects.get(pk=normal_new), minutes=1)
    (urgent,) = send(account, device, urgent=True)
    (later,) = send(account, device, send_at=timezone.now() + timedelta(hours=1))
    result = handoff.poll(device)
    assert [m.id for m in result.messages] == [urgent, normal_old, normal_new]
    assert later not in [m.id for m in result.messages]
    assert all(m.lease_expires_at > timezone.now() for m in result.messages)
    assert Message.objects.get(pk=urgent).status == Status.TAKEN


def test_poll_respects_batch_size_and_slots_and_devices(paired):
    device, _ = paired(batch_size=3)
    other, _ = paired(account=device.account)
    account = device.account
    send(account, device, 2, sim=1)
    send(account, device, 5, sim=0)
    send(account, other, 2)
    assert {m.sim for m in handoff.poll(device, [1]).messages} == {1}
    result = handoff.poll(device)
    assert len(result.messages) == 3  # two leases on slot 1 + one more
    assert not any(
        m.id in Message.objects.filter(device=other).values_list("id", flat=True)
        for m in result.messages
    )


def test_a_re_poll_returns_the_same_leases_not_new_copies(paired):
    device, _ = paired()
    send(device.account, device, 3)
    first = handoff.poll(device)
    second = handoff.poll(device)
    assert [m.id for m in second.messages] == [m.id for m in first.messages]
    assert MessageStatusChange.objects.filter(to_status=Status.TAKEN).count() == 3


def test_an_unconfirmed_lease_returns_to_the_queue_after_its_timeout(paired):
    device, _ = paired()
    (message_id,) = send(device.account, device)
    handoff.poll(device)
    Message.objects.filter(pk=message_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert handoff.return_expired_leases() == 1
    message = Message.objects.get(pk=message_id)
    assert message.status == Status.NEW and message.lease_expires_at is None
    # and it can be handed out again
    assert [m.id for m in handoff.poll(device).messages] == [message_id]


def test_an_expired_lease_cannot_be_confirmed(paired):
    device, _ = paired()
    (message_id,) = send(device.account, device)
    lease = handoff.poll(device).lease_id
    Message.objects.filter(pk=message_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert handoff.confirm(device, [message_id], lease).refused == [message_id]


def test_a_confirmed_message_is_never_handed_out_again(paired):
    device, _ = paired()
    (message_id,) = send(device.account, device)
    lease = handoff.poll(device).lease_id
    assert handoff.confirm(device, [message_id], lease).confirmed == [message_id]
    assert handoff.confirm(device, [message_id], lease).confirmed == [message_id]  # idempotent
    Message.objects.filter(pk=message_id).update(
        lease_expires_at=timezone.now() - timedelta(hours=1)
    )
    assert handoff.return_expired_leases() == 0
    assert handoff.poll(device).messages == []


def test_a_confirmed_message_without_outcome_ends_unknown_and_is_not_re_sent(paired):
    device, _ = paired()
    (message_id,) = send(device.account, device)
    lease = handoff.poll(device).lease_id
    handoff.confirm(device, [message_id], lease)
    Message.objects.filter(pk=message_id).update(
        outcome_deadline_at=timezone.now() - timedelta(seconds=1)
    )
    assert lifecycle.settle_overdue() == 1
    assert Message.objects.get(pk=message_id).status == Status.UNKNOWN
    assert handoff.poll(device).messages == []
    # the phone's late word still counts
    handoff.report(device, [lifecycle.Outcome(message_id, Status.DELIVERED)])
    assert Message.objects.get(pk=message_id).status == Status.DELIVERED


def test_confirming_another_devices_message_is_refused(paired):
    device, _ = paired()
    other, _ = paired(account=device.account)
    (message_id,) = send(device.account, device)
    lease = handoff.poll(device).lease_id
    assert handoff.confirm(other, [message_id], lease).refused == [message_id]


def test_a_disabled_device_gets_nothing(paired):
    device, _ = paired(enabled=False)
    send(device.account, device)
    assert handoff.poll(device).messages == []


# --- cancel ---------------------------------------------------------------------------------


def test_a_message_cancelled_before_confirmation_never_reaches_the_phone(paired):
    device, _ = paired()
    queued, leased = send(device.account, device, 2)
    Message.objects.filter(pk=queued).update(send_at=timezone.now() + timedelta(hours=1))
    lease = handoff.poll(device).lease_id
    messaging.cancel(device.account, [queued, leased])
    assert handoff.confirm(device, [leased], lease).refused == [leased]
    Message.objects.filter(pk=queued).update(send_at=timezone.now())
    assert handoff.poll(device).messages == []


def test_a_phone_hears_of_a_cancellation_after_it_confirmed(paired):
    device, _ = paired()
    (message_id,) = send(device.account, device)
    lease = handoff.poll(device).lease_id
    handoff.confirm(device, [message_id], lease)
    messaging.cancel(device.account, [message_id])
    assert handoff.poll(device).cancelled == [message_id]


# --- pacing ---------------------------------------------------------------------------------


def _handed(device, rounds: int = 1):
    out = []
    for _ in range(rounds):
        result = handoff.poll(device)
        handoff.confirm(device, [m.id for m in result.messages], result.lease_id)
        out += result.messages
    return out


def test_non_urgent_sends_on_one_sim_are_spaced_by_the_delay(paired):
    device, _ = paired(delay_between_sms=4, delay_between_requests=60)
    send(device.account, device, 6)
    times = sorted(m.not_before_at for m in _handed(device))
    assert len(times) == 6
    assert all((b - a).total_seconds() >= 4 for a, b in itertools.pairwise(times))


def test_urgent_skips_the_delay(paired):
    device, _ = paired(delay_between_sms=30)
    send(device.account, device, 3, urgent=True)
    times = [m.not_before_at for m in _handed(device)]
    assert (max(times) - min(times)).total_seconds() < 1


def test_the_two_sims_are_paced_independently(paired):
    device, _ = paired(delay_between_sms=20)
    send(device.account, device, 1, sim=0)
    send(device.account, device, 1, sim=1)
    times = [m.not_before_at for m in _handed(device)]
    assert (max(times) - min(times)).total_seconds() < 1


def test_at_most_30_segments_per_60_seconds_even_for_urgent(paired):
    device, _ = paired(delay_between_requests=300, batch_size=100)
    account = device.account
    long_text = "x" * 400  # 3 segments
    messaging.submit(
        account, [messaging.OutgoingSms(device.pk, "1234", long_text, urgent=True)] * 25
    )
    leases = _handed(device)
    events = sorted((m.not_before_at.timestamp(), m.segments) for m in leases)
    for start, _ in events:
        in_window = sum(n for t, n in events if start <= t < start + 60)
        assert in_window <= 30
    # 300 s of horizon at 30 segments/min: 25 messages of 3 segments all fit, spread out
    assert len(leases) == 25 and events[-1][0] - events[0][0] >= 60 * 2


def test_a_device_that_declares_a_higher_limit_gets_it(paired):
    device, _ = paired(segments_per_minute=100, batch_size=50)
    messaging.submit(
        device.account, [messaging.OutgoingSms(device.pk, "1234", "hi", urgent=True)] * 50
    )
    times = [m.not_before_at for m in _handed(device)]
    assert len(times) == 50 and (max(times) - min(times)).total_seconds() < 1


def test_messages_paced_beyond_the_next_poll_stay_queued(paired):
    device, _ = paired(delay_between_sms=20, delay_between_requests=10)
    ids = send(device.account, device, 5)
    handed = [m.id for m in handoff.poll(device).messages]
    # due within 10 s + 30 s of margin: now, +20 s, +40 s
    assert handed == ids[:3]
    assert Message.objects.get(pk=ids[4]).status == Status.NEW


# --- reports --------------------------------------------------------------------------------


def _confirmed(device, n=1):
    ids = send(device.account, device, n)
    lease = handoff.poll(device).lease_id
    handoff.confirm(device, ids, lease)
    return ids


def test_reports_are_idempotent_and_monotonic(paired):
    device, _ = paired()
    (message_id,) = _confirmed(device)
    first = handoff.report(device, [lifecycle.Outcome(message_id, Status.SENT)])
    assert (first[0].result, first[0].status) == ("applied", Status.SENT)
    handoff.report(device, [lifecycle.Outcome(message_id, Status.DELIVERED)])
    late = handoff.report(
        device,
        [
            lifecycle.Outcome(message_id, Status.SENT),
            lifecycle.Outcome(message_id, Status.DELIVERED),
        ],
    )
    assert [r.result for r in late] == ["refused", "unchanged"]
    message = Message.objects.get(pk=message_id)
    assert message.status == Status.DELIVERED and message.delivered_at and message.sent_at
    assert MessageStatusChange.objects.filter(message_id=message_id).count() == 3  # 2, 6, 7


def test_a_failure_report_keeps_the_phones_error_and_part_count(paired):
    device, _ = paired()
    (message_id,) = _confirmed(device)
    handoff.report(
        device, [lifecycle.Outcome(message_id, Status.NO_SERVICE, "RESULT_ERROR_NO_SERVICE", 1)]
    )
    message = Message.objects.get(pk=message_id)
    assert (message.status, message.error_detail, message.parts_sent) == (
        Status.NO_SERVICE,
        "RESULT_ERROR_NO_SERVICE",
        1,
    )


def test_a_report_about_another_devices_message_is_refused_alone(paired):
    device, _ = paired()
    other, _ = paired(account=device.account)
    (mine,) = _confirmed(device)
    (theirs,) = _confirmed(other)
    results = handoff.report(
        device,
        [
            lifecycle.Outcome(theirs, Status.SENT),
            lifecycle.Outcome(mine, Status.SENT),
            lifecycle.Outcome(999999, Status.SENT),
            lifecycle.Outcome(mine, Status.NEW),
        ],
    )
    assert [(r.result, r.status) for r in results] == [
        ("refused", None),
        ("applied", 6),
        ("refused", None),
        ("refused", 6),
    ]
    assert Message.objects.get(pk=theirs).status == Status.TAKEN


# --- incoming -------------------------------------------------------------------------------


def test_incoming_sms_are_stored_once(paired):
    device, _ = paired()
    items = [
        IncomingSms("inbox-41", "+49 157 52982212", "STOP", 1),
        IncomingSms("inbox-42", "VODAFONE", "Your bill"),
    ]
    first = handoff.receive(device, items)
    again = handoff.receive(device, items)
    assert first == again and len(first) == 2
    stored = Message.objects.get(pk=first["inbox-41"])
    assert (stored.status, stored.phone, stored.sim, stored.account_id) == (
        Status.INCOMING,
        "+4915752982212",
        1,
        device.account_id,
    )
    assert Message.objects.get(pk=first["inbox-42"]).phone == "VODAFONE"


# --- cost and concurrency -------------------------------------------------------------------


def test_an_empty_poll_only_reads(paired):
    device, _ = paired()
    services.heartbeat(device)  # last seen is fresh
    with CaptureQueriesContext(connection) as queries:
        services.heartbeat(device)
        result = handoff.poll(device)
    assert result.messages == []
    writes = [q["sql"] for q in queries if q["sql"].split()[0].upper() not in ("SELECT",)]
    assert writes == []


def test_a_cycle_costs_the_same_few_statements_whatever_the_batch(paired):
    """Poll, confirm and report of 50 SMS: a fixed number of statements (what a phone's
    cycle costs the database), none per message; the answers stay exact."""
    device, _ = paired(batch_size=50, segments_per_minute=1000, delay_between_sms=None)
    SimSlot.objects.filter(device=device).update(next_send_at=None)
    sms = [messaging.OutgoingSms(device.pk, f"+4915752982{i:03d}", "hi") for i in range(50)]
    messaging.submit(device.account, sms)
    with CaptureQueriesContext(connection) as polled:
        result = handoff.poll(device)
    ids = [m.id for m in result.messages]
    assert len(ids) == 50
    assert handoff.confirm(device, ids, result.lease_id).confirmed == sorted(ids)
    outcomes = [lifecycle.Outcome(i, Status.SENT, parts=1) for i in ids]
    outcomes += [lifecycle.Outcome(i, Status.DELIVERED) for i in ids]
    outcomes.append(lifecycle.Outcome(ids[0], Status.SENT))  # after delivered: refused
    with CaptureQueriesContext(connection) as reported:
        answers = handoff.report(device, outcomes)
    assert [(a.result, a.status) for a in answers] == (
        [("applied", Status.DELIVERED)] * 100 + [("refused", Status.DELIVERED)]
    )
    assert set(Message.objects.filter(id__in=ids).values_list("status", flat=True)) == {
        Status.DELIVERED
    }
    # poll: slots, open leases, notices, due?, begin, slots locked, claims, pacing, lease,
    # history, commit; report: begin, and per move its rows, update and history, commit,
    # the refused item's status.
    assert len(polled) <= 11, [q["sql"][:80] for q in polled]
    assert len(reported) <= 10, [q["sql"][:80] for q in reported]


def test_heartbeat_writes_last_seen_at_most_every_few_seconds(paired):
    device, _ = paired()
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now() - timedelta(minutes=5))
    device.refresh_from_db()
    services.heartbeat(device, services.Heartbeat(battery_percent=80))
    refreshed = Device.objects.get(pk=device.pk)
    assert refreshed.battery_percent == 80 and refreshed.last_seen_at is not None
    assert timezone.now() - refreshed.last_seen_at < timedelta(seconds=5)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_polls_never_lease_a_message_twice(make_account, make_device):
    account = make_account()
    device = make_device(account, slots=(0,), batch_size=5, segments_per_minute=1000)
    SimSlot.objects.filter(device=device).update(next_send_at=None)
    messaging.submit(account, [messaging.OutgoingSms(device.pk, "1234", "x", urgent=True)] * 60)
    errors = []

    def worker():
        try:
            for _ in range(10):
                result = handoff.poll(Device.objects.get(pk=device.pk))
                handoff.confirm(device, [m.id for m in result.messages], result.lease_id)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    takes = list(
        MessageStatusChange.objects.filter(to_status=Status.TAKEN).values_list(
            "message_id", flat=True
        )
    )
    assert len(takes) == len(set(takes)) == 60


def _drain(device_id: int, confirmed: list[int], errors: list[Exception], rounds: int = 400):
    """One poller: poll, confirm what the poll leased, until the device has no open work."""
    try:
        for _ in range(rounds):
            device = Device.objects.get(pk=device_id)
            result = handoff.poll(device)
            if result.messages:
                answer = handoff.confirm(device, [m.id for m in result.messages], result.lease_id)
                confirmed.extend(answer.confirmed)
            elif not Message.objects.filter(
                device_id=device_id, status__in=[Status.NEW, Status.TAKEN], confirmed_at=None
            ).exists():
                return
    except Exception as exc:  # pragma: no cover - reported by the test
        errors.append(exc)
    finally:
        connection.close()


def _run_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_pollers_sharing_a_device_token_never_both_confirm_a_message(make_account, make_device):
    # An app restored from a backup, two agents on one state directory, a retried poll
    # racing the original: several pollers per device token, several tokens, on PostgreSQL.
    account = make_account()
    devices = [
        make_device(account, slots=(0,), batch_size=50, segments_per_minute=1000) for _ in range(3)
    ]
    for device in devices:
        messaging.submit(
            account, [messaging.OutgoingSms(device.pk, "1234", f"m{i}") for i in range(1000)]
        )
    confirmed_by: list[list[int]] = []
    errors: list[Exception] = []
    threads = []
    for device in devices:
        for _ in range(3):
            confirmed_by.append([])
            threads.append(
                threading.Thread(target=_drain, args=(device.pk, confirmed_by[-1], errors))
            )
    _run_all(threads)
    assert errors == []
    everything = [i for ids in confirmed_by for i in ids]
    assert len(everything) == len(set(everything)), "a message was confirmed to two pollers"
    all_ids = set(Message.objects.values_list("id", flat=True))
    assert set(everything) == all_ids, "a message was never confirmed (lost)"
    assert not Message.objects.filter(confirmed_at=None).exists()
    takes = list(
        MessageStatusChange.objects.filter(to_status=Status.TAKEN).values_list(
            "message_id", flat=True
        )
    )
    assert len(takes) == len(set(takes)) == 3000


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_moving_messages_between_devices_while_both_poll_never_confirms_twice(
    make_account, make_device
):
    account = make_account()
    one, two = (
        make_device(account, slots=(0,), batch_size=20, segments_per_minute=1000) for _ in range(2)
    )
    ids = messaging.submit(
        account, [messaging.OutgoingSms(one.pk, "1234", f"m{i}") for i in range(600)]
    )
    confirmed_by: dict[int, list[int]] = {one.pk: [], two.pk: []}
    errors: list[Exception] = []
    stop = threading.Event()

    def mover():
        try:
            targets = itertools.cycle([two.pk, one.pk])
            while not stop.is_set():
                messaging.reassign(account, ids, next(targets), 0)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)
        finally:
            connection.close()

    pollers = [
        threading.Thread(target=_drain, args=(device.pk, confirmed_by[device.pk], errors))
        for device in (one, two, one, two)
    ]
    moving = threading.Thread(target=mover)
    moving.start()
    _run_all(pollers[:2])  # the first pass ends when a device has nothing open, mid-moves
    stop.set()
    moving.join()
    _run_all(pollers[2:])  # then drain what the moves left on either device
    assert errors == []
    everything = confirmed_by[one.pk] + confirmed_by[two.pk]
    assert len(everything) == len(set(everything)) == len(ids)
    # each message was confirmed by the device that holds it now
    holders = dict(Message.objects.values_list("id", "device_id"))
    for device_id, confirmed in confirmed_by.items():
        assert all(holders[i] == device_id for i in confirmed)
